package notifier_test

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/internal/promtest"
	"github.com/countersign/countersign/mail"
	"github.com/countersign/countersign/mail/smtptest"
	"github.com/countersign/countersign/notifier"
	"github.com/countersign/countersign/templates"
)

type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// connectionWarnings counts the sender's warnings about a relay without
// SMTPUTF8 (one per connection).
func (l *logBuffer) connectionWarnings() int {
	return strings.Count(l.String(), "the SMTP server does not announce SMTPUTF8")
}

// startLogging runs a notifier whose SMTP sender (on scfg) and notifier log
// to logger.
func (h *harness) startLogging(t *testing.T, scfg mail.SMTPConfig, logger *slog.Logger) running {
	t.Helper()
	sender, err := mail.NewSMTPSender(scfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	cfg := notifier.Config{WorkerConfig: eventstest.TestWorker(t, kafka.WorkerConfig{GroupID: h.newGroup(t)})}
	reg := prometheus.NewRegistry()
	n, err := notifier.New(cfg, notifier.Deps{
		Kafka: h.kafka, Keyring: h.keyring, Templates: templates.Embedded(), Sender: sender, Logger: logger, Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := eventstest.Run(t, n, func() { _ = sender.Close() })
	return running{stop: stop, registry: reg, group: cfg.GroupID}
}

// Issue 20 through a relay without SMTPUTF8: an IDN domain gets its code
// (A-label envelope), a non-ASCII local part is dead-lettered at once with
// dlq-error naming SMTPUTF8, counted, and a warning naming
// ALLOW_UTF8_LOCAL_PART was logged when the notifier started.
func TestInternationalAddressesWithoutSMTPUTF8(t *testing.T) {
	h := newHarness(t)
	var logs logBuffer
	scfg := h.smtp.SenderConfig()
	r := h.startLogging(t, scfg, slog.New(slog.NewTextHandler(&logs, nil)))

	// At start, before any mail.
	eventstest.Eventually(t, 30*time.Second, func() bool { return logs.connectionWarnings() == 1 })
	if !strings.Contains(logs.String(), "ALLOW_UTF8_LOCAL_PART") {
		t.Errorf("the warning does not name ALLOW_UTF8_LOCAL_PART:\n%s", logs.String())
	}

	local := strings.Split(eventstest.UniqueEmail(t), "@")[0]
	jose := "josé-" + local + "@example.com"
	li := local + "@例子.测试"
	liASCII := local + "@xn--fsqu00a.xn--0zwm56d"

	bad := h.publishCreated(t, jose, "515151")
	h.publishCreated(t, li, "616161")
	got := h.smtp.WaitFor(t, liASCII, 1, 30*time.Second)[0]
	if text, _ := got.TextPart(); !strings.Contains(text, "616161") {
		t.Errorf("the IDN address's mail lacks its code:\n%s", text)
	}

	dl := eventstest.ReadTopic(t, h.brokers, kafka.DeadLetterTopic(r.group), 1, 30*time.Second, eventstest.ByKey(jose))[0]
	if id := eventstest.Decode(t, dl).ID; id != bad.ID {
		t.Errorf("dead-lettered %s, want %s", id, bad.ID)
	}
	reason, _ := eventstest.Header(dl, kafka.HeaderDLQError)
	if !strings.Contains(reason, "SMTPUTF8") || strings.Contains(reason, "jos") || strings.Contains(reason, "515151") {
		t.Errorf("dlq-error %q: want SMTPUTF8 named and no address or code", reason)
	}
	if a, _ := eventstest.Header(dl, kafka.HeaderDLQAttempts); a != "1" {
		t.Errorf("tried %s times, want 1", a)
	}
	eventstest.Eventually(t, 30*time.Second, func() bool {
		return promtest.Counter(t, r.registry, "countersign_notifier_undeliverable_total", mail.ReasonSMTPUTF8) == 1
	})
	// Only this test's addresses: on a shared real cluster the new group
	// also reads other tests' events, whose mails reach the relay too.
	if n := len(h.smtp.MessagesTo(jose)) + len(h.smtp.MessagesTo(liASCII)) + len(h.smtp.MessagesTo(li)); n != 1 {
		t.Errorf("%d mails to this test's addresses reached the relay, want 1", n)
	}
	if n := logs.connectionWarnings(); n != 1 {
		t.Errorf("%d connection warnings on one connection, want 1", n)
	}
	if strings.Contains(logs.String(), "jos") || strings.Contains(logs.String(), local) {
		t.Errorf("the log names an address:\n%s", logs.String())
	}
}

// Through a relay with SMTPUTF8 both addresses get their codes, in Unicode,
// and nothing is warned about or counted.
func TestInternationalAddressesWithSMTPUTF8(t *testing.T) {
	h := newHarness(t, smtptest.WithSMTPUTF8())
	var logs logBuffer
	scfg := h.smtp.SenderConfig()
	r := h.startLogging(t, scfg, slog.New(slog.NewTextHandler(&logs, nil)))

	local := strings.Split(eventstest.UniqueEmail(t), "@")[0]
	jose := "josé-" + local + "@example.com"
	li := local + "@例子.测试"
	h.publishCreated(t, jose, "717171")
	h.publishCreated(t, li, "818181")
	for addr, code := range map[string]string{jose: "717171", li: "818181"} {
		got := h.smtp.WaitFor(t, addr, 1, 30*time.Second)[0]
		if !got.SMTPUTF8 {
			t.Errorf("mail to %s sent without SMTPUTF8", addr)
		}
		if text, _ := got.TextPart(); !strings.Contains(text, code) {
			t.Errorf("mail to %s lacks its code", addr)
		}
	}
	if v := promtest.Counter(t, r.registry, "countersign_notifier_undeliverable_total", mail.ReasonSMTPUTF8); v != 0 {
		t.Errorf("undeliverable %v, want 0", v)
	}
	if n := logs.connectionWarnings(); n != 0 {
		t.Errorf("%d warnings for a relay with SMTPUTF8", n)
	}
}

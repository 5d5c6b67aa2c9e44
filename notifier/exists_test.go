package notifier_test

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/internal/mailworkertest"
	"github.com/countersign/countersign/internal/promtest"
	"github.com/countersign/countersign/mail"
	"github.com/countersign/countersign/notifier"
)

// publishExists publishes a user_account_exists event as the user API does.
func (h *harness) publishExists(t *testing.T, email, locale string) events.Event {
	t.Helper()
	e, err := events.NewUserAccountExists(events.UserAccountExists{Email: email, AttemptedAt: time.Now(), Locale: locale})
	if err != nil {
		t.Fatal(err)
	}
	eventstest.Publish(t, h.producer, e)
	return e
}

// The notice to an account: to the bare address, greeting nobody by name,
// in the event's language, saying there is nothing to do; counted under
// its own kind.
func TestAccountExistsMail(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, notifier.Config{})
	en, zh := eventstest.UniqueEmail(t), eventstest.UniqueEmail(t)
	e := h.publishExists(t, en, "")
	h.publishExists(t, zh, "zh-CN")

	m := h.smtp.WaitFor(t, en, 1, 30*time.Second)[0]
	if m.Subject() != "Someone tried to register with your address" {
		t.Errorf("subject %q", m.Subject())
	}
	if !strings.Contains(m.MessageID(), e.ID) {
		t.Errorf("Message-ID %q does not derive from the event id %s", m.MessageID(), e.ID)
	}
	text, err := m.TextPart()
	if err != nil {
		t.Fatal(err)
	}
	html, err := m.HTMLPart()
	if err != nil {
		t.Fatal(err)
	}
	for part, body := range map[string]string{"text": text, "html": html} {
		for _, want := range []string{"Hello,", "maybe you", "You already have an account", "need do nothing", "ignore this email", en} {
			if !strings.Contains(body, want) {
				t.Errorf("%s part lacks %q:\n%s", part, want, body)
			}
		}
		if strings.Contains(body, "Hi ") || strings.Contains(body, "Ada") || strings.Contains(body, "/confirm/") {
			t.Errorf("%s part greets by name or links to a confirmation:\n%s", part, body)
		}
	}
	hdr, err := m.Header()
	if err != nil {
		t.Fatal(err)
	}
	if to := hdr.Get("To"); strings.Contains(to, "\"") || strings.Contains(to, " <") {
		t.Errorf("To %q: want the bare address, no display name", to)
	}
	if m := h.smtp.WaitFor(t, zh, 1, 30*time.Second)[0]; m.Subject() != "有人尝试使用您的地址注册" {
		t.Errorf("zh-CN subject %q", m.Subject())
	}
	eventstest.Eventually(t, 30*time.Second, func() bool {
		return promtest.Counter(t, r.registry, "countersign_notifier_mails_sent_total", notifier.KindAccountExists) >= 2
	})
}

// The failure handling every mail-sending worker shares, through the
// notice: 451s retried then one delivery; a 550 dead-lettered at once.
func TestAccountExistsMailWorkerContract(t *testing.T) {
	h := newHarness(t)
	mailworkertest.Run(t, mailworkertest.Worker{
		Brokers: h.brokers, SMTP: h.smtp,
		Start: func(t *testing.T) string { return h.start(t, notifier.Config{}).group },
		Publish: func(t *testing.T, to string) (events.Event, string) {
			return h.publishExists(t, to, ""), ""
		},
	})
}

// Through a relay without SMTPUTF8, as the verification mail: an IDN
// domain gets its notice (A-label envelope), a non-ASCII local part is
// dead-lettered at once, named SMTPUTF8, without the address.
func TestAccountExistsInternationalWithoutSMTPUTF8(t *testing.T) {
	h := newHarness(t)
	var logs logBuffer
	r := h.startLogging(t, h.smtp.SenderConfig(), slog.New(slog.NewTextHandler(&logs, nil)))
	local := strings.Split(eventstest.UniqueEmail(t), "@")[0]
	jose := "josé-" + local + "@example.com"
	li := local + "@例子.测试"
	h.publishExists(t, jose, "")
	h.publishExists(t, li, "zh-CN")
	h.smtp.WaitFor(t, local+"@xn--fsqu00a.xn--0zwm56d", 1, 30*time.Second)
	dl := eventstest.ReadTopic(t, h.brokers, kafka.DeadLetterTopic(r.group), 1, 30*time.Second, eventstest.ByKey(jose))[0]
	reason, _ := eventstest.Header(dl, kafka.HeaderDLQError)
	if !strings.Contains(reason, "SMTPUTF8") || strings.Contains(reason, "jos") {
		t.Errorf("dlq-error %q: want SMTPUTF8 named and no address", reason)
	}
	eventstest.Eventually(t, 30*time.Second, func() bool {
		return promtest.Counter(t, r.registry, "countersign_notifier_undeliverable_total", mail.ReasonSMTPUTF8) == 1
	})
	if strings.Contains(logs.String(), "jos") || strings.Contains(logs.String(), local) {
		t.Errorf("the log names an address:\n%s", logs.String())
	}
}

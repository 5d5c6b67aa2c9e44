package notifier_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/mail"
	"github.com/countersign/countersign/mail/smtptest"
	"github.com/countersign/countersign/notifier"
	"github.com/countersign/countersign/templates"
)

// harness is one broker, one SMTP server, one key and a producer.
type harness struct {
	brokers  string
	kafka    kafka.Config
	keyring  *events.Keyring
	keyEntry string
	smtp     *smtptest.Server
	producer *kafka.Producer
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{brokers: eventstest.Brokers(t), smtp: smtptest.Start(t)}
	h.kafka = eventstest.Config(t, h.brokers)
	entry, err := events.GenerateKeyEntry()
	if err != nil {
		t.Fatal(err)
	}
	h.keyEntry = entry
	if h.keyring, err = events.ParseKeyring(entry); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, h.kafka, events.Topics...); err != nil {
		t.Fatal(err)
	}
	if h.producer, err = kafka.NewProducer(h.kafka); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = h.producer.Close(ctx)
	})
	return h
}

func (h *harness) smtpConfig() mail.SMTPConfig {
	return mail.SMTPConfig{Host: h.smtp.Host(), Port: h.smtp.Port(), TLS: mail.TLSNone, From: "Countersign <no-reply@countersign.test>"}
}

type running struct {
	stop     func() error
	registry *prometheus.Registry
	group    string
}

func (h *harness) start(t *testing.T, cfg notifier.Config) running {
	t.Helper()
	if cfg.GroupID == "" {
		cfg.GroupID = eventstest.UniqueGroup(t)
	}
	if cfg.InitialBackoff == 0 {
		cfg.InitialBackoff, cfg.MaxBackoff = 20*time.Millisecond, 200*time.Millisecond
	}
	sender, err := mail.NewSMTPSender(h.smtpConfig(), eventstest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	tpl, err := templates.Load("")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	n, err := notifier.New(cfg, notifier.Deps{
		Kafka: h.kafka, Keyring: h.keyring, Templates: tpl, Sender: sender, Logger: eventstest.Logger(t), Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			runErr = <-done
			_ = sender.Close()
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return running{stop: stop, registry: reg, group: cfg.GroupID}
}

// publishCreated seals a code as the user API does and publishes the event.
func (h *harness) publishCreated(t *testing.T, email, code string) events.Event {
	t.Helper()
	userID := "u-" + eventstest.Suffix()
	cd := events.UserAccountCreated{
		UserID: userID, Email: email, FirstName: "Ada", LastName: "Lovelace",
		ExpiresAt: time.Now().Add(15 * time.Minute),
	}
	sealed, err := h.keyring.Seal(code, cd)
	if err != nil {
		t.Fatal(err)
	}
	cd.EncryptedCode = sealed
	e, err := events.NewUserAccountCreated(cd)
	if err != nil {
		t.Fatal(err)
	}
	h.publish(t, e)
	return e
}

func (h *harness) publish(t *testing.T, e events.Event) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.producer.Publish(ctx, e); err != nil {
		t.Fatal(err)
	}
}

// mailsTo waits until n mails to addr arrived and returns them.
func (h *harness) mailsTo(t *testing.T, addr string, n int, timeout time.Duration) []smtptest.Received {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := h.mailsSoFar(addr)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d mails to %s within %v, want %d", len(got), addr, timeout, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *harness) mailsSoFar(addr string) []smtptest.Received {
	var out []smtptest.Received
	for _, m := range h.smtp.Messages() {
		for _, to := range m.To {
			if to == addr {
				out = append(out, m)
			}
		}
	}
	return out
}

func TestVerificationMailCarriesTheSealedCode(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, notifier.Config{})
	email := eventstest.UniqueEmail(t)
	e := h.publishCreated(t, email, "493017")

	m := h.mailsTo(t, email, 1, 30*time.Second)[0]
	text, err := m.TextPart()
	if err != nil {
		t.Fatal(err)
	}
	html, err := m.HTMLPart()
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"text": text, "html": html} {
		if !strings.Contains(body, "493017") {
			t.Errorf("%s part does not carry the code", name)
		}
		if !strings.Contains(body, "Ada") {
			t.Errorf("%s part does not greet the user by name", name)
		}
	}
	if !strings.Contains(strings.ToLower(m.Subject()), "verify") {
		t.Errorf("subject %q", m.Subject())
	}
	if !strings.Contains(m.MessageID(), e.ID) {
		t.Errorf("Message-ID %q does not derive from the event id %s", m.MessageID(), e.ID)
	}
	if got := counterValue(t, r.registry, "countersign_notifier_mails_sent_total", "verification"); got < 1 {
		t.Errorf("sent metric %v", got)
	}
}

func TestVerifiedMail(t *testing.T) {
	h := newHarness(t)
	h.start(t, notifier.Config{})
	email := eventstest.UniqueEmail(t)
	e, err := events.NewUserAccountVerified(events.UserAccountVerified{UserID: "u1", Email: email, FirstName: "Grace", LastName: "Hopper", VerifiedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	h.publish(t, e)
	m := h.mailsTo(t, email, 1, 30*time.Second)[0]
	if !strings.Contains(strings.ToLower(m.Subject()), "verified") {
		t.Errorf("subject %q", m.Subject())
	}
	if text, _ := m.TextPart(); !strings.Contains(text, "Grace") {
		t.Errorf("text part %q", text)
	}
}

func TestTemporaryFailureIsRetriedAndDeliveredOnce(t *testing.T) {
	h := newHarness(t)
	h.start(t, notifier.Config{})
	email := eventstest.UniqueEmail(t)
	h.smtp.FailNextFor(email, 2, 451, "4.3.0 try again later")
	h.publishCreated(t, email, "111111")
	h.mailsTo(t, email, 1, 30*time.Second)
	time.Sleep(500 * time.Millisecond) // room for a wrong second copy
	if got := len(h.mailsSoFar(email)); got != 1 {
		t.Errorf("%d mails, want exactly 1", got)
	}
	if n := h.smtp.RejectedFor(email); n != 2 {
		t.Errorf("server rejected the mail %d times, want 2 (the test did not exercise the retry)", n)
	}
}

func TestPermanentFailureIsDeadLetteredAndConsumerGoesOn(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, notifier.Config{})
	bad := eventstest.UniqueEmail(t)
	h.smtp.FailNextFor(bad, 1, 550, "5.1.1 mailbox unavailable")
	first := h.publishCreated(t, bad, "222222")
	waitFor(t, 30*time.Second, func() bool { return h.smtp.RejectedFor(bad) == 1 })
	good := eventstest.UniqueEmail(t)
	h.publishCreated(t, good, "333333")
	h.mailsTo(t, good, 1, 30*time.Second)

	dl := eventstest.ReadTopic(t, h.brokers, kafka.DeadLetterTopic(r.group), 1, 30*time.Second, eventstest.ByKey(bad))[0]
	if got := eventstest.Decode(t, dl).ID; got != first.ID {
		t.Errorf("dead-lettered %s, want %s", got, first.ID)
	}
	reason, _ := eventstest.Header(dl, kafka.HeaderDLQError)
	if !strings.Contains(reason, "550") {
		t.Errorf("dlq-error %q does not say why", reason)
	}
	if strings.Contains(reason, bad) || strings.Contains(reason, "222222") {
		t.Errorf("dlq-error %q leaks the address or the code", reason)
	}
	if a, _ := eventstest.Header(dl, kafka.HeaderDLQAttempts); a != "1" {
		t.Errorf("a 5xx was tried %s times, want 1", a)
	}
	if len(h.mailsSoFar(bad)) != 0 {
		t.Error("rejected mail recorded as received")
	}
}

func TestUnopenableCodeIsDeadLettered(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, notifier.Config{})
	other, err := events.NewRandomKeyring()
	if err != nil {
		t.Fatal(err)
	}
	email := eventstest.UniqueEmail(t)
	cd := events.UserAccountCreated{UserID: "u1", Email: email, FirstName: "A", LastName: "B",
		ExpiresAt: time.Now().Add(time.Hour)}
	sealed, _ := other.Seal("444444", cd) // a key the notifier does not hold
	cd.EncryptedCode = sealed
	e, _ := events.NewUserAccountCreated(cd)
	h.publish(t, e)
	dl := eventstest.ReadTopic(t, h.brokers, kafka.DeadLetterTopic(r.group), 1, 30*time.Second, eventstest.ByKey(email))[0]
	if reason, _ := eventstest.Header(dl, kafka.HeaderDLQError); !strings.Contains(reason, "cannot be opened") {
		t.Errorf("dlq-error %q", reason)
	}
}

func TestSMTPOutageLosesNoMail(t *testing.T) {
	h := newHarness(t)
	h.start(t, notifier.Config{WorkerConfig: kafka.WorkerConfig{InitialBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, MaxAttempts: 100}})
	h.smtp.SetFailing(421)
	var addrs []string
	for range 6 {
		a := eventstest.UniqueEmail(t)
		addrs = append(addrs, a)
		h.publishCreated(t, a, "555555")
	}
	waitFor(t, 30*time.Second, func() bool { return h.smtp.Rejected() >= 4 })
	time.Sleep(2 * time.Second) // the outage goes on while the notifier retries
	h.smtp.ClearFailing()
	for _, a := range addrs {
		h.mailsTo(t, a, 1, 60*time.Second)
	}
	for _, a := range addrs {
		if n := len(h.mailsSoFar(a)); n != 1 {
			t.Errorf("%d mails to one address, want 1", n)
		}
	}
}

// An outage that outlasts the retry budget (two attempts here; about three
// minutes with the defaults): the mails are held back, not dead-lettered,
// and all go out once the server is back.
func TestSMTPOutageBeyondRetryBudgetDeadLettersNothing(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, notifier.Config{WorkerConfig: kafka.WorkerConfig{InitialBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, MaxAttempts: 2}})
	h.smtp.SetFailing(421)
	var addrs []string
	for range 4 {
		a := eventstest.UniqueEmail(t)
		addrs = append(addrs, a)
		h.publishCreated(t, a, "565656")
	}
	// Many times the two attempts a record has before it would have been
	// dead-lettered.
	waitFor(t, 30*time.Second, func() bool { return h.smtp.Rejected() >= 10 })
	h.smtp.ClearFailing()
	for _, a := range addrs {
		h.mailsTo(t, a, 1, 60*time.Second)
	}
	for _, a := range addrs {
		if n := len(h.mailsSoFar(a)); n != 1 {
			t.Errorf("%d mails to one address, want 1", n)
		}
	}
	for _, a := range addrs {
		if dl := eventstest.CountTopic(t, h.brokers, kafka.DeadLetterTopic(r.group), time.Second, eventstest.ByKey(a)); len(dl) != 0 {
			t.Errorf("%d records dead-lettered during an SMTP outage", len(dl))
		}
	}
}

func TestSameEventTwiceSendsOneMail(t *testing.T) {
	h := newHarness(t)
	h.start(t, notifier.Config{})
	email := eventstest.UniqueEmail(t)
	e := h.publishCreated(t, email, "666666")
	h.publish(t, e) // the same event id again, as after a rebalance
	marker := eventstest.UniqueEmail(t)
	// Same partition as nothing in particular: wait for a later event instead.
	h.publishCreated(t, marker, "777777")
	h.mailsTo(t, marker, 1, 30*time.Second)
	h.mailsTo(t, email, 1, 30*time.Second)
	time.Sleep(300 * time.Millisecond)
	if n := len(h.mailsSoFar(email)); n != 1 {
		t.Errorf("%d mails for one event delivered twice, want 1", n)
	}
}

func TestExpiredCodeSendsNoMail(t *testing.T) {
	h := newHarness(t)
	h.start(t, notifier.Config{})
	email := eventstest.UniqueEmail(t)
	cd := events.UserAccountCreated{UserID: "u1", Email: email, FirstName: "A", LastName: "B",
		ExpiresAt: time.Now().Add(-time.Minute)}
	sealed, _ := h.keyring.Seal("888888", cd)
	cd.EncryptedCode = sealed
	e, _ := events.NewUserAccountCreated(cd)
	h.publish(t, e)
	after := h.publishCreated(t, email, "999999") // same key, so handled after the expired one
	m := h.mailsTo(t, email, 1, 30*time.Second)
	time.Sleep(300 * time.Millisecond)
	m = h.mailsSoFar(email)
	if len(m) != 1 || !strings.Contains(m[0].MessageID(), after.ID) {
		t.Errorf("got %d mails, want only the one for the unexpired code", len(m))
	}
}

func waitFor(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// counterValue reads one counter from reg; labels are matched in order.
func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i, l := range m.GetLabel() {
				if i < len(labels) && l.GetValue() != labels[i] {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s%v not found", name, labels)
	return 0
}

// The crash test runs a notifier in a child process and kills it with
// SIGKILL, as when its machine dies: no commit at shutdown.
const childEnv = "NOTIFIER_TEST_CRASH_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(crashChild())
	}
	os.Exit(m.Run())
}

func crashChild() int {
	port, _ := strconv.Atoi(os.Getenv("CHILD_SMTP_PORT"))
	keyring, err := events.ParseKeyring(os.Getenv("CHILD_KEYS"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	sender, err := mail.NewSMTPSender(mail.SMTPConfig{Host: "127.0.0.1", Port: port, TLS: mail.TLSNone}, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	tpl, _ := templates.Load("")
	n, err := notifier.New(notifier.Config{WorkerConfig: kafka.WorkerConfig{GroupID: os.Getenv("CHILD_GROUP"), CommitEvery: 5}}, notifier.Deps{
		Kafka: kafka.Config{Brokers: os.Getenv("CHILD_BROKERS")}, Keyring: keyring, Templates: tpl, Sender: sender,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Println("started")
	if err := n.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func TestCrashAndRestartSendsEveryMailWithBoundedDuplicates(t *testing.T) {
	h := newHarness(t)
	group := eventstest.UniqueGroup(t)
	const total, commitEvery = 100, 5
	var addrs []string
	for range total {
		a := eventstest.UniqueEmail(t)
		addrs = append(addrs, a)
		h.publishCreated(t, a, "123123")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", "CHILD_BROKERS="+h.brokers, "CHILD_GROUP="+group,
		"CHILD_SMTP_PORT="+strconv.Itoa(h.smtp.Port()), "CHILD_KEYS="+h.keyEntry)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Registered after the SMTP server's cleanup, so it runs first: the
	// server waits for the child's connection to close.
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	bufio.NewScanner(out).Scan()
	// Kill it part-way: after some mails went out, before all did. A mail
	// takes well under a millisecond, so the server stops accepting first
	// (the child then retries with backoff) for the kill to land part-way.
	waitFor(t, 60*time.Second, func() bool { return len(h.smtp.Messages()) >= 12 })
	h.smtp.SetFailing(451)
	_ = cmd.Process.Kill()
	_, _ = cmd.Process.Wait()
	h.smtp.ClearFailing()
	before := len(h.smtp.Messages())
	if before >= total {
		t.Fatalf("child sent all %d mails before it was killed; the test proves nothing", before)
	}

	h.start(t, notifier.Config{WorkerConfig: kafka.WorkerConfig{GroupID: group, CommitEvery: commitEvery}})
	for _, a := range addrs {
		h.mailsTo(t, a, 1, 90*time.Second)
	}
	time.Sleep(500 * time.Millisecond)
	dups := 0
	for _, a := range addrs {
		dups += len(h.mailsSoFar(a)) - 1
	}
	t.Logf("child sent %d mails before SIGKILL; %d re-sent after restart", before, dups)
	// What the child sent since its last finished commit comes again: fewer
	// than twice the commit interval, one commit being in flight while the
	// next mails go out (and one mail may have been accepted just before the
	// kill, before its offset was stored).
	if dups > 2*commitEvery {
		t.Errorf("%d mails re-sent after the crash, want at most %d (twice the commit interval)", dups, 2*commitEvery)
	}
}

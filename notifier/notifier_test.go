package notifier_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/internal/mailworkertest"
	"github.com/countersign/countersign/internal/promtest"
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

func newHarness(t *testing.T, smtpOpts ...smtptest.Option) *harness {
	t.Helper()
	h := &harness{brokers: eventstest.Brokers(t), smtp: smtptest.Start(t, smtpOpts...)}
	h.kafka = eventstest.Config(t, h.brokers)
	entry, err := events.GenerateKeyEntry()
	if err != nil {
		t.Fatal(err)
	}
	h.keyEntry = entry
	if h.keyring, err = events.ParseKeyring(entry); err != nil {
		t.Fatal(err)
	}
	h.producer = eventstest.Producer(t, h.kafka)
	return h
}

type running struct {
	stop     func() error
	registry *prometheus.Registry
	group    string
}

// start runs a notifier with a group of its own (unless cfg names one) and
// short retry waits until the test ends.
func (h *harness) start(t *testing.T, cfg notifier.Config) running {
	t.Helper()
	if cfg.GroupID == "" {
		cfg.GroupID = h.newGroup(t)
	}
	cfg.WorkerConfig = eventstest.TestWorker(t, cfg.WorkerConfig)
	reg := prometheus.NewRegistry()
	n, err := notifier.New(cfg, notifier.Deps{
		Kafka: h.kafka, Keyring: h.keyring, Templates: templates.Embedded(), Sender: h.smtp.Sender(t), Logger: eventstest.Logger(t), Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := eventstest.Run(t, n, nil)
	return running{stop: stop, registry: reg, group: cfg.GroupID}
}

// newGroup names a group of the test's own, at the topics' end on a shared
// real cluster (eventstest.FreshGroup).
func (h *harness) newGroup(t *testing.T) string {
	t.Helper()
	return eventstest.FreshGroup(t, h.brokers)
}

// publishCreated seals a code as the user API does and publishes the event.
func (h *harness) publishCreated(t *testing.T, email, code string) events.Event {
	t.Helper()
	e := eventstest.Created(t, h.keyring, email, code)
	eventstest.Publish(t, h.producer, e)
	return e
}

func TestVerificationMailCarriesTheSealedCode(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, notifier.Config{})
	email := eventstest.UniqueEmail(t)
	e := h.publishCreated(t, email, "493017")

	m := h.smtp.WaitFor(t, email, 1, 30*time.Second)[0]
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
	// The server records the mail before its reply reaches the notifier,
	// which counts it only then.
	eventstest.Eventually(t, 30*time.Second, func() bool {
		return promtest.Counter(t, r.registry, "countersign_notifier_mails_sent_total", "verification") >= 1
	})
}

func TestVerifiedMail(t *testing.T) {
	h := newHarness(t)
	h.start(t, notifier.Config{})
	email := eventstest.UniqueEmail(t)
	e, err := events.NewUserAccountVerified(events.UserAccountVerified{UserID: "u1", Email: email, FirstName: "Grace", LastName: "Hopper", VerifiedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	eventstest.Publish(t, h.producer, e)
	m := h.smtp.WaitFor(t, email, 1, 30*time.Second)[0]
	if !strings.Contains(strings.ToLower(m.Subject()), "verified") {
		t.Errorf("subject %q", m.Subject())
	}
	if text, _ := m.TextPart(); !strings.Contains(text, "Grace") {
		t.Errorf("text part %q", text)
	}
}

// The failure handling every mail-sending worker shares, run against the
// notifier: 451s retried then one delivery; a 550 dead-lettered at once.
func TestMailWorkerContract(t *testing.T) {
	h := newHarness(t)
	mailworkertest.Run(t, mailworkertest.Worker{
		Brokers: h.brokers, SMTP: h.smtp,
		Start: func(t *testing.T) string { return h.start(t, notifier.Config{}).group },
		Publish: func(t *testing.T, to string) (events.Event, string) {
			code := fmt.Sprintf("%06d", len(to)*7919%1000000)
			return h.publishCreated(t, to, code), code
		},
	})
}

func TestUnopenableCodeIsDeadLettered(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, notifier.Config{})
	email := eventstest.UniqueEmail(t)
	// Sealed with a key the notifier does not hold.
	eventstest.Publish(t, h.producer, eventstest.Created(t, nil, email, "444444"))
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
	eventstest.Eventually(t, 30*time.Second, func() bool { return h.smtp.Rejected() >= 4 })
	time.Sleep(2 * time.Second) // the outage goes on while the notifier retries
	h.smtp.ClearFailing()
	for _, a := range addrs {
		h.smtp.WaitFor(t, a, 1, 60*time.Second)
	}
	for _, a := range addrs {
		if n := len(h.smtp.MessagesTo(a)); n != 1 {
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
	eventstest.Eventually(t, 30*time.Second, func() bool { return h.smtp.Rejected() >= 10 })
	h.smtp.ClearFailing()
	for _, a := range addrs {
		h.smtp.WaitFor(t, a, 1, 60*time.Second)
	}
	for _, a := range addrs {
		if n := len(h.smtp.MessagesTo(a)); n != 1 {
			t.Errorf("%d mails to one address, want 1", n)
		}
	}
	for _, a := range addrs {
		if dl := eventstest.CountTopic(t, h.brokers, kafka.DeadLetterTopic(r.group), time.Second, eventstest.ByKey(a)); len(dl) != 0 {
			t.Errorf("%d records dead-lettered during an SMTP outage", len(dl))
		}
	}
}

// One event delivered twice, of each kind the notifier mails a code or a
// notice for, sends one mail.
func TestSameEventTwiceSendsOneMail(t *testing.T) {
	for name, publish := range map[string]func(h *harness, t *testing.T, email string) events.Event{
		"user_account_created": func(h *harness, t *testing.T, email string) events.Event { return h.publishCreated(t, email, "666666") },
		"user_account_exists":  func(h *harness, t *testing.T, email string) events.Event { return h.publishExists(t, email, "") },
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			h.start(t, notifier.Config{})
			email := eventstest.UniqueEmail(t)
			e := publish(h, t, email)
			eventstest.Publish(t, h.producer, e) // the same event id again, as after a rebalance
			marker := eventstest.UniqueEmail(t)
			// Same partition as nothing in particular: wait for a later event instead.
			publish(h, t, marker)
			h.smtp.WaitFor(t, marker, 1, 30*time.Second)
			h.smtp.WaitFor(t, email, 1, 30*time.Second)
			time.Sleep(300 * time.Millisecond)
			if n := len(h.smtp.MessagesTo(email)); n != 1 {
				t.Errorf("%d mails for one event delivered twice, want 1", n)
			}
		})
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
	eventstest.Publish(t, h.producer, e)
	after := h.publishCreated(t, email, "999999") // same key, so handled after the expired one
	m := h.smtp.WaitFor(t, email, 1, 30*time.Second)
	time.Sleep(300 * time.Millisecond)
	m = h.smtp.MessagesTo(email)
	if len(m) != 1 || !strings.Contains(m[0].MessageID(), after.ID) {
		t.Errorf("got %d mails, want only the one for the unexpired code", len(m))
	}
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
	eventstest.Eventually(t, 60*time.Second, func() bool { return len(h.smtp.Messages()) >= 12 })
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
		h.smtp.WaitFor(t, a, 1, 90*time.Second)
	}
	time.Sleep(500 * time.Millisecond)
	dups := 0
	for _, a := range addrs {
		dups += len(h.smtp.MessagesTo(a)) - 1
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

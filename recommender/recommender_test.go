package recommender_test

// End-to-end tests: a real broker over TCP (the embedded one, or the cluster
// in KAFKA_TEST_BROKERS) and a real SMTP server. On a shared cluster the
// topics hold other tests' events, and a new group reads them all, so every
// assertion filters by the test's own addresses (eventstest.UniqueEmail).

import (
	"context"
	"strings"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/internal/mailworkertest"
	"github.com/countersign/countersign/internal/promtest"
	"github.com/countersign/countersign/mail/smtptest"
	"github.com/countersign/countersign/recommender"
	"github.com/countersign/countersign/templates"
)

// harness is one broker, one SMTP server and a producer standing in for the
// user API.
type harness struct {
	brokers  string
	kafka    kafka.Config
	smtp     *smtptest.Server
	producer *kafka.Producer
	catalog  *recommender.Catalog
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{brokers: eventstest.Brokers(t), smtp: smtptest.Start(t), catalog: mustCatalog(t, "")}
	h.kafka = eventstest.Config(t, h.brokers)
	h.producer = eventstest.Producer(t, h.kafka)
	return h
}

type running struct {
	rec      *recommender.Recommender
	registry *prometheus.Registry
	group    string
	stop     func() error
}

// checkCounter compares a counter with what this test caused: exactly on
// the embedded broker; on a shared cluster (KAFKA_TEST_BROKERS) at least,
// since the group also handles the history other tests left in the topic.
func (r running) checkCounter(t *testing.T, name, label string, want float64) {
	t.Helper()
	got := promtest.Counter(t, r.registry, name, labelValues(label)...)
	if got == want || (eventstest.RealBroker() && got > want) {
		return
	}
	t.Errorf("%s{%s} = %v, want %v", name, label, got, want)
}

// start runs a recommender with a group of its own until the test ends.
func (h *harness) start(t *testing.T, cfg recommender.Config) running {
	t.Helper()
	cfg.WorkerConfig = eventstest.TestWorker(t, cfg.WorkerConfig)
	reg := prometheus.NewRegistry()
	r, err := recommender.New(cfg, recommender.Deps{
		Kafka: h.kafka, Templates: templates.Embedded(), Sender: h.smtp.Sender(t), Logger: eventstest.Logger(t), Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := eventstest.Run(t, r, nil)
	return running{rec: r, registry: reg, group: cfg.GroupID, stop: stop}
}

func (h *harness) publishVerified(t *testing.T, email string) events.Event {
	t.Helper()
	e := verifiedEvent(t, "u-"+eventstest.Suffix(), email)
	eventstest.Publish(t, h.producer, e)
	return e
}

// checkItems asserts that m carries exactly the items the catalogue picks
// for the user, in both parts, and no other item of the catalogue.
func (h *harness) checkItems(t *testing.T, m smtptest.Received, userID, email string) {
	t.Helper()
	text, err := m.TextPart()
	if err != nil {
		t.Fatal(err)
	}
	html, err := m.HTMLPart()
	if err != nil {
		t.Fatal(err)
	}
	picked := map[string]bool{}
	for _, it := range h.catalog.Pick(userID, email) {
		picked[it.ID] = true
	}
	if len(picked) != 3 {
		t.Fatalf("catalogue picked %d items, want 3", len(picked))
	}
	for _, it := range h.catalog.Items() {
		inText := strings.Contains(text, it.URL) && strings.Contains(text, it.Title)
		inHTML := strings.Contains(html, `href="`+it.URL+`"`)
		if picked[it.ID] && (!inText || !inHTML) {
			t.Errorf("item %s: in text part %v, in HTML part %v; want both", it.ID, inText, inHTML)
		}
		if !picked[it.ID] && (strings.Contains(text, it.URL) || strings.Contains(html, it.URL)) {
			t.Errorf("item %s is in the mail but was not picked", it.ID)
		}
	}
	if n := strings.Count(text, "https://"); n != 3 {
		t.Errorf("text part has %d links, want 3", n)
	}
}

func TestVerifiedUserGetsGettingStartedMail(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, recommender.Config{})
	email := eventstest.UniqueEmail(t)
	e := h.publishVerified(t, email)
	d, _ := e.UserAccountVerified()

	m := h.smtp.WaitFor(t, email, 1, 30*time.Second)[0]
	if !strings.Contains(strings.ToLower(m.Subject()), "getting started") {
		t.Errorf("subject %q", m.Subject())
	}
	if want := "<" + e.ID + ".getting_started@"; !strings.HasPrefix(m.MessageID(), want) {
		t.Errorf("Message-ID %q, want it to start with %q", m.MessageID(), want)
	}
	text, _ := m.TextPart()
	html, _ := m.HTMLPart()
	if !strings.Contains(text, "Hi Ada") || !strings.Contains(html, "Hi Ada") {
		t.Error("mail does not greet the user by first name")
	}
	h.checkItems(t, m, d.UserID, email)

	r.checkCounter(t, "countersign_recommender_mails_sent_total", "", 1)
	for _, it := range h.catalog.Pick(d.UserID, email) {
		r.checkCounter(t, "countersign_recommender_recommendations_total", it.ID, 1)
	}
}

// A re-delivery after the dedupe window (a crash, a rebalance long after)
// sends the mail again: it must carry the same items and the same
// Message-ID, so the person is not shown a different list and a receiving
// server can recognise the duplicate.
func TestRedeliveredEventSendsTheSameItems(t *testing.T) {
	h := newHarness(t)
	h.start(t, recommender.Config{WorkerConfig: kafka.WorkerConfig{DedupeWindow: time.Nanosecond}}) // forgets at once
	email := eventstest.UniqueEmail(t)
	e := h.publishVerified(t, email)
	eventstest.Publish(t, h.producer, e) // the same event again, same id and key
	got := h.smtp.WaitFor(t, email, 2, 30*time.Second)
	d, _ := e.UserAccountVerified()
	for _, m := range got {
		h.checkItems(t, m, d.UserID, email)
	}
	if got[0].MessageID() != got[1].MessageID() {
		t.Errorf("Message-IDs %q and %q differ", got[0].MessageID(), got[1].MessageID())
	}
	t0, _ := got[0].TextPart()
	t1, _ := got[1].TextPart()
	if t0 != t1 {
		t.Errorf("text parts differ:\n%s\n---\n%s", t0, t1)
	}
}

// Within the dedupe window the same event sends one mail.
func TestSameEventTwiceWithinTheWindowSendsOneMail(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, recommender.Config{})
	email := eventstest.UniqueEmail(t)
	e := h.publishVerified(t, email)
	eventstest.Publish(t, h.producer, e)
	// Same key, so same partition and handled after the duplicate.
	marker := h.publishVerified(t, email)
	got := h.smtp.WaitFor(t, email, 2, 30*time.Second)
	time.Sleep(300 * time.Millisecond) // room for a wrong third mail
	if got = h.smtp.MessagesTo(email); len(got) != 2 {
		t.Fatalf("%d mails, want 2 (one per event id)", len(got))
	}
	if strings.Contains(got[0].MessageID(), marker.ID) == strings.Contains(got[1].MessageID(), marker.ID) {
		t.Errorf("Message-IDs %q, %q: want one for each event", got[0].MessageID(), got[1].MessageID())
	}
	r.checkCounter(t, "countersign_recommender_duplicates_skipped_total", "", 1)
}

// The recommender subscribes to user_account_verified only: a person who
// registered but did not verify gets nothing from it.
func TestCreatedEventsAreIgnored(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, recommender.Config{})
	unverified := eventstest.UniqueEmail(t)
	created := eventstest.Created(t, nil, unverified, "123456")
	eventstest.Publish(t, h.producer, created)
	verified := eventstest.UniqueEmail(t)
	h.publishVerified(t, verified)
	h.smtp.WaitFor(t, verified, 1, 30*time.Second)
	// The created event was published first; give a wrong subscription time
	// to show itself.
	time.Sleep(time.Second)
	if n := len(h.smtp.MessagesTo(unverified)); n != 0 {
		t.Errorf("%d mails for a user_account_created event, want none", n)
	}
	// No mail could also mean "read and ignored"; the group's offsets show
	// what it is subscribed to. Shutdown commits.
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if got := committedOffsets(t, h.brokers, r.group, events.TopicUserAccountCreated); len(got) != 0 {
		t.Errorf("group committed offsets on %s %v: it reads a topic it must not", events.TopicUserAccountCreated, got)
	}
	if got := committedOffsets(t, h.brokers, r.group, events.TopicUserAccountVerified); len(got) == 0 {
		t.Errorf("group committed no offset on %s", events.TopicUserAccountVerified)
	}
}

// committedOffsets returns the offsets group committed on topic, by
// partition. It reads them without joining the group.
func committedOffsets(t *testing.T, brokers, group, topic string) map[int32]ckafka.Offset {
	t.Helper()
	c, err := ckafka.NewConsumer(&ckafka.ConfigMap{"bootstrap.servers": brokers, "group.id": group,
		"enable.auto.commit": false, "go.logs.channel.enable": true})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for range c.Logs() {
		}
	}()
	defer c.Close()
	md, err := c.GetMetadata(&topic, false, 10000)
	if err != nil {
		t.Fatal(err)
	}
	var tps []ckafka.TopicPartition
	for _, p := range md.Topics[topic].Partitions {
		tps = append(tps, ckafka.TopicPartition{Topic: &topic, Partition: p.ID})
	}
	tps, err = c.Committed(tps, 10000)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int32]ckafka.Offset{}
	for _, tp := range tps {
		if tp.Offset >= 0 {
			out[tp.Partition] = tp.Offset
		}
	}
	return out
}

// The acceptance test: a subscriber added after N users were
// verified receives all N from the topic's history.
func TestLateSubscriberReceivesHistory(t *testing.T) {
	h := newHarness(t)
	const n = 10
	type user struct{ id, email string }
	var users []user
	for range n {
		email := eventstest.UniqueEmail(t)
		e := h.publishVerified(t, email)
		d, _ := e.UserAccountVerified()
		users = append(users, user{d.UserID, email})
	}
	// Only now does the service exist: a new group, no committed offsets.
	h.start(t, recommender.Config{})
	for _, u := range users {
		m := h.smtp.WaitFor(t, u.email, 1, 60*time.Second)
		h.checkItems(t, m[0], u.id, u.email)
	}
	time.Sleep(300 * time.Millisecond)
	for _, u := range users {
		if got := len(h.smtp.MessagesTo(u.email)); got != 1 {
			t.Errorf("%d mails to one verified user, want 1", got)
		}
	}
}

// The failure handling every mail-sending worker shares, run against the
// recommender; its own counters are checked after the dead letter.
func TestMailWorkerContract(t *testing.T) {
	h := newHarness(t)
	var last running
	mailworkertest.Run(t, mailworkertest.Worker{
		Brokers: h.brokers, SMTP: h.smtp,
		Start: func(t *testing.T) string {
			last = h.start(t, recommender.Config{})
			return last.group
		},
		Publish: func(t *testing.T, to string) (events.Event, string) { return h.publishVerified(t, to), "" },
		DeadLettered: func(t *testing.T) {
			last.checkCounter(t, "countersign_recommender_dead_lettered_total", "", 1)
			last.checkCounter(t, "countersign_recommender_mails_failed_total", "permanent", 1)
		},
	})
}

// docs/subscribers.md recommends re-processing one group's dead letters by
// running that group's handler as a replay group over its dead-letter topic:
// the records reach no other group, and the replay group's committed offsets
// make each dead letter re-processed once. This test proves the advice, and
// the snippet between the guide markers is quoted in the guide.
func TestDeadLettersReplayedForOneGroupOnly(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, recommender.Config{})
	email := eventstest.UniqueEmail(t)
	h.smtp.FailNextFor(email, 1, 550, "5.1.1 mailbox unavailable")
	e := h.publishVerified(t, email)
	eventstest.ReadTopic(t, h.brokers, r.rec.DeadLetterTopic(), 1, 30*time.Second, eventstest.ByKey(email))
	// The cause is fixed (the mailbox exists now); replay.
	kcfg, group, handle := h.kafka, r.group, events.Handler(r.rec.Handle)
	// guide:replay begin
	replay, err := kafka.NewSubscriber(kcfg, kafka.SubscriberConfig{
		GroupID: group + ".replay", // its own offsets on the DLQ: each dead letter is replayed once
		Topics:  []string{kafka.DeadLetterTopic(group)},
	}, handle) // the group's own handler: no other group sees the records again
	// guide:replay end
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- replay.Run(ctx) }()
	m := h.smtp.WaitFor(t, email, 1, 30*time.Second)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(m[0].MessageID(), e.ID+".getting_started") {
		t.Errorf("replayed mail has Message-ID %q, want the original event's", m[0].MessageID())
	}
	// Nothing went back to the shared topic, where every group would read it.
	// (On a large shared topic the read may not reach the end in time; it
	// can then miss a copy but never invent one.)
	if got := eventstest.CountTopic(t, h.brokers, events.TopicUserAccountVerified, 2*time.Second, eventstest.ByKey(email)); len(got) > 1 {
		t.Errorf("%d records of the address on %s, want only the original", len(got), events.TopicUserAccountVerified)
	}
}

package recommender_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/internal/promtest"
	"github.com/countersign/countersign/mail"
	"github.com/countersign/countersign/recommender"
	"github.com/countersign/countersign/templates"
)

// fakeSender records messages and returns the errors queued in fail, one per
// Send, then nil. The end-to-end tests use a real SMTP server; this one lets
// the handler's own decisions be tested without a broker.
type fakeSender struct {
	mu   sync.Mutex
	sent []mail.Message
	fail []error
}

func (f *fakeSender) Send(_ context.Context, m mail.Message) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.fail) > 0 {
		err := f.fail[0]
		f.fail = f.fail[1:]
		return err
	}
	f.sent = append(f.sent, m)
	return nil
}

func (f *fakeSender) Close() error { return nil }

func (f *fakeSender) messages() []mail.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]mail.Message(nil), f.sent...)
}

// unitDeps are Deps for a recommender whose Handle is called directly: the
// broker address is never dialled.
func unitDeps(tb testing.TB, s mail.Sender) recommender.Deps {
	tb.Helper()
	tpl, err := templates.Load("")
	if err != nil {
		tb.Fatal(err)
	}
	return recommender.Deps{Kafka: kafka.Config{Brokers: "127.0.0.1:1"}, Templates: tpl, Sender: s}
}

func verifiedEvent(tb testing.TB, userID, email string) events.Event {
	tb.Helper()
	e, err := events.NewUserAccountVerified(events.UserAccountVerified{
		UserID: userID, Email: email, FirstName: "Ada", LastName: "Lovelace", VerifiedAt: time.Now(),
	})
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

func TestHandleBuildsTheMail(t *testing.T) {
	s := &fakeSender{}
	r, err := recommender.New(recommender.Config{PublicURL: testPublicURL}, unitDeps(t, s))
	if err != nil {
		t.Fatal(err)
	}
	e := verifiedEvent(t, "u-1", "ada@example.com")
	if err := r.Handle(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	m := s.messages()
	if len(m) != 1 {
		t.Fatalf("%d messages, want 1", len(m))
	}
	if m[0].ID != e.ID+".getting_started" {
		t.Errorf("Message.ID %q, want the event id plus .getting_started", m[0].ID)
	}
	if m[0].To != "ada@example.com" || m[0].ToName != "Ada Lovelace" {
		t.Errorf("recipient %q <%s>", m[0].ToName, m[0].To)
	}
	for _, it := range mustCatalog(t, "").Pick("u-1", "ada@example.com") {
		if !strings.Contains(m[0].Text, it.Title) || !strings.Contains(m[0].HTML, `href="`+it.Link(testPublicURL)+`"`) {
			t.Errorf("item %s missing from the mail", it.ID)
		}
	}
}

func TestHandleIgnoresOtherEventTypes(t *testing.T) {
	s := &fakeSender{}
	r, err := recommender.New(recommender.Config{}, unitDeps(t, s))
	if err != nil {
		t.Fatal(err)
	}
	kr, err := events.NewRandomKeyring()
	if err != nil {
		t.Fatal(err)
	}
	cd := events.UserAccountCreated{UserID: "u-1", Email: "ada@example.com",
		FirstName: "Ada", LastName: "Lovelace", ExpiresAt: time.Now().Add(time.Hour)}
	sealed, err := kr.Seal("123456", cd)
	if err != nil {
		t.Fatal(err)
	}
	cd.EncryptedCode = sealed
	e, err := events.NewUserAccountCreated(cd)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Handle(context.Background(), e); err != nil {
		t.Fatalf("a user_account_created event: %v, want nil (not the recommender's business)", err)
	}
	if n := len(s.messages()); n != 0 {
		t.Errorf("%d mails for a user_account_created event, want none", n)
	}
}

func TestHandleClassifiesMailErrors(t *testing.T) {
	temporary := &mail.Error{Op: "send", Temporary: true, Code: 451, Detail: "try later"}
	permanent := &mail.Error{Op: "send", Temporary: false, Code: 550, Detail: "no such mailbox"}
	s := &fakeSender{fail: []error{temporary, permanent}}
	reg := prometheus.NewRegistry()
	deps := unitDeps(t, s)
	deps.Registerer = reg
	r, err := recommender.New(recommender.Config{}, deps)
	if err != nil {
		t.Fatal(err)
	}
	e := verifiedEvent(t, "u-1", "ada@example.com")
	handle := r.Handler() // as the worker runs it: behind the dedupe window

	err = handle(context.Background(), e)
	if err == nil || events.IsPermanent(err) {
		t.Fatalf("451: %v, want a temporary error (retried by the runner)", err)
	}
	err = handle(context.Background(), e)
	if !events.IsPermanent(err) {
		t.Fatalf("550: %v, want events.Permanent (dead-lettered now)", err)
	}
	// A failed mail is not remembered as sent: the next delivery tries again.
	if err := handle(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	if err := handle(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	if n := len(s.messages()); n != 1 {
		t.Errorf("%d mails, want 1 (the fourth delivery is a duplicate)", n)
	}
	for labels, want := range map[[2]string]float64{
		{"countersign_recommender_mails_failed_total", "temporary"}: 1,
		{"countersign_recommender_mails_failed_total", "permanent"}: 1,
		{"countersign_recommender_mails_sent_total", ""}:            1,
		{"countersign_recommender_duplicates_skipped_total", ""}:    1,
	} {
		if got := promtest.Counter(t, reg, labels[0], labelValues(labels[1])...); got != want {
			t.Errorf("%s{%s} = %v, want %v", labels[0], labels[1], got, want)
		}
	}
}

// Every metric series exists from the start, one per catalogue item for the
// recommendations counter, so dashboards and alerts see zeros, not gaps.
func TestMetricsStartAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	deps := unitDeps(t, &fakeSender{})
	deps.Registerer = reg
	if _, err := recommender.New(recommender.Config{}, deps); err != nil {
		t.Fatal(err)
	}
	for _, it := range mustCatalog(t, "").Items() {
		if got := promtest.Counter(t, reg, "countersign_recommender_recommendations_total", it.ID); got != 0 {
			t.Errorf("%s: %v", it.ID, got)
		}
	}
	for _, name := range []string{"countersign_recommender_mails_sent_total", "countersign_recommender_dead_lettered_total"} {
		promtest.Counter(t, reg, name)
	}
}

// labelValues is the label values of a counter with at most one label:
// none for "".
func labelValues(label string) []string {
	if label == "" {
		return nil
	}
	return []string{label}
}

// Package mailworkertest is the contract suite every mail-sending worker
// runs (the notifier, the recommender, and any later one), written once as
// Watermill writes its pub/sub suite: what a temporary SMTP refusal, a
// permanent one and a poison record do is the kit's and the courier's
// behaviour, not each service's, so it is tested here against each service
// on a real broker and a real SMTP server.
package mailworkertest

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/mail/smtptest"
)

// Worker is one service under test.
type Worker struct {
	// Brokers and SMTP are where the service reads and mails.
	Brokers string
	SMTP    *smtptest.Server
	// Start runs the service with a group of the test's own until the test
	// ends, and returns the group id.
	Start func(t *testing.T) (group string)
	// Publish publishes an event that makes the service mail to, and
	// returns it with a secret the mail carries that must never reach a
	// dead letter's error (the code; "" when there is none).
	Publish func(t *testing.T, to string) (e events.Event, secret string)
	// DeadLettered, when set, runs after the permanent-failure scenario,
	// for the service's own metrics.
	DeadLettered func(t *testing.T)
}

// Run runs the suite against w.
func Run(t *testing.T, w Worker) {
	t.Run("TemporaryFailureIsRetriedAndDeliveredOnce", func(t *testing.T) { temporaryFailure(t, w) })
	t.Run("PermanentFailureIsDeadLetteredAndTheWorkerGoesOn", func(t *testing.T) { permanentFailure(t, w) })
}

// Two 451s, then one delivery: retried within the budget, sent once.
func temporaryFailure(t *testing.T, w Worker) {
	w.Start(t)
	to := eventstest.UniqueEmail(t)
	w.SMTP.FailNextFor(to, 2, 451, "4.3.0 try again later")
	w.Publish(t, to)
	w.SMTP.WaitFor(t, to, 1, 30*time.Second)
	time.Sleep(500 * time.Millisecond) // room for a wrong second copy
	if got := len(w.SMTP.MessagesTo(to)); got != 1 {
		t.Errorf("%d mails, want exactly 1", got)
	}
	if n := w.SMTP.RejectedFor(to); n != 2 {
		t.Errorf("server rejected the mail %d times, want 2 (the test did not exercise the retry)", n)
	}
}

// A 550 is permanent: the event goes to "<group-id>.dlq" at once, unchanged
// and with the dlq-* headers (no address, no secret in the reason), and
// the worker mails the next event.
func permanentFailure(t *testing.T, w Worker) {
	group := w.Start(t)
	bad := eventstest.UniqueEmail(t)
	// By recipient: on a shared cluster the group also mails other tests'
	// addresses from the topics' history.
	w.SMTP.FailNextFor(bad, 1, 550, "5.1.1 mailbox unavailable")
	e, secret := w.Publish(t, bad)
	good := eventstest.UniqueEmail(t)
	w.Publish(t, good)
	w.SMTP.WaitFor(t, good, 1, 30*time.Second)

	orig := eventstest.ReadTopic(t, w.Brokers, e.Type, 1, 30*time.Second, eventstest.ByKey(bad))[0]
	dl := eventstest.ReadTopic(t, w.Brokers, kafka.DeadLetterTopic(group), 1, 30*time.Second, eventstest.ByKey(bad))[0]
	if string(dl.Value) != string(orig.Value) {
		t.Errorf("dead letter's value differs from the original record")
	}
	if got := eventstest.Decode(t, dl).ID; got != e.ID {
		t.Errorf("dead-lettered %s, want %s", got, e.ID)
	}
	want := map[string]string{
		events.HeaderContentType: events.ContentType, // the original headers are kept
		kafka.HeaderDLQTopic:     e.Type,
		kafka.HeaderDLQPartition: strconv.Itoa(int(orig.TopicPartition.Partition)),
		kafka.HeaderDLQOffset:    strconv.FormatInt(int64(orig.TopicPartition.Offset), 10),
		kafka.HeaderDLQGroup:     group,
		kafka.HeaderDLQAttempts:  "1", // a 5xx is not retried
	}
	for k, v := range want {
		if got, ok := eventstest.Header(dl, k); !ok || got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	reason, _ := eventstest.Header(dl, kafka.HeaderDLQError)
	if !strings.Contains(reason, "550") {
		t.Errorf("dlq-error %q does not say why", reason)
	}
	if strings.Contains(reason, bad) || (secret != "" && strings.Contains(reason, secret)) {
		t.Errorf("dlq-error %q leaks the address or the code", reason)
	}
	at, _ := eventstest.Header(dl, kafka.HeaderDLQFailedAt)
	if ts, err := time.Parse(time.RFC3339Nano, at); err != nil || time.Since(ts) > 5*time.Minute {
		t.Errorf("dlq-failed-at %q", at)
	}
	if len(w.SMTP.MessagesTo(bad)) != 0 {
		t.Error("rejected mail recorded as received")
	}
	if w.DeadLettered != nil {
		w.DeadLettered(t)
	}
}

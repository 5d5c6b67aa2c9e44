package kafka_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/events/kafka"
)

// waitFor polls cond every 50ms until it is true or timeout passes, and
// returns how long that took.
func waitFor(tb testing.TB, what string, timeout time.Duration, cond func() bool) time.Duration {
	tb.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			tb.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// TestPublishFailsFastWhileBrokersDown: once every broker connection is
// down, Publish and Ping fail at once with ErrBrokersDown (which matches
// events.ErrNotPublished) instead of waiting for the context; when the
// broker returns, both work again without a new producer.
func TestPublishFailsFastWhileBrokersDown(t *testing.T) {
	b := eventstest.StartRestartable(t)
	cfg := kafka.Config{Brokers: b.Addr(), Logger: eventstest.Logger(t)}
	k := mustKeyring(t)
	p := mustProducer(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Publish(ctx, createdEvent(t, k, "a@example.com")); err != nil {
		t.Fatalf("publish with the broker up: %v", err)
	}

	b.Stop()
	lostAfter := waitFor(t, "Ping reports the broker gone", 30*time.Second, func() bool {
		pctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return errors.Is(p.Ping(pctx), kafka.ErrBrokersDown)
	})
	t.Logf("broker loss known after %v", lostAfter)

	// A long deadline, as PUBLISH_TIMEOUT would give: the answer must not
	// wait for it.
	const publishTimeout = 30 * time.Second
	pctx, pcancel := context.WithTimeout(context.Background(), publishTimeout)
	defer pcancel()
	start := time.Now()
	err := p.Publish(pctx, createdEvent(t, k, "b@example.com"))
	took := time.Since(start)
	if !errors.Is(err, kafka.ErrBrokersDown) || !errors.Is(err, events.ErrNotPublished) {
		t.Fatalf("publish with the broker down: %v, want ErrBrokersDown (not published)", err)
	}
	if took > publishTimeout/3 {
		t.Errorf("publish with the broker down took %v, want well under %v", took, publishTimeout)
	}
	t.Logf("publish refused after %v", took)

	b.Start()
	backAfter := waitFor(t, "Ping reports the broker back", 30*time.Second, func() bool {
		pctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return p.Ping(pctx) == nil
	})
	t.Logf("broker return known after %v", backAfter)
	// To a topic not written before: the restarted embedded broker has
	// forgotten the idempotent producer's sequence numbers, which a real
	// broker restarted on its data keeps.
	if err := p.Publish(ctx, verifiedEvent(t, "c@example.com")); err != nil {
		t.Fatalf("publish after the broker returned: %v", err)
	}
}

// TestPublishWaitingWhenBrokersGoDownIsUnknown: a Publish already waiting
// for its acknowledgement when the broker goes away returns before its
// context ends, and its error does not claim the event was not written.
func TestPublishWaitingWhenBrokersGoDownIsUnknown(t *testing.T) {
	b := eventstest.StartRestartable(t)
	cfg := kafka.Config{Brokers: b.Addr(), Logger: eventstest.Logger(t)}
	k := mustKeyring(t)
	p := mustProducer(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Publish(ctx, createdEvent(t, k, "a@example.com")); err != nil {
		t.Fatalf("publish with the broker up: %v", err)
	}
	// The broker holds every produce request without answering, then is
	// stopped with them unanswered.
	held := make(chan struct{})
	c := b.Cluster()
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		select {
		case held <- struct{}{}:
		default:
		}
		c.KeepControl()
		return nil, nil, true
	})
	const publishTimeout = 30 * time.Second
	pctx, pcancel := context.WithTimeout(context.Background(), publishTimeout)
	defer pcancel()
	errc := make(chan error, 1)
	start := time.Now()
	go func() { errc <- p.Publish(pctx, createdEvent(t, k, "b@example.com")) }()
	select {
	case <-held:
	case <-time.After(20 * time.Second):
		t.Fatal("the produce request never reached the broker")
	}
	b.Stop()
	err := <-errc
	took := time.Since(start)
	if err == nil || errors.Is(err, events.ErrNotPublished) {
		t.Fatalf("publish in flight when the broker went down: %v, want an error of unknown outcome", err)
	}
	if took > publishTimeout/3 {
		t.Errorf("publish in flight took %v after the broker went down, want well under %v", took, publishTimeout)
	}
	t.Logf("publish in flight answered after %v: %v", took, err)
}

func verifiedEvent(tb testing.TB, email string) events.Event {
	tb.Helper()
	e, err := events.NewUserAccountVerified(events.UserAccountVerified{
		UserID: "user-1", Email: email, FirstName: "Ada", LastName: "Lovelace", VerifiedAt: time.Now(),
	})
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

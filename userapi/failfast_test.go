package userapi_test

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/userapi"
)

var _ userapi.DownReporter = (*kafka.Producer)(nil)

// A long PUBLISH_TIMEOUT: a 503 that comes well before it was not waiting
// for it. The goals of issue 17 (a 503 within 1 s, /readyz within 5 s) are
// measured and logged, not asserted: the machine is slow and shared.
const longPublishTimeout = 30 * time.Second

// poll calls cond every 100ms until it is true, failing after timeout, and
// returns how long it took.
func poll(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Since(start)
}

func (h *harness) readyz() int {
	h.t.Helper()
	return h.do(http.MethodGet, "/readyz", "", "").status
}

// timed runs fn and returns its response and duration.
func timed(fn func() response) (response, time.Duration) {
	start := time.Now()
	r := fn()
	return r, time.Since(start)
}

// TestBrokerOutageAnswers503AtOnce: with the broker gone, /readyz turns 503,
// and register, verify and resend answer 503 problem+json with Retry-After
// at once rather than after PUBLISH_TIMEOUT. The events were certainly not
// written, so what the requests changed is undone: a new registration is
// removed, a resend's code is replaced by the one before, a verify attempt
// is given back. When the broker returns, /readyz turns 200 and the first
// code still verifies.
func TestBrokerOutageAnswers503AtOnce(t *testing.T) {
	b := eventstest.StartRestartable(t)
	h := newHarnessOn(t, eventstest.Config(t, b.Addr()), func(c *userapi.Config) {
		c.PublishTimeout = longPublishTimeout
		c.ResendInterval = time.Second
	})
	ctx := context.Background()
	pending := h.email()
	code := h.code(pending)
	before, err := h.store.Get(ctx, pending)
	if err != nil {
		t.Fatal(err)
	}
	h.mustStatus(h.do(http.MethodGet, "/readyz", "", ""), http.StatusOK)

	b.Stop()
	lost := poll(t, "/readyz turns 503", longPublishTimeout, func() bool { return h.readyz() == http.StatusServiceUnavailable })
	t.Logf("/readyz 503 %v after the broker stopped (goal: within 5s)", lost.Round(time.Millisecond))

	time.Sleep(time.Second) // RESEND_INTERVAL: the resend below may issue a code
	fresh := h.email()
	for _, req := range []struct {
		name string
		do   func() response
	}{
		{"register", func() response { return h.register(fresh) }},
		{"resend", func() response { return h.resend(pending) }},
		{"verify", func() response { return h.verify(pending, code) }},
		// Answered like the others: an outage must not tell which
		// addresses are pending.
		{"resend (not pending)", func() response { return h.resend(h.email()) }},
	} {
		r, took := timed(req.do)
		wantProblem(t, r, http.StatusServiceUnavailable, userapi.CodeUnavailable)
		if r.header.Get("Retry-After") == "" {
			t.Errorf("%s: 503 without Retry-After", req.name)
		}
		if took > longPublishTimeout/3 {
			t.Errorf("%s took %v with the broker down, want well under PUBLISH_TIMEOUT (%v)", req.name, took, longPublishTimeout)
		}
		t.Logf("%s: 503 after %v (goal: within 1s)", req.name, took.Round(time.Millisecond))
	}
	if _, err := h.store.Get(ctx, fresh); !errors.Is(err, userapi.ErrNotFound) {
		t.Errorf("a register refused for want of a broker left its registration: %v", err)
	}
	after, err := h.store.Get(ctx, pending)
	if err != nil || after.Version != before.Version || after.Attempts != 0 {
		t.Errorf("after a refused resend and verify: %+v, %v; want the first code back with no attempt used", after, err)
	}

	b.Start()
	back := poll(t, "/readyz turns 200", longPublishTimeout, func() bool { return h.readyz() == http.StatusOK })
	t.Logf("/readyz 200 %v after the broker restarted (goal: within 5s)", back.Round(time.Millisecond))
	// The first code still verifies. (No user_account_created is published
	// here: the restarted embedded broker has forgotten the producer's
	// sequence numbers for that topic, which a real broker keeps.)
	h.mustStatus(h.verify(pending, code), http.StatusOK)
}

// TestUnknownPublishOutcomeKeepsCodeThatVerifies: the broker holds the
// produce request without answering, so the user API cannot know whether
// the event was written. It answers 503 after PUBLISH_TIMEOUT but keeps the
// pending registration; when the broker goes on and writes the event, the
// code it carries verifies.
func TestUnknownPublishOutcomeKeepsCodeThatVerifies(t *testing.T) {
	b := eventstest.StartRestartable(t)
	h := newHarnessOn(t, eventstest.Config(t, b.Addr()), func(c *userapi.Config) { c.PublishTimeout = time.Second })
	h.code(h.email()) // connected, topic created

	release := make(chan struct{})
	var held atomic.Bool
	c := b.Cluster()
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		if held.CompareAndSwap(false, true) {
			c.SleepControl(func() { <-release })
		}
		return nil, nil, false // then handled as usual
	})

	email := h.email()
	r := h.register(email)
	wantProblem(t, r, http.StatusServiceUnavailable, userapi.CodeUnavailable)
	if r.header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if _, err := h.store.Get(context.Background(), email); err != nil {
		t.Fatalf("the registration of an event that may still arrive was removed: %v", err)
	}

	close(release)
	_, codes := h.created(email, 1)
	h.mustStatus(h.verify(email, codes[0]), http.StatusOK)
}

package kafka_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/kafka"
)

func TestWorkerConfigValidateNamesThePrefixedVariable(t *testing.T) {
	base := kafka.WorkerConfig{Prefix: "NOTIFIER_"}.WithDefaults("notification-service")
	for _, tc := range []struct {
		edit func(*kafka.WorkerConfig)
		want string
	}{
		{func(c *kafka.WorkerConfig) { c.GroupID = "a b" }, `NOTIFIER_GROUP_ID="a b"`},
		{func(c *kafka.WorkerConfig) { c.GroupID = strings.Repeat("g", 246) }, "NOTIFIER_GROUP_ID"},
		{func(c *kafka.WorkerConfig) { c.CommitEvery = -1 }, "NOTIFIER_COMMIT_EVERY"},
		{func(c *kafka.WorkerConfig) { c.MaxAttempts = -1 }, "NOTIFIER_MAX_ATTEMPTS"},
		{func(c *kafka.WorkerConfig) { c.InitialBackoff, c.MaxBackoff = time.Minute, time.Second }, "NOTIFIER_RETRY_BACKOFF"},
		{func(c *kafka.WorkerConfig) { c.DedupeWindow = -time.Second }, "NOTIFIER_DEDUPE_WINDOW"},
	} {
		c := base
		tc.edit(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want an error naming %s", c, err, tc.want)
		}
	}
	if err := base.Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	c := kafka.WorkerConfig{}.WithDefaults("g")
	want := kafka.WorkerConfig{GroupID: "g", CommitEvery: 5, MaxAttempts: 12, InitialBackoff: 500 * time.Millisecond,
		MaxBackoff: 30 * time.Second, DedupeWindow: 15 * time.Minute}
	if c != want {
		t.Errorf("defaults %+v, want %+v", c, want)
	}
	off := kafka.WorkerConfig{GroupID: "g", DedupeWindow: kafka.DedupeOff}.WithDefaults("")
	if err := off.Validate(); err != nil || off.DedupeWindow != kafka.DedupeOff {
		t.Errorf("DedupeOff: %+v, %v", off, err)
	}
}

// The dedupe marks an event only once its handler succeeded: a failure is
// retried, not mistaken for a handled event.
func TestDedupeMarksOnlyAfterSuccess(t *testing.T) {
	var calls, dups int
	fail := true
	h := kafka.Dedupe(time.Minute, func(events.Event) { dups++ }, func(context.Context, events.Event) error {
		calls++
		if fail {
			return errors.New("smtp down")
		}
		return nil
	})
	e := events.Event{ID: "e-1"}
	if err := h(context.Background(), e); err == nil {
		t.Fatal("the handler's error was swallowed")
	}
	fail = false
	for range 3 {
		if err := h(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	if calls != 2 || dups != 2 {
		t.Errorf("handler ran %d times with %d duplicates skipped, want 2 and 2", calls, dups)
	}
	if err := h(context.Background(), events.Event{ID: "e-2"}); err != nil || calls != 3 {
		t.Errorf("another event: %v after %d calls, want it handled", err, calls)
	}
}

func TestNewWorkerRefusesABadGroupBeforeConnecting(t *testing.T) {
	_, err := kafka.NewWorker(kafka.Config{Brokers: "127.0.0.1:1"}, kafka.WorkerConfig{Prefix: "AUDIT_", GroupID: "a b"},
		[]string{events.TopicUserAccountVerified}, func(context.Context, events.Event) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "AUDIT_GROUP_ID") {
		t.Fatalf("NewWorker: %v, want an error naming AUDIT_GROUP_ID", err)
	}
}

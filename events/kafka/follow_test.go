package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/events/kafka"
)

// follower collects what FollowTopic hands over: the newest value of each
// key, tombstones deleting it, and whether it caught up.
type follower struct {
	mu       sync.Mutex
	keys     map[string]string
	n        int
	atCaught int
	caught   chan struct{}
}

func newFollower() *follower {
	return &follower{keys: map[string]string{}, caught: make(chan struct{})}
}

func (f *follower) apply(_ context.Context, recs []kafka.Record) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range recs {
		f.n++
		if r.Tombstone() {
			delete(f.keys, string(r.Key))
		} else {
			f.keys[string(r.Key)] = string(r.Value)
		}
	}
	return nil
}

func (f *follower) caughtUp() {
	f.mu.Lock()
	f.atCaught = f.n
	f.mu.Unlock()
	close(f.caught)
}

func (f *follower) value(key string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.keys[key]
	return v, ok
}

// FollowTopic reads the whole log before it says it caught up, applies
// tombstones in order, and goes on following.
func TestFollowTopic(t *testing.T) {
	brokers := eventstest.Brokers(t)
	cfg := eventstest.Config(t, brokers)
	topic := testTopic(t, cfg)
	const n = 300
	var recs [][2][]byte
	for i := range n {
		recs = append(recs, [2][]byte{[]byte(fmt.Sprintf("k%d", i%100)), []byte(fmt.Sprintf("v%d", i))})
	}
	produceRaw(t, brokers, topic, recs...)
	produceTombstone(t, brokers, topic, "k7")

	f := newFollower()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- kafka.FollowTopic(ctx, cfg, topic, f.apply, f.caughtUp) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("FollowTopic: %v", err)
		}
	}()
	select {
	case <-f.caught:
	case err := <-done:
		t.Fatalf("FollowTopic ended before catching up: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("not caught up within 60s")
	}
	f.mu.Lock()
	atCaught := f.atCaught
	f.mu.Unlock()
	if atCaught != n+1 {
		t.Errorf("caught up after %d records, want all %d", atCaught, n+1)
	}
	if v, ok := f.value("k3"); !ok || v != "v203" {
		t.Errorf("k3 = %q, %v; want the newest value v203", v, ok)
	}
	if _, ok := f.value("k7"); ok {
		t.Error("k7 survived its tombstone")
	}
	// Still following: a record published now arrives, and so does a
	// tombstone for it.
	produceRaw(t, brokers, topic, [2][]byte{[]byte("new"), []byte("x")})
	followWait(t, func() bool { _, ok := f.value("new"); return ok })
	produceTombstone(t, brokers, topic, "new")
	followWait(t, func() bool { _, ok := f.value("new"); return !ok })
}

// An empty topic is caught up at once.
func TestFollowTopicEmpty(t *testing.T) {
	brokers := eventstest.Brokers(t)
	cfg := eventstest.Config(t, brokers)
	topic := testTopic(t, cfg)
	f := newFollower()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- kafka.FollowTopic(ctx, cfg, topic, f.apply, f.caughtUp) }()
	select {
	case <-f.caught:
	case <-time.After(60 * time.Second):
		t.Fatal("not caught up within 60s")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A failing apply ends FollowTopic with its error.
func TestFollowTopicApplyError(t *testing.T) {
	brokers := eventstest.Brokers(t)
	cfg := eventstest.Config(t, brokers)
	topic := testTopic(t, cfg)
	produceRaw(t, brokers, topic, [2][]byte{[]byte("k"), []byte("v")})
	boom := fmt.Errorf("store down")
	err := kafka.FollowTopic(context.Background(), cfg, topic, func(context.Context, []kafka.Record) error { return boom }, func() {})
	if err == nil || err.Error() != "follow "+topic+": store down" {
		t.Fatalf("FollowTopic = %v, want the apply error", err)
	}
}

// A log of several batches: apply runs one batch at a time (never two at
// once, never alongside caughtUp), in offset order within each partition,
// and caughtUp comes after every record is applied. A later batch's apply
// error ends FollowTopic, no batch is applied after it, and it never says
// it caught up.
func TestFollowTopicManyBatches(t *testing.T) {
	brokers := eventstest.Brokers(t)
	cfg := eventstest.Config(t, brokers)
	topic := testTopic(t, cfg)
	const n = 20_000 // about five batches of 4,096
	recs := make([][2][]byte, n)
	for i := range recs {
		recs[i] = [2][]byte{[]byte(fmt.Sprintf("k%d", i)), []byte("v")}
	}
	produceRaw(t, brokers, topic, recs...)

	var busy atomic.Bool
	enter := func() {
		if !busy.CompareAndSwap(false, true) {
			t.Error("apply or caughtUp called while another runs")
		}
	}
	var applied, batches, atCaught int
	last := map[int32]int64{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err := kafka.FollowTopic(ctx, cfg, topic, func(_ context.Context, recs []kafka.Record) error {
		enter()
		defer busy.Store(false)
		batches++
		for _, r := range recs {
			if prev, ok := last[r.Partition]; ok && r.Offset <= prev {
				t.Errorf("partition %d: offset %d after %d", r.Partition, r.Offset, prev)
			}
			last[r.Partition] = r.Offset
			applied++
		}
		return nil
	}, func() {
		enter()
		defer busy.Store(false)
		atCaught = applied
		cancel()
	})
	if err != nil {
		t.Fatal(err)
	}
	if atCaught != n {
		t.Errorf("caught up after %d records, want all %d", atCaught, n)
	}
	if batches < 2 {
		t.Errorf("%d batches, want several", batches)
	}

	boom := errors.New("store down")
	calls := 0
	err = kafka.FollowTopic(context.Background(), cfg, topic, func(context.Context, []kafka.Record) error {
		calls++
		if calls == 2 {
			return boom
		}
		return nil
	}, func() { t.Error("caught up although an apply failed") })
	if !errors.Is(err, boom) {
		t.Fatalf("FollowTopic = %v, want the apply error", err)
	}
	if calls != 2 {
		t.Errorf("apply called %d times, want 2 (none after the error)", calls)
	}
}

// Subscribers skip tombstones: a record without a value is not an event and
// is not dead-lettered.
func TestSubscriberSkipsTombstones(t *testing.T) {
	brokers := eventstest.Brokers(t)
	cfg := eventstest.Config(t, brokers)
	topic := testTopic(t, cfg)
	recs, _ := validRecords(t, 2)
	produceRaw(t, brokers, topic, recs[0])
	produceTombstone(t, brokers, topic, string(recs[0][0]))
	produceRaw(t, brokers, topic, recs[1])
	group := eventstest.UniqueGroup(t)
	var mu sync.Mutex
	outcomes := map[kafka.Outcome]int{}
	rec := newRecorder()
	sc := fastRetries(kafka.SubscriberConfig{GroupID: group, Topics: []string{topic}, OnResult: func(r kafka.Result) {
		mu.Lock()
		outcomes[r.Outcome]++
		mu.Unlock()
	}})
	stop := startSubscriber(t, cfg, sc, rec.handle)
	rec.waitFor(t, 2, 60*time.Second)
	followWait(t, func() bool { mu.Lock(); defer mu.Unlock(); return outcomes[kafka.OutcomeSkipped] == 1 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if outcomes[kafka.OutcomeHandled] != 2 || outcomes[kafka.OutcomeDeadLettered] != 0 {
		t.Errorf("outcomes %v, want 2 handled, 1 skipped, none dead-lettered", outcomes)
	}
}

// The contract's topic settings are applied at creation: the accounts log
// is compacted.
func TestEnsureTopicsAppliesTopicConfigs(t *testing.T) {
	brokers := eventstest.Brokers(t)
	cfg := eventstest.Config(t, brokers)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, cfg, events.Topics...); err != nil {
		t.Fatal(err)
	}
	// Twice: the second call finds the topics and their settings in place.
	if err := kafka.EnsureTopics(ctx, cfg, events.Topics...); err != nil {
		t.Fatal(err)
	}
	a, err := ckafka.NewAdminClient(&ckafka.ConfigMap{"bootstrap.servers": brokers, "log_level": 3})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	res, err := a.DescribeConfigs(ctx, []ckafka.ConfigResource{{Type: ckafka.ResourceTopic, Name: events.TopicUserAccountVerified}})
	if err != nil {
		t.Fatal(err)
	}
	if got := res[0].Config["cleanup.policy"].Value; got != "compact" {
		t.Errorf("cleanup.policy of %s = %q, want compact", events.TopicUserAccountVerified, got)
	}
}

func produceTombstone(tb testing.TB, brokers, topic, key string) {
	tb.Helper()
	cfg := kafka.Config{Brokers: brokers, Logger: eventstest.Logger(tb)}
	p := mustProducer(tb, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.PublishTombstone(ctx, topic, key); err != nil {
		tb.Fatal(err)
	}
}

func followWait(tb testing.TB, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatal("condition not met within 60s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The batch consumer (the audit's) reads past tombstones too: no dead
// letter, and the offset moves on.
func TestBatchConsumerSkipsTombstones(t *testing.T) {
	brokers := eventstest.Brokers(t)
	cfg := eventstest.Config(t, brokers)
	topic := testTopic(t, cfg)
	recs, _ := validRecords(t, 2)
	produceRaw(t, brokers, topic, recs[0])
	produceTombstone(t, brokers, topic, string(recs[0][0]))
	produceRaw(t, brokers, topic, recs[1])
	store := newMemStore()
	var dead sync.Mutex
	deadLettered := 0
	bc, err := kafka.NewBatchConsumer(cfg, kafka.BatchConfig{GroupID: eventstest.UniqueGroup(t), Topics: []string{topic},
		Size: 10, Interval: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		OnDeadLetter: func(string, error) { dead.Lock(); deadLettered++; dead.Unlock() }}, store)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- bc.Run(ctx) }()
	waitUntil(t, "both events and the offset past the tombstone", time.Minute, func() bool {
		d, _ := store.count()
		store.mu.Lock()
		defer store.mu.Unlock()
		for _, o := range store.offsets {
			if o == 3 {
				return d == 2
			}
		}
		return false
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	dead.Lock()
	defer dead.Unlock()
	if deadLettered != 0 {
		t.Errorf("%d records dead-lettered, want none", deadLettered)
	}
}

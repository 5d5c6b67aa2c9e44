package kafka_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/events/kafka"
)

// memStore is a kafka.BatchStore (and TopicIDStore) in memory that can be
// told to fail.
type memStore struct {
	mu       sync.Mutex
	fail     bool
	ids      map[string]int // event id → times written
	offsets  map[kafka.Partition]int64
	topicIDs map[kafka.Partition]string // the topic id each offset was written with
	writes   int
}

var errDown = errors.New("store down")

func newMemStore() *memStore {
	return &memStore{ids: map[string]int{}, offsets: map[kafka.Partition]int64{}, topicIDs: map[kafka.Partition]string{}}
}

func (m *memStore) OffsetsWithTopicIDs(ctx context.Context, group string, ps []kafka.Partition) (map[kafka.Partition]kafka.StoredOffset, error) {
	offs, err := m.Offsets(ctx, group, ps)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[kafka.Partition]kafka.StoredOffset, len(offs))
	for p, o := range offs {
		out[p] = kafka.StoredOffset{Next: o, TopicID: m.topicIDs[p]}
	}
	return out, nil
}

func (m *memStore) Offsets(_ context.Context, _ string, ps []kafka.Partition) (map[kafka.Partition]int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail {
		return nil, errDown
	}
	out := map[kafka.Partition]int64{}
	for _, p := range ps {
		if o, ok := m.offsets[p]; ok {
			out[p] = o
		}
	}
	return out, nil
}

func (m *memStore) Write(_ context.Context, _ string, b kafka.Batch) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail {
		return errDown
	}
	for _, r := range b.Records {
		m.ids[r.Event.ID]++
	}
	for p, o := range b.Next {
		m.offsets[p] = o
		m.topicIDs[p] = b.TopicIDs[p.Topic]
	}
	m.writes++
	return nil
}

func (m *memStore) setFail(v bool) { m.mu.Lock(); m.fail = v; m.mu.Unlock() }

func (m *memStore) count() (distinct, total int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, n := range m.ids {
		distinct++
		total += n
	}
	return distinct, total
}

func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The consumer resumes from the store's offsets (not the group's), holds its
// batch while the store fails, reports not ready, and loses nothing.
func TestBatchConsumerStoreOffsetsAndOutage(t *testing.T) {
	brokers := eventstest.Brokers(t)
	cfg := eventstest.Config(t, brokers)
	topic := testTopic(t, cfg)
	recs, _ := validRecords(t, 150) // one key: one partition, in order
	produceRaw(t, brokers, topic, recs[:100]...)
	store := newMemStore()
	// The store already holds the first 40: they must not be read again.
	p := kafka.Partition{Topic: topic}
	for part := range int32(3) {
		store.offsets[kafka.Partition{Topic: topic, Partition: part}] = 0
	}
	msgs := eventstest.ReadTopic(t, brokers, topic, 100, time.Minute, nil)
	p.Partition = msgs[0].TopicPartition.Partition
	store.offsets[p] = 40

	bc, err := kafka.NewBatchConsumer(cfg, kafka.BatchConfig{GroupID: eventstest.UniqueGroup(t), Topics: []string{topic},
		Size: 10, Interval: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}, store)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- bc.Run(ctx) }()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-done
		}
	}()

	waitUntil(t, "60 events written", time.Minute, func() bool { d, _ := store.count(); return d == 60 })
	waitUntil(t, "ready", time.Minute, func() bool { return bc.Ready(context.Background()) == nil })
	store.setFail(true)
	produceRaw(t, brokers, topic, recs[100:]...)
	waitUntil(t, "not ready while the store fails", time.Minute, func() bool { return errors.Is(bc.Ready(context.Background()), kafka.ErrStoreUnavailable) })
	store.setFail(false)
	waitUntil(t, "every event after the outage", time.Minute, func() bool { d, _ := store.count(); return d == 110 })
	cancel()
	stopped = true
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	distinct, total := store.count()
	if distinct != 110 || total != 110 {
		t.Fatalf("written %d events (%d distinct), want 110 once each", total, distinct)
	}
	if store.offsets[p] != 150 {
		t.Fatalf("stored offset %d, want 150", store.offsets[p])
	}
}

// A batch consumer with a Registerer exports the kit's metrics as a
// Subscriber does: the lag follows the written batches, grows while the
// store is down (the partitions are paused, the lag is measured off the
// consuming goroutine), and returns to 0; held_back is 1 during the outage;
// a record that is not an event is counted as dead-lettered.
func TestBatchConsumerExportsKitMetrics(t *testing.T) {
	brokers := eventstest.Brokers(t)
	cfg := eventstest.Config(t, brokers)
	cfg.Client = map[string]string{"auto.commit.interval.ms": "100"}
	topic := testTopic(t, cfg)
	group := eventstest.UniqueGroup(t)
	reg := prometheus.NewRegistry()
	store := newMemStore()
	bc, err := kafka.NewBatchConsumer(cfg, kafka.BatchConfig{GroupID: group, Topics: []string{topic},
		Size: 5, Interval: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Registerer: reg, LagInterval: 100 * time.Millisecond}, store)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- bc.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		if s := series(t, reg, kafka.MetricConsumerLag, group); len(s) != 0 {
			t.Errorf("lag series left after Run returned: %v", s)
		}
	}()

	waitSeries(t, reg, kafka.MetricConsumerDeadLettered, group, 60*time.Second, "dead-letter series at 0 from the start", func(s map[string]float64) bool {
		v, ok := s[topic+"/"]
		return ok && v == 0
	})
	recs, _ := validRecords(t, 12)
	produceRaw(t, brokers, topic, append(recs, [2][]byte{[]byte("k"), []byte("not an event")})...)
	waitUntil(t, "12 events written", time.Minute, func() bool { d, _ := store.count(); return d == 12 })
	waitSeries(t, reg, kafka.MetricConsumerLag, group, 60*time.Second, "lag 0 on every partition once written and committed", func(s map[string]float64) bool {
		return len(s) == cfg.Partitions && sum(s) == 0
	})
	if v := series(t, reg, kafka.MetricConsumerDeadLettered, group)[topic+"/"]; v != 1 {
		t.Errorf("dead-lettered %v, want 1", v)
	}
	if v := series(t, reg, kafka.MetricConsumerHeldBack, group)["/"]; v != 0 {
		t.Errorf("held_back %v before the outage, want 0", v)
	}

	store.setFail(true)
	more, _ := validRecords(t, 7)
	produceRaw(t, brokers, topic, more...)
	waitSeries(t, reg, kafka.MetricConsumerHeldBack, group, 60*time.Second, "held_back 1 while the store is down", func(s map[string]float64) bool {
		return s["/"] == 1
	})
	waitSeries(t, reg, kafka.MetricConsumerLag, group, 60*time.Second, "lag of the 7 unwritten records while the store is down", func(s map[string]float64) bool {
		return sum(s) == 7
	})

	store.setFail(false)
	waitSeries(t, reg, kafka.MetricConsumerLag, group, 60*time.Second, "lag back to 0 after the outage", func(s map[string]float64) bool {
		return len(s) == cfg.Partitions && sum(s) == 0
	})
	waitSeries(t, reg, kafka.MetricConsumerHeldBack, group, 60*time.Second, "held_back back to 0", func(s map[string]float64) bool {
		return s["/"] == 0
	})
	if d, total := store.count(); d != 19 || total != 19 {
		t.Errorf("written %d events (%d distinct), want 19 once each", total, d)
	}
}

// A topic deleted and created again, and already longer than the stored
// offset when the consumer is assigned it, is read from its beginning: its
// topic id is not the one the offset was stored with. (A stored offset past
// the partition's end, the only sign without ids, does not show here.)
func TestBatchConsumerRecreatedTopic(t *testing.T) {
	brokers := eventstest.Brokers(t)
	cfg := eventstest.Config(t, brokers)
	topic := testTopic(t, cfg)
	group := eventstest.UniqueGroup(t)
	store := newMemStore()
	run := func() (stop func()) {
		bc, err := kafka.NewBatchConsumer(cfg, kafka.BatchConfig{GroupID: group, Topics: []string{topic},
			Size: 10, Interval: 50 * time.Millisecond}, store)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- bc.Run(ctx) }()
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		}
	}
	recs, _ := validRecords(t, 70) // one key: one partition, in order
	produceRaw(t, brokers, topic, recs[:30]...)
	stop := run()
	waitUntil(t, "the first topic's 30 events written", time.Minute, func() bool { d, _ := store.count(); return d == 30 })
	stop()

	recreateTopic(t, cfg, topic)
	produceRaw(t, brokers, topic, recs[30:]...) // 40: past the stored offset of 30
	stop = run()
	defer stop()
	waitUntil(t, "the new topic's 40 events written", time.Minute, func() bool { d, _ := store.count(); return d == 70 })
	if d, total := store.count(); d != 70 || total != 70 {
		t.Errorf("written %d events (%d distinct), want 70 once each", total, d)
	}
}

// recreateTopic deletes topic and creates it again (a new topic id).
func recreateTopic(t *testing.T, cfg kafka.Config, topic string) {
	t.Helper()
	admin, err := ckafka.NewAdminClient(&ckafka.ConfigMap{"bootstrap.servers": cfg.Brokers})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := admin.DeleteTopics(ctx, []string{topic})
	if err != nil || res[0].Error.Code() != ckafka.ErrNoError {
		t.Fatalf("delete %s: %v %v", topic, err, res)
	}
	// A real broker deletes in the background: create again until it may.
	waitUntil(t, "the topic created again", time.Minute, func() bool {
		return kafka.EnsureTopics(ctx, cfg, topic) == nil
	})
	waitUntil(t, "the new topic empty and ready", time.Minute, func() bool {
		md, err := admin.GetMetadata(&topic, false, 5000)
		return err == nil && len(md.Topics[topic].Partitions) == cfg.Partitions && md.Topics[topic].Error.Code() == ckafka.ErrNoError
	})
}

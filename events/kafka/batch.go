package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/countersign/countersign/events"
)

// Partition names one partition of a topic.
type Partition struct {
	Topic     string
	Partition int32
}

func (p Partition) String() string { return p.Topic + "/" + strconv.Itoa(int(p.Partition)) }

// BatchRecord is one decoded record of a batch.
type BatchRecord struct {
	Partition
	Offset int64
	Event  events.Event
}

// Batch is what a BatchStore writes in one transaction.
type Batch struct {
	// Records in the order they were read (per partition, offset order).
	Records []BatchRecord
	// Next is, for every partition the batch advanced, the offset to resume
	// from after it: one past the last record read, dead-lettered ones
	// included. A batch may hold offsets and no records (it read only
	// records that were dead-lettered).
	Next map[Partition]int64
	// TopicIDs are the ids (Kafka's topic ids, KIP-516) of the topics of
	// Next, as the consumer found them when it was assigned the
	// partitions; missing when the brokers did not say. A store that keeps
	// them with the offsets (TopicIDStore) lets the consumer tell a topic
	// that was deleted and created again from the one the offsets are of.
	TopicIDs map[string]string
}

// BatchStore is where a BatchConsumer writes, and what keeps its offsets.
// The consumer seeks to the offsets the store returns, not to the group's,
// which is what makes its writes exactly-once: the records and the offset
// after them are committed together or not at all.
type BatchStore interface {
	// Offsets returns, for the partitions of ps the store has an offset
	// for (under group), the offset to resume from. Partitions missing from
	// the answer are read from their beginning.
	Offsets(ctx context.Context, group string, ps []Partition) (map[Partition]int64, error)
	// Write stores b.Records and b.Next in one transaction. On an error
	// nothing of b may be stored; the consumer holds b and calls Write
	// again with b and whatever arrived since.
	Write(ctx context.Context, group string, b Batch) error
}

// StoredOffset is an offset a TopicIDStore holds, and the id of the topic it
// was read from ("" when stored without one).
type StoredOffset struct {
	Next    int64
	TopicID string
}

// TopicIDStore is a BatchStore that also keeps, with each offset, the
// Batch.TopicIDs it was written with. On assignment the consumer compares
// them with the topics' ids now: an offset of a topic that was deleted and
// created again since is not resumed from (the partition is read from its
// beginning), even when the new topic has grown past it. Without it, the
// consumer can only notice a stored offset past a partition's end.
type TopicIDStore interface {
	BatchStore
	// OffsetsWithTopicIDs is Offsets with each offset's topic id.
	OffsetsWithTopicIDs(ctx context.Context, group string, ps []Partition) (map[Partition]StoredOffset, error)
}

// BatchStats describes one written batch, for metrics.
type BatchStats struct {
	Records  int
	Duration time.Duration // of the Write call that succeeded
	Reason   string        // "size", "interval", "revoke" or "shutdown"
}

// BatchConfig configures a BatchConsumer.
type BatchConfig struct {
	// GroupID is the consumer group; it also names the dead-letter topic,
	// "<group-id>.dlq". Required.
	GroupID string
	// Topics to read. Required.
	Topics []string
	// Size writes a batch once it holds this many records (default 500).
	Size int
	// Interval writes the open batch this long after its first record
	// arrived, when it did not fill up first (default 1s): how stale the
	// store may be on a quiet topic.
	Interval time.Duration
	// InitialBackoff and MaxBackoff space the retries of a failed write or
	// offset read (defaults 200ms and 10s, doubling with jitter). While the
	// store fails the consumer holds the open batch, pauses its partitions
	// and keeps polling, so it stays in the group.
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	// WriteTimeout bounds one Write or Offsets call (default 30s).
	WriteTimeout time.Duration
	// SessionTimeout as in SubscriberConfig (default DefaultSessionTimeout).
	SessionTimeout time.Duration
	// Decode turns a record's value into an event (default events.Decode).
	// An error dead-letters the record; the batch goes on.
	Decode func(value []byte) (events.Event, error)
	// Hooks, called from the consuming goroutine: keep them fast.
	OnBatch      func(BatchStats)
	OnDeadLetter func(topic string, err error)
	// OnWriteError sees every failed Write or Offsets call.
	OnWriteError func(error)
	// OnLag is called about once a second for every assigned partition with
	// the records on the broker past what the store holds.
	OnLag func(p Partition, lag int64)
	// OnAssignment is called with the partitions this member consumes
	// whenever that changes (nil when they are revoked), e.g. to drop the
	// lag series of partitions that went to another member.
	OnAssignment func(ps []Partition)
	// Registerer, when set, receives the kit's metrics for this group, as
	// for a Subscriber (lag.go): countersign_consumer_lag_records per
	// assigned partition (the high watermark minus the group's committed
	// offset, which follows the written batches; measured on a goroutine of
	// its own every LagInterval, so it grows while the store is down and
	// the partitions are paused), countersign_consumer_held_back (1 while
	// the store is down) and countersign_consumer_dead_lettered_total.
	Registerer prometheus.Registerer
	// LagInterval is how often the lag is measured (default 5s).
	LagInterval time.Duration
	// Sequential waits for each batch's Write before reading on. By
	// default a full batch is written by a second goroutine while the
	// consumer reads and decodes the next one (at most one write in
	// flight); benchmarks set this to compare.
	Sequential bool
}

func (c *BatchConfig) setDefaults() {
	if c.Size == 0 {
		c.Size = 500
	}
	if c.Interval == 0 {
		c.Interval = time.Second
	}
	if c.InitialBackoff == 0 {
		c.InitialBackoff = 200 * time.Millisecond
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 10 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 30 * time.Second
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = DefaultSessionTimeout
	}
	if c.LagInterval == 0 {
		c.LagInterval = DefaultLagInterval
	}
	if c.Decode == nil {
		c.Decode = events.Decode
	}
}

// Validate reports the first setting that cannot work.
func (c BatchConfig) Validate() error {
	switch {
	case !legalGroupID.MatchString(c.GroupID):
		return fmt.Errorf("group id %q: want 1 to 245 letters, digits, '.', '_' or '-'", c.GroupID)
	case len(c.Topics) == 0:
		return errors.New("missing topics")
	case c.Size < 1:
		return errors.New("batch size: want ≥ 1")
	case c.Interval <= 0:
		return errors.New("batch interval: want > 0")
	case c.InitialBackoff < 0 || c.MaxBackoff < c.InitialBackoff:
		return errors.New("backoff: want 0 ≤ initial ≤ max")
	}
	return nil
}

// BatchConsumer reads topics as one member of a consumer group and writes
// what it reads to a BatchStore in batches, each batch one transaction that
// also holds the offsets after it. On assignment it resumes from the
// store's offsets. Together that is exactly-once into the store: a crash at
// any point loses the open batch, and the next owner of its partitions reads
// it again from the offsets committed with the last written batch.
//
// Records that do not decode go to "<group-id>.dlq" with the dead-letter
// headers (HeaderDLQTopic, …; dlq-attempts 0) before their batch is
// written: a crash between the two dead-letters them a second time, never
// zero times.
//
// When Write fails (the database is down) the consumer holds the open
// batch, pauses its partitions, keeps polling to stay in the group, and
// retries with backoff; nothing is committed and nothing is lost, and Ready
// reports the outage. When partitions are revoked it writes the open batch
// first; if that fails the batch is dropped and its partitions' next owner
// reads it again.
//
// A full batch is written by a second goroutine while the consumer reads
// the next one (unless BatchConfig.Sequential). At most one write is in
// flight and the next starts only after it committed, so batches commit in
// order; a failed one is put back in front of the open batch and retried
// with it. Revoke, shutdown and a lost assignment wait for it first.
//
// It also stores the written offsets in the consumer group (committed in
// the background) so that the usual tools show its lag; it never reads them.
type BatchConsumer struct {
	cfg    Config
	bc     BatchConfig
	store  BatchStore
	logger *slog.Logger

	consumer *ckafka.Consumer
	dlq      *Producer

	liveMu sync.RWMutex
	live   *ckafka.Consumer

	// pending is the open batch; next its offsets.
	pending    []BatchRecord
	next       map[Partition]int64
	batchStart time.Time
	// inflight is the batch being written by the writer goroutine, if
	// any. Only the consuming goroutine starts and settles it.
	inflight *inflightWrite

	// assigned are the partitions the group gave this member; stored is,
	// per assigned partition, the offset the store holds (-1: none yet).
	assigned map[Partition]bool
	stored   map[Partition]int64
	// needAssign is set when the store could not say where to resume: the
	// partitions are owned but not yet consumed.
	needAssign atomic.Bool
	// outage is set while writes fail; retryAt is when to try again.
	outage atomic.Bool
	// kit and lag export the kit's metrics when BatchConfig.Registerer is
	// set (nil otherwise; their methods accept nil). heldBack is what the
	// held-back gauge says now.
	kit      *kitMetrics
	lag      *lagReporter
	heldBack bool
	// admin describes the assigned topics for their ids (topicIDs, topic →
	// id, replaced as a whole at each assignment: written batches share it).
	admin    *ckafka.AdminClient
	topicIDs map[string]string
	failures int
	retryAt  time.Time
	lastLag  time.Time
}

// NewBatchConsumer validates the configuration; Run connects.
func NewBatchConsumer(cfg Config, bc BatchConfig, store BatchStore) (*BatchConsumer, error) {
	cfg.setDefaults()
	bc.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := bc.Validate(); err != nil {
		return nil, fmt.Errorf("batch consumer %s: %w", bc.GroupID, err)
	}
	if store == nil {
		return nil, errors.New("batch consumer: nil store")
	}
	b := &BatchConsumer{cfg: cfg, bc: bc, store: store,
		logger: cfg.Logger.With("component", "batch-consumer", "group", bc.GroupID)}
	if bc.Registerer != nil {
		kit, err := newKitMetrics(bc.Registerer)
		if err != nil {
			return nil, fmt.Errorf("batch consumer %s: metrics: %w", bc.GroupID, err)
		}
		b.kit = kit
	}
	return b, nil
}

// Run consumes until ctx is cancelled, then writes the open batch (trying
// for up to WriteTimeout), leaves the group and returns nil; or returns the
// error that stopped it.
func (b *BatchConsumer) Run(ctx context.Context) error {
	if err := EnsureTopics(ctx, b.cfg, append(append([]string(nil), b.bc.Topics...), DeadLetterTopic(b.bc.GroupID))...); err != nil {
		return fmt.Errorf("batch consumer %s: %w", b.bc.GroupID, err)
	}
	dlq, err := NewProducer(b.cfg)
	if err != nil {
		return fmt.Errorf("batch consumer %s: dead-letter producer: %w", b.bc.GroupID, err)
	}
	b.dlq = dlq
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := dlq.Close(cctx); err != nil {
			b.logger.Error("close dead-letter producer", "err", err)
		}
	}()
	cm := b.cfg.configMap(ckafka.ConfigMap{
		// Eager: every partition is revoked (and its batch written) before
		// any is assigned again, so a new owner reads offsets the old one
		// has finished writing.
		"partition.assignment.strategy": "range",
		"session.timeout.ms":            int(b.bc.SessionTimeout.Milliseconds()),
		"heartbeat.interval.ms":         int(max(b.bc.SessionTimeout/5, 100*time.Millisecond).Milliseconds()),
		"max.poll.interval.ms":          int(max(5*time.Minute, 2*b.bc.WriteTimeout+time.Minute).Milliseconds()),
		"auto.offset.reset":             "earliest",
	}, ckafka.ConfigMap{
		"group.id": b.bc.GroupID,
		// The group's offsets are informational (lag tools): the offsets
		// of written batches are stored and committed in the background.
		"enable.auto.commit":       true,
		"enable.auto.offset.store": false,
	})
	c, err := ckafka.NewConsumer(&cm)
	if err != nil {
		return fmt.Errorf("batch consumer %s: new consumer: %w", b.bc.GroupID, err)
	}
	b.consumer = c
	logsDone := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); forwardLogs(b.logger, c.Logs(), logsDone) }()
	defer func() {
		b.liveMu.Lock()
		b.live = nil
		b.liveMu.Unlock()
		closeWithTimeout(func() {
			if err := c.Close(); err != nil {
				b.logger.Warn("close consumer", "err", err)
			}
		}, 10*time.Second, b.logger)
		close(logsDone)
		wg.Wait()
	}()
	// Describes the assigned topics (their ids). Closed before the
	// consumer, whose Close is deferred above.
	if admin, err := ckafka.NewAdminClientFromConsumer(c); err != nil {
		b.logger.Warn("no admin client: a recreated topic is told apart only by a stored offset past its end", "err", err)
	} else {
		b.admin = admin
		defer func() { admin.Close(); b.admin = nil }()
	}

	b.next = map[Partition]int64{}
	b.assigned = map[Partition]bool{}
	b.stored = map[Partition]int64{}
	if b.kit != nil {
		b.lag = newLagReporter(b.bc.GroupID, b.kit, b.bc.LagInterval)
		b.kit.start(b.bc.GroupID, b.bc.Topics)
	}
	if err := c.SubscribeTopics(b.bc.Topics, b.rebalance); err != nil {
		return fmt.Errorf("batch consumer %s: subscribe: %w", b.bc.GroupID, err)
	}
	// Stopped before the deferred Close above: no consumer call may follow
	// Close.
	defer b.lag.start(c)()
	b.liveMu.Lock()
	b.live = c
	b.liveMu.Unlock()
	b.logger.Info("batch consumer started", "topics", b.bc.Topics, "batch_size", b.bc.Size, "batch_interval", b.bc.Interval)

	for ctx.Err() == nil {
		switch ev := c.Poll(b.pollMs()).(type) {
		case *ckafka.Message:
			if !b.add(ctx, ev) {
				continue
			}
			if len(b.pending) >= b.bc.Size && !b.outage.Load() {
				b.flushAsync(ctx, "size")
			}
		case ckafka.Error:
			if ev.IsFatal() {
				b.flush(ctx, "shutdown")
				return fmt.Errorf("batch consumer %s: fatal kafka error: %w", b.bc.GroupID, ev)
			}
			b.logger.Warn("kafka consumer error", "err", ev)
		}
		b.settle(false)
		now := time.Now()
		if b.needAssign.Load() && !now.Before(b.retryAt) {
			b.assignFromStore(ctx)
		}
		if b.due(now) {
			reason := "interval"
			if len(b.pending) >= b.bc.Size {
				reason = "size"
			}
			if b.outage.Load() {
				b.flush(ctx, reason)
			} else {
				b.flushAsync(ctx, reason)
			}
		}
		if out := b.outage.Load(); out != b.heldBack {
			b.heldBack = out
			b.kit.setHeldBack(b.bc.GroupID, out)
		}
		if b.bc.OnLag != nil && now.Sub(b.lastLag) >= time.Second {
			b.lastLag = now
			b.reportLag()
		}
	}
	// Shutdown: write the open batch, retrying through a short outage.
	deadline := time.Now().Add(b.bc.WriteTimeout)
	for !b.flush(context.Background(), "shutdown") && time.Now().Before(deadline) {
		time.Sleep(min(time.Until(b.retryAt), time.Until(deadline), b.bc.MaxBackoff))
	}
	if len(b.pending) > 0 || len(b.next) > 0 {
		b.logger.Error("shutdown: open batch not written; it is read again at the next start", "records", len(b.pending))
	}
	b.logger.Info("batch consumer stopped")
	return nil
}

// pollMs waits at most until the open batch is due.
func (b *BatchConsumer) pollMs() int {
	if len(b.next) == 0 || b.outage.Load() {
		return 100
	}
	d := time.Until(b.batchStart.Add(b.bc.Interval))
	return int(max(0, min(100*time.Millisecond, d)).Milliseconds())
}

func (b *BatchConsumer) due(now time.Time) bool {
	if len(b.next) == 0 {
		return false
	}
	if b.outage.Load() {
		return !now.Before(b.retryAt)
	}
	return len(b.pending) >= b.bc.Size || now.Sub(b.batchStart) >= b.bc.Interval
}

// add puts one record into the open batch, or dead-letters it. It returns
// false when the record was not taken (not assigned, or shutdown while
// dead-lettering): its offset is not advanced.
func (b *BatchConsumer) add(ctx context.Context, m *ckafka.Message) bool {
	p := Partition{*m.TopicPartition.Topic, m.TopicPartition.Partition}
	if !b.assigned[p] {
		return false
	}
	off := int64(m.TopicPartition.Offset)
	if m.Value == nil {
		// A tombstone on a compacted topic (events.TopicConfigs) is no
		// event: it is read past, as the subscribers do.
		if len(b.next) == 0 {
			b.batchStart = time.Now()
		}
		b.next[p] = off + 1
		return true
	}
	e, err := b.bc.Decode(m.Value)
	if err != nil {
		if !b.deadLetter(ctx, m, err) {
			return false
		}
		if b.kit != nil {
			b.kit.deadLettered.WithLabelValues(b.bc.GroupID, p.Topic).Inc()
		}
		if b.bc.OnDeadLetter != nil {
			b.bc.OnDeadLetter(p.Topic, err)
		}
	} else {
		e.Key = string(m.Key)
		b.pending = append(b.pending, BatchRecord{Partition: p, Offset: off, Event: e})
	}
	if len(b.next) == 0 {
		b.batchStart = time.Now()
	}
	b.next[p] = off + 1
	return true
}

// inflightWrite is a batch handed to the writer goroutine.
type inflightWrite struct {
	batch  Batch
	reason string
	done   chan writeResult
}

type writeResult struct {
	err error
	d   time.Duration
}

// flush writes the open batch and waits for it (and for any write in
// flight before it). It returns true when nothing is left open.
func (b *BatchConsumer) flush(ctx context.Context, reason string) bool {
	if !b.settle(true) {
		// The write in flight failed: its batch is open again, in front
		// of what arrived since, and retried after the backoff.
		return false
	}
	if len(b.next) == 0 {
		return true
	}
	if b.outage.Load() && b.rewound(ctx) {
		return true
	}
	b.startWrite(ctx, reason)
	return b.settle(true) && len(b.next) == 0
}

// flushAsync hands the open batch to the writer and returns: the consumer
// reads the next batch while this one is written. It first waits for the
// previous write, so at most one is in flight and batches commit in order;
// when that one failed, its records join the open batch and nothing new is
// started (the outage's retries are synchronous).
func (b *BatchConsumer) flushAsync(ctx context.Context, reason string) {
	if b.bc.Sequential {
		b.flush(ctx, reason)
		return
	}
	if !b.settle(true) || len(b.next) == 0 {
		return
	}
	b.startWrite(ctx, reason)
}

// startWrite hands the open batch to a goroutine that writes it, and opens
// an empty one. There must be no write in flight.
func (b *BatchConsumer) startWrite(ctx context.Context, reason string) {
	w := &inflightWrite{batch: Batch{Records: b.pending, Next: b.next, TopicIDs: b.topicIDs}, reason: reason, done: make(chan writeResult, 1)}
	b.inflight = w
	b.pending = make([]BatchRecord, 0, b.bc.Size)
	b.next = map[Partition]int64{}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.bc.WriteTimeout)
	go func() {
		defer cancel()
		start := time.Now()
		err := b.store.Write(wctx, b.bc.GroupID, w.batch)
		w.done <- writeResult{err: err, d: time.Since(start)}
	}()
}

// settle collects the result of the write in flight: waiting for it when
// wait is set, else only if it is done. On success the offsets it stored
// become the consumer's; on failure its batch is put back in front of the
// open one (its records and offsets come first, and the open batch's
// offsets, later on each partition, win) and the outage begins. It returns
// false when the write it collected failed, or is still running.
func (b *BatchConsumer) settle(wait bool) bool {
	w := b.inflight
	if w == nil {
		return true
	}
	var res writeResult
	if wait {
		res = <-w.done
	} else {
		select {
		case res = <-w.done:
		default:
			return false
		}
	}
	b.inflight = nil
	batch := w.batch
	if res.err != nil {
		b.pending = append(batch.Records, b.pending...)
		for p, off := range b.next {
			batch.Next[p] = off
		}
		if len(b.next) == 0 {
			b.batchStart = time.Now()
		}
		b.next = batch.Next
		b.writeFailed(res.err, len(b.pending))
		return false
	}
	tps := make([]ckafka.TopicPartition, 0, len(batch.Next))
	for p, off := range batch.Next {
		if b.assigned[p] {
			b.stored[p] = off
		}
		topic := p.Topic
		tps = append(tps, ckafka.TopicPartition{Topic: &topic, Partition: p.Partition, Offset: ckafka.Offset(off)})
	}
	if b.outage.Load() {
		b.logger.Info("store available again: resuming", "records", len(batch.Records))
		b.outage.Store(false)
		b.failures = 0
		b.resumeAll()
	}
	if b.consumer != nil {
		// Informational: the group's committed offsets trail the store's.
		if _, err := b.consumer.StoreOffsets(tps); err != nil {
			b.logger.Debug("store offsets in the group", "err", err)
		}
	}
	if b.bc.OnBatch != nil {
		b.bc.OnBatch(BatchStats{Records: len(batch.Records), Duration: res.d, Reason: w.reason})
	}
	return true
}

// rewound checks, before the first write after an outage, that the store
// still holds the offsets this consumer wrote. A database restored from a
// backup, failed over to a replica that lagged, or run without durable
// commits (PostgreSQL's synchronous_commit=off) may come back without its
// last batches. Then the open batch is dropped and every partition is read
// again from the offsets the store does hold, so nothing is missing. It
// returns true when it rewound.
func (b *BatchConsumer) rewound(ctx context.Context) bool {
	ps := make([]Partition, 0, len(b.stored))
	for p, off := range b.stored {
		if off >= 0 {
			ps = append(ps, p)
		}
	}
	if len(ps) == 0 {
		return false
	}
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), min(b.bc.WriteTimeout, 10*time.Second))
	offs, err := b.store.Offsets(octx, b.bc.GroupID, ps)
	cancel()
	if err != nil {
		return false // still down: the write fails too and is retried
	}
	var behind []string
	for _, p := range ps {
		if o, ok := offs[p]; !ok || o < b.stored[p] {
			behind = append(behind, fmt.Sprintf("%s at %d, not %d", p, o, b.stored[p]))
			if ok {
				b.stored[p] = o
			} else {
				b.stored[p] = -1
			}
		}
	}
	if len(behind) == 0 {
		return false
	}
	b.logger.Error("the store came back without batches it had committed (restored, failed over, or not durable): reading them again", "partitions", behind)
	b.pending = nil
	b.next = map[Partition]int64{}
	b.outage.Store(false)
	b.failures = 0
	b.resumeAll()
	return true
}

// writeFailed starts or continues an outage: the open batch is held, the
// partitions paused, and the next try scheduled.
func (b *BatchConsumer) writeFailed(err error, records int) {
	if b.bc.OnWriteError != nil {
		b.bc.OnWriteError(err)
	}
	wait := b.backoff()
	if !b.outage.Load() {
		b.outage.Store(true)
		b.logger.Error("store write failed: holding the batch and retrying", "records", records, "retry_in", wait, "err", err)
		b.pauseAll()
	} else {
		b.logger.Warn("store still failing", "records", records, "retry_in", wait, "err", err)
	}
}

func (b *BatchConsumer) backoff() time.Duration {
	d := b.bc.InitialBackoff
	for i := 0; i < b.failures && d < b.bc.MaxBackoff; i++ {
		d *= 2
	}
	d = jitter(min(d, b.bc.MaxBackoff))
	b.failures++
	b.retryAt = time.Now().Add(d)
	return d
}

func (b *BatchConsumer) pauseAll() {
	if tps, err := b.consumer.Assignment(); err == nil && len(tps) > 0 {
		if err := b.consumer.Pause(tps); err != nil {
			b.logger.Warn("pause partitions", "err", err)
		}
	}
}

// resumeAll ends the pause of an outage, after the open batch was written.
// Pausing drops what librdkafka had fetched but not yet handed out, and
// resuming would go on from its fetch position, past those records: so each
// partition is first sought back to the offset the store now holds.
func (b *BatchConsumer) resumeAll() {
	tps, err := b.consumer.Assignment()
	if err != nil || len(tps) == 0 {
		return
	}
	for _, tp := range tps {
		off := ckafka.OffsetBeginning
		if o, ok := b.stored[Partition{*tp.Topic, tp.Partition}]; ok && o >= 0 {
			off = ckafka.Offset(o)
		}
		tp.Offset = off
		if err := b.consumer.Seek(tp, 0); err != nil {
			b.logger.Warn("seek after outage", "partition", fmt.Sprintf("%s/%d", *tp.Topic, tp.Partition), "err", err)
		}
	}
	if err := b.consumer.Resume(tps); err != nil {
		b.logger.Warn("resume partitions", "err", err)
	}
}

// rebalance writes the open batch before partitions go, and resumes from
// the store's offsets when they come.
func (b *BatchConsumer) rebalance(c *ckafka.Consumer, ev ckafka.Event) error {
	switch e := ev.(type) {
	case ckafka.AssignedPartitions:
		b.logger.Info("partitions assigned", "partitions", partitionList(e.Partitions))
		for _, tp := range e.Partitions {
			b.assigned[Partition{*tp.Topic, tp.Partition}] = true
		}
		b.lag.assign(e.Partitions)
		b.assignFromStore(context.Background())
	case ckafka.RevokedPartitions:
		b.lag.revoke(e.Partitions)
		if c.AssignmentLost() {
			// Another member may own them already: writing now could move
			// its offsets backwards. Drop the batch; it is read again.
			// A write in flight is waited for first: it was started
			// while they were ours, and a late commit could move the new
			// owner's offsets backwards.
			b.settle(true)
			b.logger.Warn("partitions lost: dropping the open batch", "partitions", partitionList(e.Partitions), "records", len(b.pending))
		} else {
			b.logger.Info("partitions revoked", "partitions", partitionList(e.Partitions))
			deadline := time.Now().Add(b.bc.WriteTimeout)
			for !b.flush(context.Background(), "revoke") && time.Now().Before(deadline) {
				time.Sleep(min(time.Until(b.retryAt), time.Until(deadline)))
			}
			if len(b.next) > 0 {
				b.logger.Error("partitions revoked: open batch not written; their next owner reads it again", "records", len(b.pending))
			}
		}
		b.pending = nil
		b.next = map[Partition]int64{}
		b.assigned = map[Partition]bool{}
		b.stored = map[Partition]int64{}
		b.needAssign.Store(false)
		if b.bc.OnAssignment != nil {
			b.bc.OnAssignment(nil)
		}
		// Nothing is held any more; the next write or offset read decides
		// whether the store is still down.
		b.outage.Store(false)
		b.failures = 0
		if err := c.Unassign(); err != nil {
			b.logger.Warn("unassign", "err", err)
		}
	}
	return nil
}

// assignFromStore reads the assigned partitions' offsets from the store and
// starts consuming them there. When the store does not answer, the
// partitions stay owned but unconsumed until a retry succeeds.
func (b *BatchConsumer) assignFromStore(ctx context.Context) {
	ps := make([]Partition, 0, len(b.assigned))
	for p := range b.assigned {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].Topic != ps[j].Topic {
			return ps[i].Topic < ps[j].Topic
		}
		return ps[i].Partition < ps[j].Partition
	})
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), min(b.bc.WriteTimeout, 10*time.Second))
	ids := b.describeTopicIDs(octx, ps)
	offs, recreated, err := b.storedOffsets(octx, ps, ids)
	cancel()
	if err != nil {
		if b.bc.OnWriteError != nil {
			b.bc.OnWriteError(err)
		}
		wait := b.backoff()
		if !b.needAssign.Load() {
			b.logger.Error("read offsets from the store: partitions wait until it answers", "retry_in", wait, "err", err)
			// Own them, consume nothing yet.
			if aerr := b.consumer.Assign([]ckafka.TopicPartition{}); aerr != nil {
				b.logger.Warn("assign", "err", aerr)
			}
		}
		b.needAssign.Store(true)
		return
	}
	b.failures = 0
	b.needAssign.Store(false)
	b.topicIDs = ids
	if len(recreated) > 0 {
		b.logger.Warn("topics deleted and created again since their offsets were stored (another topic id): reading them from the beginning",
			"partitions", fmt.Sprint(recreated))
	}
	tps := make([]ckafka.TopicPartition, 0, len(ps))
	for _, p := range ps {
		topic := p.Topic
		off := ckafka.OffsetBeginning
		b.stored[p] = -1
		if o, ok := offs[p]; ok {
			off = ckafka.Offset(o)
			b.stored[p] = o
			// An offset past the partition's end means the topic is not the
			// one the store read (recreated, or dev's in-memory broker
			// restarted): read the new one from its beginning.
			if _, high, err := b.consumer.QueryWatermarkOffsets(p.Topic, p.Partition, 5000); err == nil && o > high {
				b.logger.Warn("stored offset is past the end of the partition (topic recreated?): reading it from the beginning",
					"partition", p.String(), "stored", o, "end", high)
				off, b.stored[p] = ckafka.OffsetBeginning, -1
			}
		}
		tps = append(tps, ckafka.TopicPartition{Topic: &topic, Partition: p.Partition, Offset: off})
	}
	if err := b.consumer.Assign(tps); err != nil {
		b.logger.Error("assign", "err", err)
		return
	}
	b.logger.Info("resuming from the store's offsets", "offsets", offsetList(tps))
	if b.bc.OnAssignment != nil {
		b.bc.OnAssignment(ps)
	}
	if b.outage.Load() {
		b.pauseAll()
	}
}

// describeTopicIDs asks the brokers for the ids of ps's topics. Nil when
// they do not say (no admin client, an error, a broker without topic ids):
// then only a stored offset past a partition's end tells a recreated topic.
func (b *BatchConsumer) describeTopicIDs(ctx context.Context, ps []Partition) map[string]string {
	if b.admin == nil || len(ps) == 0 {
		return nil
	}
	var topics []string
	seen := map[string]bool{}
	for _, p := range ps {
		if !seen[p.Topic] {
			seen[p.Topic] = true
			topics = append(topics, p.Topic)
		}
	}
	res, err := b.admin.DescribeTopics(ctx, ckafka.NewTopicCollectionOfTopicNames(topics))
	if err != nil {
		b.logger.Warn("describe topics for their ids", "err", err)
		return nil
	}
	ids := make(map[string]string, len(topics))
	for _, d := range res.TopicDescriptions {
		if d.Error.Code() == ckafka.ErrNoError && d.TopicID != (ckafka.UUID{}) {
			ids[d.Name] = d.TopicID.String()
		}
	}
	return ids
}

// storedOffsets reads ps's offsets from the store. With a TopicIDStore and
// the topics' ids known, an offset stored under another id than its
// topic's now is left out (the partition is read from its beginning) and
// its partition returned in recreated.
func (b *BatchConsumer) storedOffsets(ctx context.Context, ps []Partition, ids map[string]string) (offs map[Partition]int64, recreated []Partition, err error) {
	ts, ok := b.store.(TopicIDStore)
	if !ok || ids == nil {
		offs, err = b.store.Offsets(ctx, b.bc.GroupID, ps)
		return offs, nil, err
	}
	stored, err := ts.OffsetsWithTopicIDs(ctx, b.bc.GroupID, ps)
	if err != nil {
		return nil, nil, err
	}
	offs = make(map[Partition]int64, len(stored))
	for p, so := range stored {
		if now := ids[p.Topic]; so.TopicID != "" && now != "" && so.TopicID != now {
			recreated = append(recreated, p)
			continue
		}
		offs[p] = so.Next
	}
	return offs, recreated, nil
}

func offsetList(tps []ckafka.TopicPartition) []string {
	out := make([]string, len(tps))
	for i, tp := range tps {
		out[i] = fmt.Sprintf("%s/%d@%v", *tp.Topic, tp.Partition, tp.Offset)
	}
	return out
}

// reportLag reports, per assigned partition, the broker's high watermark
// (as last seen by the fetcher) minus the offset the store holds.
func (b *BatchConsumer) reportLag() {
	for p := range b.assigned {
		low, high, err := b.consumer.GetWatermarkOffsets(p.Topic, p.Partition)
		if err != nil || high < 0 {
			continue
		}
		pos, ok := b.stored[p]
		if !ok || pos < 0 {
			pos = max(low, 0)
		}
		b.bc.OnLag(p, max(high-pos, 0))
	}
}

// Ready reports whether Run is consuming, the store is answering, and the
// brokers answer a metadata request within ctx: what /readyz serves.
func (b *BatchConsumer) Ready(ctx context.Context) error {
	b.liveMu.RLock()
	defer b.liveMu.RUnlock()
	if b.live == nil {
		return fmt.Errorf("batch consumer %s: %w", b.bc.GroupID, ErrNotRunning)
	}
	if b.outage.Load() {
		return fmt.Errorf("batch consumer %s: %w", b.bc.GroupID, ErrStoreUnavailable)
	}
	if b.needAssign.Load() {
		return fmt.Errorf("batch consumer %s: %w (offsets)", b.bc.GroupID, ErrStoreUnavailable)
	}
	timeout := 5 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	if timeout <= 0 {
		return context.DeadlineExceeded
	}
	if _, err := b.live.GetMetadata(nil, false, int(timeout.Milliseconds())); err != nil {
		return fmt.Errorf("batch consumer %s: kafka metadata: %w", b.bc.GroupID, err)
	}
	return nil
}

// ErrStoreUnavailable is what Ready reports while writes to the store fail.
var ErrStoreUnavailable = errors.New("store unavailable")

// GroupID is the consumer group.
func (b *BatchConsumer) GroupID() string { return b.bc.GroupID }

// DeadLetterTopic is where records that do not decode are written.
func (b *BatchConsumer) DeadLetterTopic() string { return DeadLetterTopic(b.bc.GroupID) }

// deadLetter writes a record that did not decode to the group's dead-letter
// topic with the usual headers (dlq-attempts 0), retrying until the broker
// acknowledges it. It returns false when ctx ended first.
func (b *BatchConsumer) deadLetter(ctx context.Context, m *ckafka.Message, cause error) bool {
	return writeDeadLetter(ctx, b.dlq, b.logger, m, deadLetterInfo{group: b.bc.GroupID, cause: cause},
		b.bc.InitialBackoff, b.bc.MaxBackoff)
}

package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// Dead-letter headers, set on every record written to "<group-id>.dlq"
// besides the original record's own headers, key and value (so a record can be
// re-processed by producing it back to its original topic unchanged). Values
// are UTF-8 strings.
const (
	HeaderDLQTopic     = "dlq-original-topic"
	HeaderDLQPartition = "dlq-original-partition"
	HeaderDLQOffset    = "dlq-original-offset"
	HeaderDLQGroup     = "dlq-consumer-group"
	HeaderDLQError     = "dlq-error"
	// HeaderDLQAttempts is how many times the handler ran: 0 for a record
	// that could not be decoded.
	HeaderDLQAttempts = "dlq-attempts"
	HeaderDLQFailedAt = "dlq-failed-at"
)

// DeadLetterTopic names the dead-letter topic of a consumer group.
func DeadLetterTopic(groupID string) string { return groupID + ".dlq" }

// Outcome is what became of one record.
type Outcome string

const (
	OutcomeHandled      Outcome = "handled"
	OutcomeDeadLettered Outcome = "dead_lettered"
)

// Result reports one finished record to SubscriberConfig.OnResult.
type Result struct {
	Topic     string
	Partition int32
	Offset    int64
	EventID   string // empty when the record could not be decoded
	Outcome   Outcome
	Attempts  int
	Err       error // the last handler or decode error; nil when handled
	Duration  time.Duration
}

// SubscriberConfig configures one consumer group member.
type SubscriberConfig struct {
	// GroupID is the consumer group. It is part of a subscriber's identity:
	// a renamed group starts again from the oldest retained record.
	GroupID string
	// Topics to subscribe to.
	Topics []string
	// CommitEvery commits stored offsets after this many handled records
	// (default 5). The commit runs in the background while the next records
	// are handled, and the next commit waits for it, so a commit's round trip
	// to the broker does not hold up the records behind it. A crash
	// re-delivers what was handled since the last finished commit: fewer
	// than 2×CommitEvery records per member.
	CommitEvery int
	// CommitInterval commits stored offsets this long after the last commit
	// when fewer than CommitEvery records arrived, so an idle consumer does
	// not sit on uncommitted work (default 5s).
	CommitInterval time.Duration
	// MaxAttempts is how many times a failing handler runs before the record
	// is dead-lettered (default 5), or, for an error marked Unavailable,
	// held back (see Unavailable).
	MaxAttempts int
	// InitialBackoff is the wait after the first failure; it doubles each
	// attempt, with ±20% jitter, up to MaxBackoff (defaults 200ms and 30s).
	// A record held back for an Unavailable dependency is tried again every
	// MaxBackoff.
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	// HandlerTimeout bounds one handler attempt (default 30s).
	HandlerTimeout time.Duration
	// SessionTimeout is how long the group waits for a silent member before
	// handing its partitions to others (default 10s; librdkafka's 45s is slow
	// to notice a crashed notifier).
	SessionTimeout time.Duration
	// OnResult, when set, is called after every record, from the consuming
	// goroutine: keep it fast (metrics, not I/O).
	OnResult func(Result)
}

func (c *SubscriberConfig) setDefaults() {
	if c.CommitEvery == 0 {
		c.CommitEvery = 5
	}
	if c.CommitInterval == 0 {
		c.CommitInterval = 5 * time.Second
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 5
	}
	if c.InitialBackoff == 0 {
		c.InitialBackoff = 200 * time.Millisecond
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.HandlerTimeout == 0 {
		c.HandlerTimeout = 30 * time.Second
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = 10 * time.Second
	}
}

// Validate reports the first setting that cannot work.
func (c SubscriberConfig) Validate() error {
	switch {
	case c.GroupID == "":
		return errors.New("missing consumer group id")
	case len(c.Topics) == 0:
		return errors.New("missing topics")
	case c.CommitEvery < 1:
		return errors.New("commit every: want ≥ 1")
	case c.MaxAttempts < 1:
		return errors.New("max attempts: want ≥ 1")
	case c.InitialBackoff < 0 || c.MaxBackoff < c.InitialBackoff:
		return errors.New("backoff: want 0 ≤ initial ≤ max")
	}
	return nil
}

// retryBudget is the longest one record can keep the consuming goroutine
// away from Poll.
func (c SubscriberConfig) retryBudget() time.Duration {
	total := time.Duration(c.MaxAttempts) * c.HandlerTimeout
	b := c.InitialBackoff
	for i := 1; i < c.MaxAttempts; i++ {
		total += b * 12 / 10
		b = min(2*b, c.MaxBackoff)
	}
	return total
}

// Subscriber runs a handler for every record of its topics as one member of a
// consumer group. See the package documentation for its guarantees.
type Subscriber struct {
	cfg     Config
	sc      SubscriberConfig
	handler Handler
	logger  *slog.Logger

	consumer *kafka.Consumer
	dlq      *Producer

	// liveMu guards live: the consumer while Run has it subscribed, for
	// Ready, which runs on other goroutines (a /readyz handler).
	liveMu sync.RWMutex
	live   *kafka.Consumer

	uncommitted int
	// behindFailed is set by a background commit that failed: its offsets
	// are still stored, and the interval commit carries them.
	behindFailed atomic.Bool
	lastCommit   time.Time
	// next is, per partition, the offset after the last record handled:
	// what the background commit commits.
	next map[partitionKey]int64
	// inflight is closed when the background commit in progress, if any,
	// has finished.
	inflight chan struct{}

	// outageSince is when a handler first reported a dependency Unavailable
	// beyond its retry budget; zero when none is. During an outage a record
	// gets one attempt before it is held back again.
	outageSince time.Time
	// resumeAt is when the partitions paused for an outage are resumed;
	// zero when none are paused.
	resumeAt time.Time
}

type partitionKey struct {
	topic     string
	partition int32
}

// NewSubscriber validates the configuration; Run connects.
func NewSubscriber(cfg Config, sc SubscriberConfig, h Handler) (*Subscriber, error) {
	cfg.setDefaults()
	sc.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("subscriber %s: %w", sc.GroupID, err)
	}
	if h == nil {
		return nil, errors.New("subscriber: nil handler")
	}
	return &Subscriber{cfg: cfg, sc: sc, handler: h,
		logger: cfg.Logger.With("component", "subscriber", "group", sc.GroupID)}, nil
}

// Run consumes until ctx is cancelled, then finishes the record in hand,
// commits and leaves the group. It returns nil after such a shutdown, or the
// error that stopped it (a fatal client error, or a failure to start).
func (s *Subscriber) Run(ctx context.Context) error {
	if err := EnsureTopics(ctx, s.cfg, append(append([]string(nil), s.sc.Topics...), DeadLetterTopic(s.sc.GroupID))...); err != nil {
		return fmt.Errorf("subscriber %s: %w", s.sc.GroupID, err)
	}
	dlq, err := NewProducer(s.cfg)
	if err != nil {
		return fmt.Errorf("subscriber %s: dead-letter producer: %w", s.sc.GroupID, err)
	}
	s.dlq = dlq
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := dlq.Close(cctx); err != nil {
			s.logger.Error("close dead-letter producer", "err", err)
		}
	}()

	maxPoll := max(5*time.Minute, s.sc.retryBudget()+time.Minute)
	cm := s.cfg.configMap(kafka.ConfigMap{
		// range balances each topic on its own. cooperative-sticky balances
		// the total per member, which for a group reading two topics left
		// one of three notifiers without any user_account_created partition
		// (measured in docs/scaling.md). The price is an eager rebalance: all
		// partitions are revoked (and committed) and reassigned at once.
		"partition.assignment.strategy": "range",
		"session.timeout.ms":            int(s.sc.SessionTimeout.Milliseconds()),
		"heartbeat.interval.ms":         int(max(s.sc.SessionTimeout/5, 100*time.Millisecond).Milliseconds()),
		"max.poll.interval.ms":          int(maxPoll.Milliseconds()),
		// A group added later reads the history the topics still retain.
		"auto.offset.reset": "earliest",
	}, kafka.ConfigMap{
		"group.id":                 s.sc.GroupID,
		"enable.auto.commit":       false,
		"enable.auto.offset.store": false,
	})
	c, err := kafka.NewConsumer(&cm)
	if err != nil {
		return fmt.Errorf("subscriber %s: new consumer: %w", s.sc.GroupID, err)
	}
	s.consumer = c
	logsDone := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); forwardLogs(s.logger, c.Logs(), logsDone) }()
	defer func() {
		s.liveMu.Lock()
		s.live = nil
		s.liveMu.Unlock()
		closeWithTimeout(func() {
			if err := c.Close(); err != nil {
				s.logger.Warn("close consumer", "err", err)
			}
		}, 10*time.Second, s.logger)
		close(logsDone)
		wg.Wait()
	}()

	if err := c.SubscribeTopics(s.sc.Topics, s.rebalance); err != nil {
		return fmt.Errorf("subscriber %s: subscribe: %w", s.sc.GroupID, err)
	}
	s.liveMu.Lock()
	s.live = c
	s.liveMu.Unlock()
	s.lastCommit = time.Now()
	s.next = map[partitionKey]int64{}
	s.logger.Info("subscriber started", "topics", s.sc.Topics)
	for ctx.Err() == nil {
		switch ev := c.Poll(100).(type) {
		case *kafka.Message:
			if !s.process(ctx, ev) {
				// Shut down in the middle of retrying: the record stays
				// uncommitted and is re-delivered to whoever owns it next.
				continue
			}
			s.uncommitted++
			if s.uncommitted >= s.sc.CommitEvery {
				s.commitBehind()
			}
		case kafka.Error:
			if ev.IsFatal() {
				s.commit("fatal")
				return fmt.Errorf("subscriber %s: fatal kafka error: %w", s.sc.GroupID, ev)
			}
			s.logger.Warn("kafka consumer error", "err", ev)
		}
		if !s.resumeAt.IsZero() && !time.Now().Before(s.resumeAt) {
			s.resume()
		}
		if (s.uncommitted > 0 || s.behindFailed.Load()) && time.Since(s.lastCommit) >= s.sc.CommitInterval {
			s.commit("interval")
		}
	}
	s.commit("shutdown")
	s.logger.Info("subscriber stopped")
	return nil
}

// ErrNotRunning is what Ready reports before Run has subscribed and after
// it has stopped.
var ErrNotRunning = errors.New("subscriber is not running")

// Ready reports whether Run is consuming and the brokers answer a metadata
// request within ctx (5s without a deadline): what a worker's /readyz
// serves. It may be called from any goroutine. A member that has no
// partitions, because the group has more members than the topics have
// partitions, is still ready: it takes over when another member leaves.
func (s *Subscriber) Ready(ctx context.Context) error {
	s.liveMu.RLock()
	defer s.liveMu.RUnlock()
	if s.live == nil {
		return fmt.Errorf("subscriber %s: %w", s.sc.GroupID, ErrNotRunning)
	}
	timeout := 5 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	if timeout <= 0 {
		return context.DeadlineExceeded
	}
	if _, err := s.live.GetMetadata(nil, false, int(timeout.Milliseconds())); err != nil {
		return fmt.Errorf("subscriber %s: kafka metadata: %w", s.sc.GroupID, err)
	}
	return nil
}

// rebalance commits what was handled before partitions are taken away, so
// their next owner does not handle it again.
func (s *Subscriber) rebalance(c *kafka.Consumer, ev kafka.Event) error {
	switch e := ev.(type) {
	case kafka.AssignedPartitions:
		s.logger.Info("partitions assigned", "partitions", partitionList(e.Partitions))
	case kafka.RevokedPartitions:
		if c.AssignmentLost() {
			// Another member may already own them: a commit now could move
			// its position backwards or forwards. Leave it.
			s.logger.Warn("partitions lost", "partitions", partitionList(e.Partitions))
			s.waitCommit()
			s.forget(e.Partitions)
			s.uncommitted = 0
			return nil
		}
		s.logger.Info("partitions revoked", "partitions", partitionList(e.Partitions))
		s.commit("revoke")
		s.forget(e.Partitions)
	}
	return nil
}

// forget drops partitions that are no longer this member's from the
// background commits.
func (s *Subscriber) forget(tps []kafka.TopicPartition) {
	for _, tp := range tps {
		if tp.Topic != nil {
			delete(s.next, partitionKey{*tp.Topic, tp.Partition})
		}
	}
}

// commitBehind starts committing the records handled so far, in the
// background, once the previous background commit has finished. The offsets
// are taken now, so exactly what was handled by now is committed.
func (s *Subscriber) commitBehind() {
	s.waitCommit()
	offsets := make([]kafka.TopicPartition, 0, len(s.next))
	for k, off := range s.next {
		topic := k.topic
		offsets = append(offsets, kafka.TopicPartition{Topic: &topic, Partition: k.partition, Offset: kafka.Offset(off)})
	}
	s.uncommitted = 0
	s.lastCommit = time.Now()
	if len(offsets) == 0 {
		return
	}
	done := make(chan struct{})
	s.inflight = done
	go func() {
		defer close(done)
		_, err := s.consumer.CommitOffsets(offsets)
		var kerr kafka.Error
		if err != nil && !(errors.As(err, &kerr) && kerr.Code() == kafka.ErrNoOffset) {
			// The offsets stay stored; the next commit carries them.
			s.behindFailed.Store(true)
			s.logger.Warn("commit offsets", "reason", "every", "err", err)
		}
	}()
}

// waitCommit waits for the background commit in progress, if any.
func (s *Subscriber) waitCommit() {
	if s.inflight != nil {
		<-s.inflight
		s.inflight = nil
	}
}

// commit commits the stored offsets and waits for the broker's answer,
// after the background commit in progress: commits never overtake each
// other, so a committed offset never moves backwards.
func (s *Subscriber) commit(reason string) {
	s.waitCommit()
	if s.uncommitted == 0 && !s.behindFailed.Load() && reason != "revoke" && reason != "shutdown" {
		return
	}
	_, err := s.consumer.Commit()
	var kerr kafka.Error
	if errors.As(err, &kerr) && kerr.Code() == kafka.ErrNoOffset {
		err = nil
	}
	// Failed or not, the next interval commit is CommitInterval away: a
	// broker outage gets one warning per interval, not one per poll.
	s.lastCommit = time.Now()
	if err != nil {
		// The stored offsets stay stored; the next commit carries them.
		s.logger.Warn("commit offsets", "reason", reason, "err", err)
		return
	}
	s.uncommitted = 0
	s.behindFailed.Store(false)
}

// process handles one record to completion: handled, or dead-lettered. It
// returns false only when ctx was cancelled before that, in which case the
// offset is not stored.
func (s *Subscriber) process(ctx context.Context, m *kafka.Message) bool {
	start := time.Now()
	res := Result{Topic: *m.TopicPartition.Topic, Partition: m.TopicPartition.Partition, Offset: int64(m.TopicPartition.Offset)}
	e, err := Decode(m.Value)
	if err == nil {
		e.Key = string(m.Key)
		res.EventID = e.ID
		res.Attempts, err = s.handle(ctx, m, e)
		if err != nil && ctx.Err() != nil && !IsPermanent(err) && res.Attempts < s.sc.MaxAttempts {
			return false
		}
		if IsUnavailable(err) {
			s.holdBack(m, e, err)
			return false
		}
		if err == nil && !s.outageSince.IsZero() {
			s.logger.Info("dependency available again: resuming", "unavailable_for", time.Since(s.outageSince).Round(time.Millisecond))
			s.outageSince = time.Time{}
		}
	}
	if err != nil {
		res.Outcome, res.Err = OutcomeDeadLettered, err
		if !s.deadLetter(ctx, m, res) {
			return false
		}
	} else {
		res.Outcome = OutcomeHandled
	}
	if _, serr := s.consumer.StoreMessage(m); serr != nil {
		// The partition was revoked meanwhile; its next owner re-handles it.
		s.logger.Warn("store offset", "topic", res.Topic, "partition", res.Partition, "offset", res.Offset, "err", serr)
	} else {
		s.next[partitionKey{res.Topic, res.Partition}] = res.Offset + 1
	}
	res.Duration = time.Since(start)
	if s.sc.OnResult != nil {
		s.sc.OnResult(res)
	}
	return true
}

// handle runs the handler with retries. It returns the attempts made and the
// last error (nil when handled).
func (s *Subscriber) handle(ctx context.Context, m *kafka.Message, e Event) (int, error) {
	backoff := s.sc.InitialBackoff
	for attempt := 1; ; attempt++ {
		d := Delivery{Topic: *m.TopicPartition.Topic, Partition: m.TopicPartition.Partition, Offset: int64(m.TopicPartition.Offset), Attempt: attempt}
		err := s.runHandler(ctx, d, e)
		if err == nil {
			return attempt, nil
		}
		if IsPermanent(err) || attempt >= s.sc.MaxAttempts {
			return attempt, err
		}
		if IsUnavailable(err) && !s.outageSince.IsZero() {
			// Still down: hold the record back now rather than spend
			// another retry budget away from Poll.
			return attempt, err
		}
		wait := jitter(backoff)
		s.logger.Warn("handler failed; retrying", "topic", d.Topic, "partition", d.Partition, "offset", d.Offset,
			"event_id", e.ID, "attempt", attempt, "retry_in", wait, "err", err)
		select {
		case <-ctx.Done():
			return attempt, err
		case <-time.After(wait):
		}
		backoff = min(2*backoff, s.sc.MaxBackoff)
	}
}

// holdBack keeps a record whose handler reported a dependency Unavailable:
// it rewinds the record's partition to it, so it is read again, and pauses
// every assigned partition until MaxBackoff from now. The loop goes on
// polling meanwhile, which keeps the member in the group and runs
// rebalances; a record fetched before the pause, or from a partition
// assigned since, gets one attempt and is held back the same way. The
// record's offset is not stored, so nothing past it is committed.
func (s *Subscriber) holdBack(m *kafka.Message, e Event, err error) {
	tp := m.TopicPartition
	if serr := s.consumer.Seek(kafka.TopicPartition{Topic: tp.Topic, Partition: tp.Partition, Offset: tp.Offset}, 0); serr != nil {
		// Not assigned any more: its next owner reads it again.
		s.logger.Warn("rewind to held-back record", "topic", *tp.Topic, "partition", tp.Partition, "offset", int64(tp.Offset), "err", serr)
	}
	now := time.Now()
	if s.outageSince.IsZero() {
		s.outageSince = now
		s.logger.Error("dependency unavailable: holding records back until it answers",
			"topic", *tp.Topic, "partition", tp.Partition, "offset", int64(tp.Offset), "event_id", e.ID, "retry_every", s.sc.MaxBackoff, "err", err)
	} else {
		s.logger.Warn("dependency still unavailable", "topic", *tp.Topic, "partition", tp.Partition, "offset", int64(tp.Offset),
			"event_id", e.ID, "unavailable_for", now.Sub(s.outageSince).Round(time.Millisecond), "err", err)
	}
	s.resumeAt = now.Add(jitter(s.sc.MaxBackoff))
	if tps, aerr := s.consumer.Assignment(); aerr == nil && len(tps) > 0 {
		if perr := s.consumer.Pause(tps); perr != nil {
			s.logger.Warn("pause partitions", "err", perr)
		}
	}
}

// resume ends the pause holdBack began, on every partition assigned now.
func (s *Subscriber) resume() {
	s.resumeAt = time.Time{}
	if tps, err := s.consumer.Assignment(); err == nil && len(tps) > 0 {
		if err := s.consumer.Resume(tps); err != nil {
			s.logger.Warn("resume partitions", "err", err)
		}
	}
}

// runHandler runs one attempt. Shutdown does not cancel it (the record in
// hand is finished), but a panic is turned into an error so one bad record
// cannot crash-loop the consumer.
func (s *Subscriber) runHandler(ctx context.Context, d Delivery, e Event) (err error) {
	hctx, cancel := context.WithTimeout(context.WithValue(context.WithoutCancel(ctx), deliveryKey{}, d), s.sc.HandlerTimeout)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panic: %v", r)
		}
	}()
	return s.handler(hctx, e)
}

// deadLetter writes the record to the group's dead-letter topic, retrying
// until the broker acknowledges it: a record is never skipped unrecorded. It
// returns false when ctx ended first.
func (s *Subscriber) deadLetter(ctx context.Context, m *kafka.Message, res Result) bool {
	topic := DeadLetterTopic(s.sc.GroupID)
	headers := append([]kafka.Header(nil), m.Headers...)
	headers = append(headers,
		kafka.Header{Key: HeaderDLQTopic, Value: []byte(res.Topic)},
		kafka.Header{Key: HeaderDLQPartition, Value: []byte(strconv.Itoa(int(res.Partition)))},
		kafka.Header{Key: HeaderDLQOffset, Value: []byte(strconv.FormatInt(res.Offset, 10))},
		kafka.Header{Key: HeaderDLQGroup, Value: []byte(s.sc.GroupID)},
		kafka.Header{Key: HeaderDLQError, Value: []byte(truncateError(res.Err))},
		kafka.Header{Key: HeaderDLQAttempts, Value: []byte(strconv.Itoa(res.Attempts))},
		kafka.Header{Key: HeaderDLQFailedAt, Value: []byte(time.Now().UTC().Format(time.RFC3339Nano))},
	)
	backoff := s.sc.InitialBackoff
	for {
		msg := &kafka.Message{
			TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: kafka.PartitionAny},
			Key:            m.Key, Value: m.Value, Headers: headers,
		}
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		err := s.dlq.produce(pctx, msg)
		cancel()
		if err == nil {
			s.logger.Error("record dead-lettered", "topic", res.Topic, "partition", res.Partition, "offset", res.Offset,
				"event_id", res.EventID, "attempts", res.Attempts, "err", res.Err, "dlq", topic)
			return true
		}
		s.logger.Error("dead-letter publish failed; retrying", "dlq", topic, "err", err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(jitter(backoff)):
		}
		backoff = min(2*backoff, s.sc.MaxBackoff)
	}
}

func truncateError(err error) string {
	s := err.Error()
	if len(s) > 1024 {
		s = s[:1024] + "…"
	}
	return s
}

func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

func partitionList(tps []kafka.TopicPartition) []string {
	out := make([]string, len(tps))
	for i, tp := range tps {
		out[i] = fmt.Sprintf("%s/%d", *tp.Topic, tp.Partition)
	}
	return out
}

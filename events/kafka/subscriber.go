package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"go.opentelemetry.io/otel/trace"

	"github.com/countersign/countersign/events"
)

// Outcome is what became of one record.
type Outcome string

const (
	OutcomeHandled      Outcome = "handled"
	OutcomeDeadLettered Outcome = "dead_lettered"
	// OutcomeSkipped: a tombstone (a record without a value), which is no
	// event: the handler is not called.
	OutcomeSkipped Outcome = "skipped"
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

// Subscriber runs a handler for every record of its topics as one member of a
// consumer group. See the package documentation for its guarantees.
type Subscriber struct {
	cfg     Config
	sc      SubscriberConfig
	handler events.Handler
	logger  *slog.Logger
	tracer  trace.Tracer

	consumer *ckafka.Consumer
	dlq      *Producer
	// kit holds the kit's metrics when SubscriberConfig.Registerer is set;
	// lag, while Run runs, measures the consumer lag (lag.go).
	kit *kitMetrics
	lag *lagReporter

	// liveMu guards live: the consumer while Run has it subscribed, for
	// Ready, which runs on other goroutines (a /readyz handler).
	liveMu sync.RWMutex
	live   *ckafka.Consumer

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
func NewSubscriber(cfg Config, sc SubscriberConfig, h events.Handler) (*Subscriber, error) {
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
	s := &Subscriber{cfg: cfg, sc: sc, handler: h, tracer: tracer(cfg.TracerProvider),
		logger: cfg.Logger.With("component", "subscriber", "group", sc.GroupID)}
	if sc.Registerer != nil {
		m, err := newKitMetrics(sc.Registerer)
		if err != nil {
			return nil, fmt.Errorf("subscriber %s: metrics: %w", sc.GroupID, err)
		}
		s.kit = m
	}
	return s, nil
}

// Run consumes until ctx is cancelled, then finishes the record in hand,
// commits and leaves the group. It returns nil after such a shutdown, or the
// error that stopped it (a fatal client error, or a failure to start).
func (s *Subscriber) Run(ctx context.Context) error {
	if !s.sc.TopicsReady {
		if err := EnsureTopics(ctx, s.cfg, append(append([]string(nil), s.sc.Topics...), DeadLetterTopic(s.sc.GroupID))...); err != nil {
			return fmt.Errorf("subscriber %s: %w", s.sc.GroupID, err)
		}
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
	cm := s.cfg.configMap(ckafka.ConfigMap{
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
	}, ckafka.ConfigMap{
		"group.id":                 s.sc.GroupID,
		"enable.auto.commit":       false,
		"enable.auto.offset.store": false,
	})
	c, err := ckafka.NewConsumer(&cm)
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

	if s.kit != nil {
		s.lag = newLagReporter(s.sc.GroupID, s.kit, s.sc.LagInterval)
		s.kit.start(s.sc.GroupID, s.sc.Topics)
	}
	if err := c.SubscribeTopics(s.sc.Topics, s.rebalance); err != nil {
		return fmt.Errorf("subscriber %s: subscribe: %w", s.sc.GroupID, err)
	}
	// Stopped before the deferred Close above: no consumer call may follow
	// Close.
	defer s.lag.start(c)()
	s.liveMu.Lock()
	s.live = c
	s.liveMu.Unlock()
	s.lastCommit = time.Now()
	s.next = map[partitionKey]int64{}
	s.logger.Info("subscriber started", "topics", s.sc.Topics)
	for ctx.Err() == nil {
		switch ev := c.Poll(100).(type) {
		case *ckafka.Message:
			if !s.process(ctx, ev) {
				// Shut down in the middle of retrying: the record stays
				// uncommitted and is re-delivered to whoever owns it next.
				continue
			}
			s.uncommitted++
			if s.uncommitted >= s.sc.CommitEvery {
				s.commitBehind()
			}
		case ckafka.Error:
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
func (s *Subscriber) rebalance(c *ckafka.Consumer, ev ckafka.Event) error {
	switch e := ev.(type) {
	case ckafka.AssignedPartitions:
		s.logger.Info("partitions assigned", "partitions", partitionList(e.Partitions))
		s.lag.assign(e.Partitions)
	case ckafka.RevokedPartitions:
		if c.AssignmentLost() {
			// Another member may already own them: a commit now could move
			// its position backwards or forwards. Leave it.
			s.logger.Warn("partitions lost", "partitions", partitionList(e.Partitions))
			s.waitCommit()
			s.forget(e.Partitions)
			s.lag.revoke(e.Partitions)
			s.uncommitted = 0
			return nil
		}
		s.logger.Info("partitions revoked", "partitions", partitionList(e.Partitions))
		s.commit("revoke")
		s.forget(e.Partitions)
		s.lag.revoke(e.Partitions)
	}
	return nil
}

// forget drops partitions that are no longer this member's from the
// background commits.
func (s *Subscriber) forget(tps []ckafka.TopicPartition) {
	for _, tp := range tps {
		if tp.Topic != nil {
			delete(s.next, partitionKey{*tp.Topic, tp.Partition})
		}
	}
}

func partitionList(tps []ckafka.TopicPartition) []string {
	out := make([]string, len(tps))
	for i, tp := range tps {
		out[i] = fmt.Sprintf("%s/%d", *tp.Topic, tp.Partition)
	}
	return out
}

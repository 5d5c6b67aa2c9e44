package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/countersign/countersign/events"
)

var _ events.Publisher = (*Producer)(nil)

// Producer is an idempotent Kafka producer with acks=all. Concurrent Publish
// calls are batched into shared produce requests by librdkafka (linger.ms).
type Producer struct {
	p      *ckafka.Producer
	logger *slog.Logger
	done   chan struct{}
	wg     sync.WaitGroup

	closeOnce sync.Once
}

// ErrClosed is returned by Publish after Close.
var ErrClosed = errors.New("producer closed")

// NewProducer connects a producer. It does not wait for the brokers: the first
// Publish does (bounded by its context), and Ping checks reachability.
func NewProducer(cfg Config) (*Producer, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cm := cfg.configMap(ckafka.ConfigMap{
		// Requests from many concurrent Publish calls are gathered for up to
		// 2 ms: a register request waits at most that much longer, and the
		// broker sees one produce request per batch instead of one per user.
		"linger.ms":          2,
		"batch.num.messages": 10000,
		// A record the broker has not acknowledged within this time is
		// reported failed; Publish's context usually ends sooner.
		"message.timeout.ms": 30000,
		"compression.type":   "lz4",
		// A delivery report is read for its error only (see produce): by
		// default confluent-kafka-go copies each record's key and value back
		// from C into the report, an allocation and a copy per Publish.
		"go.delivery.report.fields": "none",
	}, ckafka.ConfigMap{
		"enable.idempotence": true,
		"acks":               "all",
		// Delivery reports arrive on the per-call channel passed to Produce.
		"go.delivery.reports": true,
	})
	p, err := ckafka.NewProducer(&cm)
	if err != nil {
		return nil, fmt.Errorf("new producer: %w", err)
	}
	pr := &Producer{p: p, logger: cfg.Logger.With("component", "kafka-producer"), done: make(chan struct{})}
	pr.wg.Add(2)
	go func() { defer pr.wg.Done(); forwardLogs(pr.logger, p.Logs(), pr.done) }()
	go func() { defer pr.wg.Done(); pr.watchErrors() }()
	return pr, nil
}

// watchErrors drains client-level events (errors not tied to one record).
func (pr *Producer) watchErrors() {
	for {
		select {
		case ev, ok := <-pr.p.Events():
			if !ok {
				return
			}
			if err, isErr := ev.(ckafka.Error); isErr {
				// librdkafka has already logged non-fatal errors (connection
				// refused, brokers down) through the log channel, and retries
				// them itself; only a fatal one is news.
				level := slog.LevelDebug
				if err.IsFatal() {
					level = slog.LevelError
				}
				pr.logger.Log(context.Background(), level, "kafka producer error", "err", err, "fatal", err.IsFatal())
			}
		case <-pr.done:
			return
		}
	}
}

// Publish sends e to the topic named by its type, keyed by e.Key, and waits
// for the broker's acknowledgement or the end of ctx. When ctx ends first the
// event may still be delivered later: callers treat it as not published, and
// subscribers dedupe on the event id.
func (pr *Producer) Publish(ctx context.Context, e events.Event) error {
	value, err := e.Marshal()
	if err != nil {
		return fmt.Errorf("publish %s: %w", e.Type, err)
	}
	msg := &ckafka.Message{
		TopicPartition: ckafka.TopicPartition{Topic: &e.Type, Partition: ckafka.PartitionAny},
		Key:            []byte(e.Key),
		Value:          value,
		Headers:        []ckafka.Header{{Key: events.HeaderContentType, Value: []byte(events.ContentType)}},
	}
	if err := pr.produce(ctx, msg); err != nil {
		return fmt.Errorf("publish %s: %w", e.Type, err)
	}
	return nil
}

// PublishTombstone sends a record with key and no value to topic and waits
// for the broker's acknowledgement: on a compacted topic it deletes the key
// (every earlier record of it) once the cleaner has run, and readers of
// the log see it as the key's deletion meanwhile.
func (pr *Producer) PublishTombstone(ctx context.Context, topic, key string) error {
	msg := &ckafka.Message{
		TopicPartition: ckafka.TopicPartition{Topic: &topic, Partition: ckafka.PartitionAny},
		Key:            []byte(key),
	}
	if err := pr.produce(ctx, msg); err != nil {
		return fmt.Errorf("publish tombstone to %s: %w", topic, err)
	}
	return nil
}

// produce sends one record and waits for its delivery report.
func (pr *Producer) produce(ctx context.Context, msg *ckafka.Message) error {
	select {
	case <-pr.done:
		return ErrClosed
	default:
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// Buffered so a report arriving after ctx ended never blocks librdkafka.
	report := make(chan ckafka.Event, 1)
	for {
		err := pr.p.Produce(msg, report)
		if err == nil {
			break
		}
		var kerr ckafka.Error
		if errors.As(err, &kerr) && kerr.Code() == ckafka.ErrQueueFull {
			// Local queue full: back-pressure, wait for room rather than fail.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(5 * time.Millisecond):
				continue
			}
		}
		return err
	}
	select {
	case ev := <-report:
		m, ok := ev.(*ckafka.Message)
		if !ok {
			return fmt.Errorf("unexpected delivery report %T", ev)
		}
		return m.TopicPartition.Error
	case <-ctx.Done():
		return fmt.Errorf("waiting for acknowledgement: %w", ctx.Err())
	}
}

// Ping asks the cluster for its metadata: nil means a broker answered.
func (pr *Producer) Ping(ctx context.Context) error {
	timeout := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if timeout <= 0 {
		return context.DeadlineExceeded
	}
	if _, err := pr.p.GetMetadata(nil, false, int(timeout.Milliseconds())); err != nil {
		return fmt.Errorf("kafka metadata: %w", err)
	}
	return nil
}

// Close waits for in-flight records until ctx ends, then closes the client.
// It returns an error naming how many records were left undelivered.
func (pr *Producer) Close(ctx context.Context) error {
	var err error
	pr.closeOnce.Do(func() {
		for pr.p.Len() > 0 && ctx.Err() == nil {
			pr.p.Flush(100)
		}
		if n := pr.p.Len(); n > 0 {
			err = fmt.Errorf("close producer: %d records not delivered", n)
		}
		close(pr.done)
		closeWithTimeout(pr.p.Close, 10*time.Second, pr.logger)
		pr.wg.Wait()
	})
	return err
}

// closeWithTimeout guards against librdkafka's known Close hangs in some
// fatal-error paths (confluent-kafka-go #1016, #463).
func closeWithTimeout(closeFn func(), d time.Duration, logger *slog.Logger) {
	done := make(chan struct{})
	go func() { closeFn(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		logger.Error("kafka client close did not return in time; abandoning it", "after", d)
	}
}

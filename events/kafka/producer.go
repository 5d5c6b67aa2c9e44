package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"go.opentelemetry.io/otel/trace"

	"github.com/countersign/countersign/events"
)

var _ events.Publisher = (*Producer)(nil)

// Producer is an idempotent Kafka producer with acks=all. Concurrent Publish
// calls are batched into shared produce requests by librdkafka (linger.ms).
type Producer struct {
	p      *ckafka.Producer
	logger *slog.Logger
	tracer trace.Tracer
	health *reachability
	done   chan struct{}
	wg     sync.WaitGroup
	// probing counts the goroutines that call into the client (the prober,
	// Ping's metadata requests): they must have returned before the client
	// is closed. closed, under closeMu, stops new ones.
	probing sync.WaitGroup
	closeMu sync.Mutex
	closed  bool

	closeOnce sync.Once
}

var (
	// valueBuffers holds the buffers Publish encodes events into.
	valueBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}
	// contentTypeHeader is every event's header; confluent-kafka-go only
	// reads it (it copies headers into librdkafka).
	contentTypeHeader = []ckafka.Header{{Key: events.HeaderContentType, Value: []byte(events.ContentType)}}
)

// ErrClosed is returned by Publish after Close.
var ErrClosed = errors.New("producer closed")

// NewProducer connects a producer. It does not wait for the brokers: the first
// Publish does (bounded by its context), and Ping checks reachability.
//
// Once librdkafka reports every broker connection down, Publish and Ping
// fail at once with ErrBrokersDown instead of waiting, until a metadata
// request (asked every half second meanwhile) succeeds again; Publish
// calls already waiting for an acknowledgement then return ErrBrokersLost.
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
	pr := &Producer{p: p, logger: cfg.Logger.With("component", "kafka-producer"), tracer: tracer(cfg.TracerProvider),
		health: newReachability(), done: make(chan struct{})}
	pr.wg.Add(2)
	go func() { defer pr.wg.Done(); forwardLogs(pr.logger, p.Logs(), pr.done) }()
	go func() { defer pr.wg.Done(); pr.watchErrors() }()
	pr.probing.Add(1)
	go func() { defer pr.probing.Done(); pr.probe() }()
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
				if err.Code() == ckafka.ErrAllBrokersDown && pr.health.markDown() {
					pr.logger.Error("every kafka broker connection is down: publishing fails fast until one answers", "err", err)
					continue
				}
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
//
// Publish starts a "send <topic>" span, a child of the span in ctx, and
// writes its trace context into the event's traceparent and tracestate
// (the CloudEvents distributed-tracing extension) when ctx carries a span.
func (pr *Producer) Publish(ctx context.Context, e events.Event) (err error) {
	ctx, span := startPublishSpan(ctx, pr.tracer, e)
	defer func() { endSpan(span, err) }()
	injectTrace(ctx, &e)
	// librdkafka copies the value (confluent-kafka-go produces with
	// RD_KAFKA_MSG_F_COPY), so the buffer is reused once Produce returned.
	buf := valueBuffers.Get().(*[]byte)
	value, err := e.AppendMarshal((*buf)[:0])
	defer func() {
		if cap(value) <= 64<<10 { // an outsized one is left to the collector
			*buf = value[:0]
			valueBuffers.Put(buf)
		}
	}()
	if err != nil {
		return fmt.Errorf("publish %s: %w: %w", e.Type, events.ErrNotPublished, err)
	}
	msg := &ckafka.Message{
		TopicPartition: ckafka.TopicPartition{Topic: &e.Type, Partition: ckafka.PartitionAny},
		Key:            []byte(e.Key),
		Value:          value,
		Headers:        contentTypeHeader,
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

// produce sends one record and waits for its delivery report. Errors
// before the record is handed to librdkafka match events.ErrNotPublished;
// so do delivery reports that say the broker refused it (notWritten).
func (pr *Producer) produce(ctx context.Context, msg *ckafka.Message) error {
	select {
	case <-pr.done:
		return fmt.Errorf("%w: %w", ErrClosed, events.ErrNotPublished)
	default:
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", events.ErrNotPublished, err)
	}
	ep := pr.health.load()
	if ep.down {
		return ErrBrokersDown
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
				return fmt.Errorf("%w: %w", events.ErrNotPublished, ctx.Err())
			case <-ep.lost:
				return ErrBrokersDown
			case <-time.After(5 * time.Millisecond):
				continue
			}
		}
		return fmt.Errorf("%w: %w", events.ErrNotPublished, err)
	}
	select {
	case ev := <-report:
		m, ok := ev.(*ckafka.Message)
		if !ok {
			return fmt.Errorf("unexpected delivery report %T", ev)
		}
		if err := m.TopicPartition.Error; err != nil {
			if notWritten(err) {
				return fmt.Errorf("%w: %w", events.ErrNotPublished, err)
			}
			return err
		}
		// An acknowledgement is the surest sign the brokers are back.
		if d, changed := pr.health.markUp(); changed {
			pr.logger.Info("kafka brokers reachable again: publishing resumes", "down_for", d.Round(time.Millisecond))
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for acknowledgement: %w", ctx.Err())
	case <-ep.lost:
		return fmt.Errorf("waiting for acknowledgement: %w", ErrBrokersLost)
	}
}

// notWritten reports whether a delivery report's error says the broker
// refused the record, or librdkafka never sent it, so that it was certainly
// not written. Timeouts and transport errors are not among them: the
// record may have been written without the acknowledgement coming back.
func notWritten(err error) bool {
	var kerr ckafka.Error
	if !errors.As(err, &kerr) {
		return false
	}
	switch kerr.Code() {
	case ckafka.ErrMsgSizeTooLarge, ckafka.ErrInvalidMsgSize, ckafka.ErrInvalidMsg, ckafka.ErrInvalidRecord,
		ckafka.ErrRecordListTooLarge, ckafka.ErrUnknownTopicOrPart, ckafka.ErrUnknownTopic,
		ckafka.ErrTopicAuthorizationFailed, ckafka.ErrClusterAuthorizationFailed, ckafka.ErrPurgeQueue:
		return true
	}
	return false
}

// Ping asks the cluster for its metadata: nil means a broker answered.
// While the producer knows every broker is down it returns ErrBrokersDown
// at once.
func (pr *Producer) Ping(ctx context.Context) error {
	ep := pr.health.load()
	if ep.down {
		return ErrBrokersDown
	}
	timeout := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if timeout <= 0 {
		return context.DeadlineExceeded
	}
	// The request runs on its own goroutine so that Ping answers as soon as
	// the brokers are known lost, rather than at its timeout; Close waits
	// for it before closing the client.
	pr.closeMu.Lock()
	if pr.closed {
		pr.closeMu.Unlock()
		return ErrClosed
	}
	pr.probing.Add(1)
	pr.closeMu.Unlock()
	res := make(chan error, 1)
	go func() {
		defer pr.probing.Done()
		_, err := pr.p.GetMetadata(nil, false, int(timeout.Milliseconds()))
		res <- err
	}()
	select {
	case err := <-res:
		if err != nil {
			return fmt.Errorf("kafka metadata: %w", err)
		}
		return nil
	case <-ep.lost:
		return ErrBrokersDown
	}
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
		pr.closeMu.Lock()
		pr.closed = true
		pr.closeMu.Unlock()
		pr.probing.Wait()
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

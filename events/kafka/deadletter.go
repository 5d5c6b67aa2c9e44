package kafka

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
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

// deadLetter writes the record to the group's dead-letter topic, retrying
// until the broker acknowledges it: a record is never skipped unrecorded. It
// returns false when ctx ended first.
func (s *Subscriber) deadLetter(ctx context.Context, m *ckafka.Message, res Result) bool {
	return writeDeadLetter(ctx, s.dlq, s.logger, m, deadLetterInfo{
		group: s.sc.GroupID, cause: res.Err, attempts: res.Attempts, eventID: res.EventID,
	}, s.sc.InitialBackoff, s.sc.MaxBackoff)
}

// deadLetterInfo is what a dead letter says besides the record itself.
type deadLetterInfo struct {
	group    string
	cause    error
	attempts int    // 0 for a record that could not be decoded
	eventID  string // empty when unknown
}

// writeDeadLetter writes m, with its key, value and headers and the dlq-*
// headers, to the group's dead-letter topic through p, retrying with
// backoff from initial to max until the broker acknowledges it. The
// Subscriber and the BatchConsumer share it. It returns false when ctx
// ended first.
func writeDeadLetter(ctx context.Context, p *Producer, logger *slog.Logger, m *ckafka.Message, info deadLetterInfo, initial, max time.Duration) bool {
	topic := DeadLetterTopic(info.group)
	tp := m.TopicPartition
	headers := append([]ckafka.Header(nil), m.Headers...)
	headers = append(headers,
		ckafka.Header{Key: HeaderDLQTopic, Value: []byte(*tp.Topic)},
		ckafka.Header{Key: HeaderDLQPartition, Value: []byte(strconv.Itoa(int(tp.Partition)))},
		ckafka.Header{Key: HeaderDLQOffset, Value: []byte(strconv.FormatInt(int64(tp.Offset), 10))},
		ckafka.Header{Key: HeaderDLQGroup, Value: []byte(info.group)},
		ckafka.Header{Key: HeaderDLQError, Value: []byte(truncateError(info.cause))},
		ckafka.Header{Key: HeaderDLQAttempts, Value: []byte(strconv.Itoa(info.attempts))},
		ckafka.Header{Key: HeaderDLQFailedAt, Value: []byte(time.Now().UTC().Format(time.RFC3339Nano))},
	)
	backoff := initial
	for {
		msg := &ckafka.Message{
			TopicPartition: ckafka.TopicPartition{Topic: &topic, Partition: ckafka.PartitionAny},
			Key:            m.Key, Value: m.Value, Headers: headers,
		}
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		err := p.produce(pctx, msg)
		cancel()
		if err == nil {
			logger.Error("record dead-lettered", "topic", *tp.Topic, "partition", tp.Partition, "offset", int64(tp.Offset),
				"event_id", info.eventID, "attempts", info.attempts, "err", info.cause, "dlq", topic)
			return true
		}
		logger.Error("dead-letter publish failed; retrying", "dlq", topic, "err", err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(jitter(backoff)):
		}
		backoff = min(2*backoff, max)
	}
}

func truncateError(err error) string {
	s := err.Error()
	if len(s) > 1024 {
		s = s[:1024] + "…"
	}
	return s
}

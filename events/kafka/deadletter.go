package kafka

import (
	"context"
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
	topic := DeadLetterTopic(s.sc.GroupID)
	headers := append([]ckafka.Header(nil), m.Headers...)
	headers = append(headers,
		ckafka.Header{Key: HeaderDLQTopic, Value: []byte(res.Topic)},
		ckafka.Header{Key: HeaderDLQPartition, Value: []byte(strconv.Itoa(int(res.Partition)))},
		ckafka.Header{Key: HeaderDLQOffset, Value: []byte(strconv.FormatInt(res.Offset, 10))},
		ckafka.Header{Key: HeaderDLQGroup, Value: []byte(s.sc.GroupID)},
		ckafka.Header{Key: HeaderDLQError, Value: []byte(truncateError(res.Err))},
		ckafka.Header{Key: HeaderDLQAttempts, Value: []byte(strconv.Itoa(res.Attempts))},
		ckafka.Header{Key: HeaderDLQFailedAt, Value: []byte(time.Now().UTC().Format(time.RFC3339Nano))},
	)
	backoff := s.sc.InitialBackoff
	for {
		msg := &ckafka.Message{
			TopicPartition: ckafka.TopicPartition{Topic: &topic, Partition: ckafka.PartitionAny},
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

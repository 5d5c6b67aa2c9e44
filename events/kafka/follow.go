package kafka

import (
	"context"
	"errors"
	"fmt"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// Record is one record of a followed topic. A nil Value is a tombstone: on
// a compacted topic it deletes its key.
type Record struct {
	Key       []byte
	Value     []byte
	Partition int32
	Offset    int64
}

// Tombstone reports whether r deletes its key.
func (r Record) Tombstone() bool { return r.Value == nil }

// followBatch bounds the records handed to apply at once.
const followBatch = 4096

// FollowTopic reads every partition of topic from its oldest retained
// record, without a consumer group: partitions are assigned, no offset is
// committed, and every caller reads the whole log, as a process rebuilding
// its state from a compacted topic must. It hands the records to apply in
// batches, in log order within each partition, and calls caughtUp (once)
// when every partition has been read up to the end it had when FollowTopic
// started. It then goes on following the topic until ctx ends (nil) or
// apply or the client fails (the error).
//
// Partitions added to the topic after the start are not followed.
func FollowTopic(ctx context.Context, cfg Config, topic string, apply func(context.Context, []Record) error, caughtUp func()) error {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	cm := cfg.configMap(ckafka.ConfigMap{
		// Fetch in large chunks: a rebuild reads millions of small records.
		"fetch.wait.max.ms":          100,
		"max.partition.fetch.bytes":  8 << 20,
		"fetch.max.bytes":            64 << 20,
		"queued.max.messages.kbytes": 65536,
		// When a partition's prefetch queue is over queued.min.messages
		// (100,000) or the kbytes above, librdkafka postpones its next
		// fetch by this much (default 1000 ms) instead of fetching again
		// as soon as the queue drains. A rebuild fills the queue with
		// every fetch, so with the default the reader sat idle for up to
		// a second at a time (1.1-2.1 s of a 3.2-3.9 s rebuild of a
		// million records). 10 ms keeps the queue fed; once caught up the
		// queue is near empty and the setting no longer applies.
		"fetch.queue.backoff.ms": 10,
	}, ckafka.ConfigMap{
		// librdkafka wants a group id even when no group is joined (Assign,
		// never Subscribe); nothing is committed under it.
		"group.id":                 "countersign-follow-" + topic,
		"enable.auto.commit":       false,
		"enable.auto.offset.store": false,
		"enable.partition.eof":     true,
	})
	c, err := ckafka.NewConsumer(&cm)
	if err != nil {
		return fmt.Errorf("follow %s: %w", topic, err)
	}
	logsDone := make(chan struct{})
	go forwardLogs(cfg.Logger.With("component", "follow", "topic", topic), c.Logs(), logsDone)
	defer func() {
		closeWithTimeout(func() { _ = c.Close() }, 10*time.Second, cfg.Logger)
		close(logsDone)
	}()

	// The ends to reach before caughtUp, per partition.
	ends, err := partitionEnds(ctx, c, topic)
	if err != nil {
		return fmt.Errorf("follow %s: %w", topic, err)
	}
	tps := make([]ckafka.TopicPartition, 0, len(ends))
	behind := map[int32]bool{}
	for p, end := range ends {
		tps = append(tps, ckafka.TopicPartition{Topic: &topic, Partition: p, Offset: ckafka.OffsetBeginning})
		if end.high > end.low {
			behind[p] = true
		}
	}
	if err := c.Assign(tps); err != nil {
		return fmt.Errorf("follow %s: assign: %w", topic, err)
	}
	signalled := false
	signal := func() {
		if !signalled && len(behind) == 0 {
			signalled = true
			caughtUp()
		}
	}
	signal()

	batch := make([]Record, 0, followBatch)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := apply(ctx, batch)
		batch = batch[:0]
		return err
	}
	for ctx.Err() == nil {
		ev := c.Poll(100)
		switch e := ev.(type) {
		case *ckafka.Message:
			if e.TopicPartition.Error != nil {
				cfg.Logger.Warn("follow: record error", "topic", topic, "err", e.TopicPartition.Error)
				continue
			}
			batch = append(batch, Record{Key: e.Key, Value: e.Value, Partition: e.TopicPartition.Partition, Offset: int64(e.TopicPartition.Offset)})
			if off := int64(e.TopicPartition.Offset); behind[e.TopicPartition.Partition] && off+1 >= ends[e.TopicPartition.Partition].high {
				delete(behind, e.TopicPartition.Partition)
			}
			if len(batch) < followBatch && len(behind) > 0 {
				continue
			}
		case ckafka.PartitionEOF:
			if behind[e.Partition] && int64(e.Offset) >= ends[e.Partition].high {
				delete(behind, e.Partition)
			}
		case ckafka.Error:
			if e.IsFatal() {
				return fmt.Errorf("follow %s: %w", topic, e)
			}
			cfg.Logger.Warn("follow: kafka consumer error", "topic", topic, "err", e)
			continue
		case nil:
			// Nothing for a moment: hand over what there is.
		default:
			continue
		}
		if err := flush(); err != nil {
			return fmt.Errorf("follow %s: %w", topic, err)
		}
		signal()
	}
	if err := flush(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("follow %s: %w", topic, err)
	}
	return nil
}

type watermarks struct{ low, high int64 }

// partitionEnds returns the low and high watermarks of every partition of
// topic, retrying while a new cluster settles.
func partitionEnds(ctx context.Context, c *ckafka.Consumer, topic string) (map[int32]watermarks, error) {
	ctx, ms, cancel := boundRequests(ctx)
	defer cancel()
	var md *ckafka.Metadata
	err := retryTransient(ctx, func() (err error) {
		md, err = c.GetMetadata(&topic, false, ms)
		if err == nil {
			if code := md.Topics[topic].Error.Code(); code != ckafka.ErrNoError {
				err = md.Topics[topic].Error
			}
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	ends := map[int32]watermarks{}
	for _, p := range md.Topics[topic].Partitions {
		var w watermarks
		err := retryTransient(ctx, func() (err error) {
			w.low, w.high, err = c.QueryWatermarkOffsets(topic, p.ID, ms)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("watermarks of %s/%d: %w", topic, p.ID, err)
		}
		ends[p.ID] = w
	}
	if len(ends) == 0 {
		return nil, errors.New("the topic has no partitions")
	}
	return ends, nil
}

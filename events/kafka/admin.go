package kafka

import (
	"context"
	"errors"
	"fmt"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/countersign/countersign/events"
)

// EnsureTopics creates the topics that do not exist yet, with cfg.Partitions
// partitions, cfg.ReplicationFactor replicas and the settings the contract
// names for them (events.TopicConfigs, such as cleanup.policy=compact for
// user_account_verified). Existing topics keep their partitions; the
// settings of events.TopicConfigs are set on them when they differ (a
// deployment upgraded from a version that created the topic without them),
// and when that is refused the error says which setting to change by hand.
// It is safe to call from every process at start-up. A topic the principal
// may not create (TOPIC_AUTHORIZATION_FAILED, on a cluster with ACLs) is
// skipped, not an error: creating topics and setting their configuration is
// then the operator's job (docs/security.md).
func EnsureTopics(ctx context.Context, cfg Config, topics ...string) error {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	// The admin client borrows a producer's handle so librdkafka's logs
	// reach slog (a bare admin client can only log to stderr).
	pr, err := NewProducer(cfg)
	if err != nil {
		return fmt.Errorf("ensure topics: %w", err)
	}
	defer pr.Close(context.Background())
	a, err := ckafka.NewAdminClientFromProducer(pr.p)
	if err != nil {
		return fmt.Errorf("ensure topics: admin client: %w", err)
	}
	defer a.Close()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	specs := make([]ckafka.TopicSpecification, len(topics))
	for i, t := range topics {
		specs[i] = ckafka.TopicSpecification{Topic: t, NumPartitions: cfg.Partitions, ReplicationFactor: cfg.ReplicationFactor, Config: events.TopicConfigs[t]}
	}
	res, err := a.CreateTopics(ctx, specs)
	if err != nil {
		return fmt.Errorf("ensure topics: %w", err)
	}
	var existing []string
	for _, r := range res {
		switch c := r.Error.Code(); c {
		case ckafka.ErrNoError:
		case ckafka.ErrTopicAuthorizationFailed:
			// Least privilege (docs/security.md): a service may not create
			// topics, and the broker answers so whether or not the topic
			// exists (and, for a topic the service does not use, whether or
			// not it may see it). Creating topics is then the operator's
			// job; a missing one shows up where it is used.
			continue
		case ckafka.ErrTopicAlreadyExists:
			if events.TopicConfigs[r.Topic] != nil {
				existing = append(existing, r.Topic)
			}
		default:
			return fmt.Errorf("ensure topic %s: %w", r.Topic, r.Error)
		}
	}
	for _, t := range existing {
		if err := ensureTopicConfig(ctx, a, t, events.TopicConfigs[t]); err != nil {
			return err
		}
	}
	return nil
}

// ensureTopicConfig sets the settings of want on an existing topic where
// they differ.
func ensureTopicConfig(ctx context.Context, a *ckafka.AdminClient, topic string, want map[string]string) error {
	res, err := a.DescribeConfigs(ctx, []ckafka.ConfigResource{{Type: ckafka.ResourceTopic, Name: topic}})
	if err != nil {
		return fmt.Errorf("ensure topic %s: describe configs: %w", topic, err)
	}
	var change []ckafka.ConfigEntry
	for name, v := range want {
		var have string
		if len(res) == 1 {
			have = res[0].Config[name].Value
		}
		if have != v {
			change = append(change, ckafka.ConfigEntry{Name: name, Value: v, IncrementalOperation: ckafka.AlterConfigOpTypeSet})
		}
	}
	if len(change) == 0 {
		return nil
	}
	out, err := a.IncrementalAlterConfigs(ctx, []ckafka.ConfigResource{{Type: ckafka.ResourceTopic, Name: topic, Config: change}})
	if err == nil && len(out) == 1 && out[0].Error.Code() != ckafka.ErrNoError {
		err = out[0].Error
	}
	if err != nil {
		return fmt.Errorf("ensure topic %s: set %v (kafka-configs.sh --alter --entity-type topics --entity-name %s --add-config ...): %w", topic, want, topic, err)
	}
	return nil
}

// PartitionBacklog is what a consumer group has left to read of one
// partition: the offsets from Next up to End (exclusive).
type PartitionBacklog struct {
	Partition int32
	// Next is the offset the group reads next: its committed offset, or the
	// oldest retained one when it has none (or retention removed it), as
	// the subscribers' auto.offset.reset=earliest does.
	Next int64
	// End is the partition's high watermark when Backlog asked.
	End int64
}

// Backlog reports, per partition of topic, what groupID has not read yet. It
// reads the group's committed offsets without joining the group, so it
// neither disturbs a running member nor commits anything. ctx's deadline
// bounds each request to the brokers (30s without one).
func Backlog(ctx context.Context, cfg Config, groupID, topic string) ([]PartitionBacklog, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ctx, ms, cancel := boundRequests(ctx)
	defer cancel()
	cm := cfg.configMap(nil, ckafka.ConfigMap{
		"group.id":           groupID,
		"enable.auto.commit": false,
	})
	c, err := ckafka.NewConsumer(&cm)
	if err != nil {
		return nil, fmt.Errorf("backlog %s: %w", topic, err)
	}
	logsDone := make(chan struct{})
	go forwardLogs(cfg.Logger.With("component", "backlog"), c.Logs(), logsDone)
	defer func() {
		closeWithTimeout(func() { _ = c.Close() }, 10*time.Second, cfg.Logger)
		close(logsDone)
	}()
	md, err := c.GetMetadata(&topic, false, ms)
	if err != nil {
		return nil, fmt.Errorf("backlog %s: metadata: %w", topic, err)
	}
	tm := md.Topics[topic]
	if tm.Error.Code() != ckafka.ErrNoError {
		return nil, fmt.Errorf("backlog %s: %w", topic, tm.Error)
	}
	tps := make([]ckafka.TopicPartition, len(tm.Partitions))
	for i, p := range tm.Partitions {
		tps[i] = ckafka.TopicPartition{Topic: &topic, Partition: p.ID}
	}
	var committed []ckafka.TopicPartition
	err = retryTransient(ctx, func() (err error) {
		committed, err = c.Committed(tps, ms)
		return err
	})
	var kerr ckafka.Error
	if errors.As(err, &kerr) && kerr.Code() == ckafka.ErrGroupIDNotFound {
		// A group that never committed: some brokers say so instead of
		// answering with no offsets.
		committed, err = tps, nil
		for i := range committed {
			committed[i].Offset = ckafka.OffsetInvalid
		}
	}
	if err != nil {
		return nil, fmt.Errorf("backlog %s: committed offsets of %s: %w", topic, groupID, err)
	}
	out := make([]PartitionBacklog, 0, len(committed))
	for _, tp := range committed {
		if tp.Error != nil {
			return nil, fmt.Errorf("backlog %s/%d: committed offset of %s: %w", topic, tp.Partition, groupID, tp.Error)
		}
		var low, high int64
		err := retryTransient(ctx, func() (err error) {
			low, high, err = c.QueryWatermarkOffsets(topic, tp.Partition, ms)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("backlog %s/%d: watermarks: %w", topic, tp.Partition, err)
		}
		next := int64(tp.Offset)
		if next < low {
			next = low // no committed offset (negative), or retention removed it
		}
		out = append(out, PartitionBacklog{Partition: tp.Partition, Next: next, End: high})
	}
	return out, nil
}

// StartAtEnd commits the current end of every partition of topics for
// groupID, so a group that has never run starts with what is published from
// now on instead of the retained history (auto.offset.reset=earliest). Run
// it before the group's first member starts: it commits without joining, and
// a running group would overwrite or be disturbed by it. Benchmarks and tests
// on a shared cluster use it; operators can do the same with
// kafka-consumer-groups.sh --reset-offsets --to-latest.
func StartAtEnd(ctx context.Context, cfg Config, groupID string, topics ...string) error {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	ctx, ms, cancel := boundRequests(ctx)
	defer cancel()
	cm := cfg.configMap(nil, ckafka.ConfigMap{"group.id": groupID, "enable.auto.commit": false})
	c, err := ckafka.NewConsumer(&cm)
	if err != nil {
		return fmt.Errorf("start %s at the end: %w", groupID, err)
	}
	logsDone := make(chan struct{})
	go forwardLogs(cfg.Logger.With("component", "start-at-end"), c.Logs(), logsDone)
	defer func() {
		closeWithTimeout(func() { _ = c.Close() }, 10*time.Second, cfg.Logger)
		close(logsDone)
	}()
	var tps []ckafka.TopicPartition
	for _, topic := range topics {
		md, err := c.GetMetadata(&topic, false, ms)
		if err != nil {
			return fmt.Errorf("start %s at the end: metadata of %s: %w", groupID, topic, err)
		}
		for _, p := range md.Topics[topic].Partitions {
			high, err := highWatermark(ctx, c, topic, p.ID, ms)
			if err != nil {
				return fmt.Errorf("start %s at the end: watermarks of %s/%d: %w", groupID, topic, p.ID, err)
			}
			tps = append(tps, ckafka.TopicPartition{Topic: &topic, Partition: p.ID, Offset: ckafka.Offset(high)})
		}
	}
	if len(tps) == 0 {
		return nil
	}
	err = retryTransient(ctx, func() error {
		_, err := c.CommitOffsets(tps)
		return err
	})
	if err != nil {
		return fmt.Errorf("start %s at the end: commit: %w", groupID, err)
	}
	return nil
}

// boundRequests gives ctx a 30s deadline when it has none, so retries of
// transient errors end, and returns the remaining time in milliseconds for
// librdkafka's per-request timeouts.
func boundRequests(ctx context.Context) (context.Context, int, context.CancelFunc) {
	cancel := context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok {
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
	}
	d, _ := ctx.Deadline()
	return ctx, int(max(time.Until(d), time.Second).Milliseconds()), cancel
}

// highWatermark asks for a partition's end offset, retrying while the
// cluster is still electing its leader (a topic created a moment ago) until
// ctx ends.
func highWatermark(ctx context.Context, c *ckafka.Consumer, topic string, partition int32, ms int) (int64, error) {
	var high int64
	err := retryTransient(ctx, func() (err error) {
		_, high, err = c.QueryWatermarkOffsets(topic, partition, ms)
		return err
	})
	return high, err
}

// transient reports whether err is one a Kafka cluster answers while it is
// still settling: a leader or group coordinator being elected or loaded,
// which happens for a moment after a topic or group is first used on a
// fresh cluster. Asking again shortly after succeeds.
func transient(err error) bool {
	var kerr ckafka.Error
	if !errors.As(err, &kerr) {
		return false
	}
	switch kerr.Code() {
	case ckafka.ErrNotLeaderForPartition, ckafka.ErrLeaderNotAvailable,
		ckafka.ErrNotCoordinator, ckafka.ErrCoordinatorNotAvailable,
		ckafka.ErrCoordinatorLoadInProgress, ckafka.ErrUnknownTopicOrPart:
		return true
	}
	return kerr.IsRetriable()
}

// retryTransient calls fn until it returns nil or an error that is not
// transient, waiting 100ms between calls; once ctx ends it returns fn's last
// error.
func retryTransient(ctx context.Context, fn func() error) error {
	for {
		err := fn()
		if err == nil || !transient(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

package events

import (
	"context"
	"fmt"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// EnsureTopics creates the topics that do not exist yet, with cfg.Partitions
// partitions and cfg.ReplicationFactor replicas. Existing topics are left as
// they are. It is safe to call from every process at start-up.
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
	a, err := kafka.NewAdminClientFromProducer(pr.p)
	if err != nil {
		return fmt.Errorf("ensure topics: admin client: %w", err)
	}
	defer a.Close()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	specs := make([]kafka.TopicSpecification, len(topics))
	for i, t := range topics {
		specs[i] = kafka.TopicSpecification{Topic: t, NumPartitions: cfg.Partitions, ReplicationFactor: cfg.ReplicationFactor}
	}
	res, err := a.CreateTopics(ctx, specs)
	if err != nil {
		return fmt.Errorf("ensure topics: %w", err)
	}
	for _, r := range res {
		if c := r.Error.Code(); c != kafka.ErrNoError && c != kafka.ErrTopicAlreadyExists {
			return fmt.Errorf("ensure topic %s: %w", r.Topic, r.Error)
		}
	}
	return nil
}

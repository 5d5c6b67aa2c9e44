package kafka_test

import (
	"context"
	"testing"
	"time"

	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/events/kafka"
)

// backlogOf sums what group has left to read of topic.
func backlogOf(t *testing.T, cfg kafka.Config, group, topic string) (left int64, partitions int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bl, err := kafka.Backlog(ctx, cfg, group, topic)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bl {
		if b.Next > b.End {
			t.Errorf("partition %d: next %d beyond end %d", b.Partition, b.Next, b.End)
		}
		left += b.End - b.Next
	}
	return left, len(bl)
}

// Backlog is what replay-dlq stops on: a group that never committed has the
// whole topic left, one that handled and committed everything has nothing.
func TestBacklogFollowsCommittedOffsets(t *testing.T) {
	brokers := eventstest.Brokers(t)
	cfg := eventstest.Config(t, brokers)
	topic := testTopic(t, cfg)
	recs, _ := validRecords(t, 7)
	produceRaw(t, brokers, topic, recs...)
	group := eventstest.UniqueGroup(t)

	if left, n := backlogOf(t, cfg, group, topic); left != 7 || n != 3 {
		t.Fatalf("new group: %d records left on %d partitions, want 7 on 3", left, n)
	}
	rec := newRecorder()
	stop := startSubscriber(t, cfg, fastRetries(kafka.SubscriberConfig{GroupID: group, Topics: []string{topic}}), rec.handle)
	rec.waitFor(t, 7, 60*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if left, _ := backlogOf(t, cfg, group, topic); left != 0 {
		t.Errorf("after handling everything: %d records left, want 0", left)
	}
}

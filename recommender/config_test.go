package recommender_test

import (
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/recommender"
)

func TestNewValidates(t *testing.T) {
	deps := unitDeps(t, &fakeSender{})
	for _, tc := range []struct {
		cfg  recommender.Config
		want string
	}{
		{recommender.Config{WorkerConfig: kafka.WorkerConfig{GroupID: "has space"}}, "RECOMMENDER_GROUP_ID"},
		{recommender.Config{WorkerConfig: kafka.WorkerConfig{GroupID: strings.Repeat("g", 246)}}, "RECOMMENDER_GROUP_ID"},
		{recommender.Config{WorkerConfig: kafka.WorkerConfig{CommitEvery: -1}}, "RECOMMENDER_COMMIT_EVERY"},
		{recommender.Config{WorkerConfig: kafka.WorkerConfig{MaxAttempts: -1}}, "RECOMMENDER_MAX_ATTEMPTS"},
		{recommender.Config{WorkerConfig: kafka.WorkerConfig{InitialBackoff: time.Minute, MaxBackoff: time.Second}}, "RECOMMENDER_RETRY_BACKOFF"},
		{recommender.Config{WorkerConfig: kafka.WorkerConfig{DedupeWindow: -time.Second}}, "RECOMMENDER_DEDUPE_WINDOW"},
		{recommender.Config{CatalogFile: "/nonexistent/catalog.json"}, recommender.EnvCatalog},
	} {
		if _, err := recommender.New(tc.cfg, deps); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v): error %v, want one naming %s", tc.cfg, err, tc.want)
		}
	}
	if err := (recommender.Config{}).Validate(); err == nil {
		t.Error("the zero Config (no group id) validated")
	}

	noSender := deps
	noSender.Sender = nil
	if _, err := recommender.New(recommender.Config{}, noSender); err == nil {
		t.Error("New accepted no mail sender")
	}
	noTemplates := deps
	noTemplates.Templates = nil
	if _, err := recommender.New(recommender.Config{}, noTemplates); err == nil {
		t.Error("New accepted no templates")
	}
}

// The issue names the topic: the runner derives it from the group id.
func TestDeadLetterTopicName(t *testing.T) {
	r, err := recommender.New(recommender.Config{}, unitDeps(t, &fakeSender{}))
	if err != nil {
		t.Fatal(err)
	}
	if got := r.DeadLetterTopic(); got != "recommendation-service.dlq" {
		t.Errorf("dead-letter topic %q, want recommendation-service.dlq", got)
	}
	if kafka.DeadLetterTopic(recommender.DefaultGroupID) != r.DeadLetterTopic() {
		t.Error("the recommender's dead-letter topic is not the runner's")
	}
}

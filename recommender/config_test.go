package recommender_test

import (
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/recommender"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestConfigFromEnv(t *testing.T) {
	c, err := recommender.ConfigFromEnv(env(map[string]string{
		recommender.EnvGroupID:         " recommendation-service-eu ",
		recommender.EnvCommitEvery:     "10",
		recommender.EnvMaxAttempts:     "3",
		recommender.EnvRetryBackoff:    "1s",
		recommender.EnvRetryMaxBackoff: "1m",
		recommender.EnvDedupeWindow:    "1h",
		recommender.EnvCatalog:         "/etc/countersign/catalog.json",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := recommender.Config{GroupID: "recommendation-service-eu", CommitEvery: 10, MaxAttempts: 3,
		InitialBackoff: time.Second, MaxBackoff: time.Minute, DedupeWindow: time.Hour, CatalogFile: "/etc/countersign/catalog.json"}
	if c != want {
		t.Errorf("got %+v\nwant %+v", c, want)
	}

	c, err = recommender.ConfigFromEnv(env(nil))
	if err != nil || c != (recommender.Config{}) {
		t.Errorf("empty environment: %+v, %v; want the zero Config (defaults applied by New)", c, err)
	}
}

func TestConfigFromEnvErrorsNameEveryBadVariable(t *testing.T) {
	bad := map[string]string{
		recommender.EnvCommitEvery:     "0",
		recommender.EnvMaxAttempts:     "many",
		recommender.EnvRetryBackoff:    "-1s",
		recommender.EnvRetryMaxBackoff: "30",
		recommender.EnvDedupeWindow:    "0s",
	}
	_, err := recommender.ConfigFromEnv(env(bad))
	if err == nil {
		t.Fatal("accepted")
	}
	for name := range bad {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not name %s", err, name)
		}
	}
}

func TestNewValidates(t *testing.T) {
	deps := unitDeps(t, &fakeSender{})
	for _, tc := range []struct {
		cfg  recommender.Config
		want string
	}{
		{recommender.Config{GroupID: "has space"}, recommender.EnvGroupID},
		{recommender.Config{GroupID: strings.Repeat("g", 246)}, recommender.EnvGroupID},
		{recommender.Config{CommitEvery: -1}, recommender.EnvCommitEvery},
		{recommender.Config{MaxAttempts: -1}, recommender.EnvMaxAttempts},
		{recommender.Config{InitialBackoff: time.Minute, MaxBackoff: time.Second}, recommender.EnvRetryBackoff},
		{recommender.Config{DedupeWindow: -time.Second}, recommender.EnvDedupeWindow},
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
	if events.DeadLetterTopic(recommender.DefaultGroupID) != r.DeadLetterTopic() {
		t.Error("the recommender's dead-letter topic is not the runner's")
	}
}

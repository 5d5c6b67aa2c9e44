// Command guideexample is the complete subscriber shown in docs/subscribers.md
// (recommender/guide_test.go keeps the two identical). It logs every verified
// user once per event. Run it with KAFKA_BROKERS=localhost:9092.
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/countersign/countersign/events"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	kafka, err := events.ConfigFromEnv(os.Environ()) // KAFKA_BROKERS, KAFKA_SASL_*, …
	if err != nil {
		slog.Error("kafka config", "err", err)
		os.Exit(2)
	}
	sub, err := events.NewSubscriber(kafka, events.SubscriberConfig{
		GroupID: "welcome-service", // never rename: a new group id re-reads the whole history
		Topics:  []string{events.TopicUserAccountVerified},
	}, func(ctx context.Context, e events.Event) error {
		d, err := e.UserAccountVerified()
		if err != nil {
			return events.Permanent(err) // retrying cannot help: dead-letter it now
		}
		// At-least-once: make the real work idempotent on e.ID (see Idempotency).
		slog.InfoContext(ctx, "user verified", "event_id", e.ID, "user_id", d.UserID)
		return nil // handled: the offset may be committed
	})
	if err == nil {
		err = sub.Run(ctx) // returns nil after SIGINT/SIGTERM, once committed
	}
	if err != nil {
		slog.Error("welcome-service", "err", err)
		os.Exit(1)
	}
}

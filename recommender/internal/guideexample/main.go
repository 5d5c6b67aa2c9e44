// Command guideexample is the complete subscriber shown in docs/subscribers.md
// (recommender/guide_test.go keeps the two identical). It logs every verified
// user once per event. Run it with KAFKA_BROKERS=localhost:9092. Its imports
// are one group so that the example stays within 25 lines.
package main

import (
	"context"
	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/kafka"
	"log"
	"os"
)

func main() {
	err := kafka.Serve(kafka.Config{Brokers: os.Getenv("KAFKA_BROKERS")},
		kafka.WorkerConfig{GroupID: "welcome-service"}, // never rename: a new group re-reads history
		[]string{events.TopicUserAccountVerified}, func(ctx context.Context, e events.Event) error {
			d, err := e.UserAccountVerified()
			if err != nil {
				return events.Permanent(err) // retrying cannot help: dead-letter it now
			}
			log.Printf("verified: user %s (event %s)", d.UserID, e.ID)
			return nil // handled: the offset may be committed; any other error is retried
		}) // until SIGINT or SIGTERM: then it finishes the event in hand, commits, returns nil
	if err != nil {
		log.Fatal(err)
	}
}

// Package platform builds Countersign's services from plain configuration:
// one constructor per service (NewUserAPI, NewNotifier, NewRecommender, and
// NewMail for what the mail-sending ones share), used by every command that
// runs them (countersign userapi, notifier, recommender, dev, replay-dlq)
// and by cmd/loadgen. It never reads the environment: cmd/countersign's
// settings table fills Config.
package platform

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/mail"
	"github.com/countersign/countersign/notifier"
	"github.com/countersign/countersign/recommender"
	"github.com/countersign/countersign/userapi"
)

// Config is everything the services are built from. Zero values mean each
// package's defaults.
type Config struct {
	// Kafka is how every service reaches the brokers.
	Kafka kafka.Config
	// Keys seals codes (the user API) and opens them (the notifier).
	Keys *events.Keyring

	// UserAPI and PendingStore configure the user API. PendingStore is ""
	// or "memory", or a redis:// or rediss:// URL (PENDING_STORE).
	UserAPI      userapi.Config
	PendingStore string

	Notifier    notifier.Config
	Recommender recommender.Config

	// SMTP, OutboxDir and TemplatesDir are the mail of the notifier and the
	// recommender: SMTP when SMTP.Host is set, else .eml files in OutboxDir
	// ("" is mail.DefaultOutboxDir); templates from TemplatesDir over the
	// embedded ones.
	SMTP         mail.SMTPConfig
	OutboxDir    string
	TemplatesDir string

	// Logger is every service's logger; nil discards.
	Logger *slog.Logger
}

func (c Config) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

// ShutdownTimeout bounds each step of a graceful shutdown: draining HTTP,
// flushing the producer.
const ShutdownTimeout = 15 * time.Second

// StartTimeout is how long a start waits for Kafka and Redis to answer:
// under docker compose the services may start before them.
const StartTimeout = 60 * time.Second

// WaitFor calls try until it succeeds, every interval, for at most timeout
// (each call gets a context that ends then). It returns nil, or try's last
// error once the time is up or ctx ends. It is the one wait of a start: for
// Kafka (EnsureTopics), for Redis (the pending store) and for a first
// acknowledged publish (cmd/loadgen).
func WaitFor(ctx context.Context, timeout, interval time.Duration, try func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := try(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(interval):
		}
	}
}

// EnsureTopics creates the topics when missing, waiting for the brokers up
// to StartTimeout. A command calls it once per start, with every topic its
// services read or dead-letter to, and builds its workers with TopicsReady.
func EnsureTopics(ctx context.Context, kcfg kafka.Config, topics ...string) error {
	err := WaitFor(ctx, StartTimeout, time.Second, func(ctx context.Context) error {
		return kafka.EnsureTopics(ctx, kcfg, topics...)
	})
	if err != nil {
		return fmt.Errorf("kafka not reachable: %w", err)
	}
	return nil
}

// TopicsReady tells a worker that EnsureTopics created its topics and its
// dead-letter topic already, so its Run (and its Replay) does not ask the
// brokers again.
func TopicsReady() kafka.WorkerOption {
	return kafka.WithSubscriberConfig(func(sc *kafka.SubscriberConfig) { sc.TopicsReady = true })
}

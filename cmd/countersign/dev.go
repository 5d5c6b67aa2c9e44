package main

import (
	"cmp"
	"context"
	"fmt"

	"golang.org/x/sync/errgroup"

	"github.com/countersign/countersign/cmd/internal/platform"
	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/embedded"
	"github.com/countersign/countersign/mail"
)

// runDev runs the whole platform in one process: an embedded broker (unless
// KAFKA_BROKERS points at a cluster), the user API, the notifier, the
// recommender and the audit (into ./countersign-audit.db by default). It is
// for a laptop: the embedded broker keeps everything in memory and loses it
// at exit.
func runDev(ctx context.Context, env *Env, cfg *config) error {
	m, err := platform.NewMail(cfg.Config)
	if err != nil {
		return err
	}
	defer m.Close()

	kafkaLine := cfg.Kafka.Brokers
	if cfg.Kafka.Brokers == "" {
		addr := cmp.Or(cfg.EmbeddedKafkaAddr, DefaultEmbeddedKafkaAddr)
		broker, err := embedded.Start(addr)
		if err != nil {
			return fmt.Errorf("EMBEDDED_KAFKA_ADDR=%q: %w (set EMBEDDED_KAFKA_ADDR to a free address, or KAFKA_BROKERS to use a running cluster)", addr, err)
		}
		defer broker.Close()
		cfg.Kafka.Brokers = broker.Addr()
		kafkaLine = cfg.Kafka.Brokers + " (embedded, in memory)"
	}
	if cfg.Keys == nil {
		// One process seals and opens, so a key that lives as long as the
		// process is enough; events from an earlier run cannot be opened.
		if cfg.Keys, err = events.NewRandomKeyring(); err != nil {
			return err
		}
		env.Logger.Info("CODE_ENCRYPTION_KEYS is not set: using a random key for this process")
	}

	// One registry: /metrics on METRICS_ADDR shows every part's metrics.
	// The workers are built first: that checks the catalogue and the
	// templates before anything waits for Kafka (and Redis).
	reg := newRegistry()
	n, err := platform.NewNotifier(cfg.Config, m, reg, platform.TopicsReady())
	if err != nil {
		return err
	}
	r, err := platform.NewRecommender(cfg.Config, m, reg, platform.TopicsReady())
	if err != nil {
		return err
	}
	// Every topic of the three services, once.
	if err := platform.EnsureTopics(ctx, cfg.Kafka, append(events.Topics[:len(events.Topics):len(events.Topics)], n.DeadLetterTopic(), r.DeadLetterTopic())...); err != nil {
		return err
	}
	aud, audStore, err := platform.NewAudit(ctx, cfg.Config, reg)
	if err != nil {
		return err
	}
	defer audStore.Close()
	api, err := platform.NewUserAPI(ctx, cfg.Config, reg)
	if err != nil {
		return err
	}
	defer api.Close()
	// Every part's metrics on the user API's METRICS_ADDR (issue 14: never
	// on the public HTTP_ADDR).
	opsAddr := cmp.Or(cfg.MetricsAddr, userAPIOpsAddr)
	stopOps, err := serveOps(opsAddr, env.Logger, reg, api.Ready)
	if err != nil {
		return err
	}
	defer stopOps()
	if err := api.Open(); err != nil {
		return fmt.Errorf("HTTP_ADDR=%q: %w (set HTTP_ADDR to a free address)", cfg.UserAPI.WithDefaults().HTTPAddr, err)
	}
	inboxLine := "off (DEV_INBOX_ADDR=off, or mail goes to SMTP_HOST)"
	if cfg.SMTP.Host == "" {
		addr, stopInbox, err := serveInbox(cfg.DevInboxAddr, outboxDir(cfg))
		if err != nil {
			return err
		}
		defer stopInbox()
		if addr != "" {
			inboxLine = "http://" + addr + "/"
		}
	}

	// The workers stop after the API has drained, not with ctx; the first
	// that fails stops everything.
	workers, stopWorkers := context.WithCancel(context.Background())
	defer stopWorkers()
	g, gctx := errgroup.WithContext(workers)
	g.Go(func() error { return named("notifier", n.Run(gctx)) })
	g.Go(func() error { return named("recommender", r.Run(gctx)) })
	g.Go(func() error { return named("audit", aud.Run(gctx)) })

	mailLine := "SMTP " + cfg.SMTP.Host
	if cfg.SMTP.Host == "" {
		mailLine = outboxDir(cfg) + "/ (one .eml file per mail; no SMTP server needed)"
	}
	base := "http://" + api.Addr()
	fmt.Fprintf(env.Stdout, `
Countersign dev is running. Ctrl-C stops it.

  Pages        %s/   (register here; PUBLIC_URL %s)
  Inbox        %s
  User API     %s   (/api/register, /api/verify, /api/resend, /healthz, /readyz)
  Kafka        %s
  Metrics      %s   (/metrics, /healthz, /readyz; METRICS_ADDR)
  Notifier     consumer group %s, mail to %s
  Recommender  consumer group %s
  Audit        consumer group %s, every event into %s

Try it in a browser: open %s/ and register, then open the inbox
(%s), read the code or click the link, and confirm.

Or with curl:
  curl -sS -X POST %s/api/register -H 'Content-Type: application/json' \
    -d '{"email":"ada@example.com","first_name":"Ada","last_name":"Lovelace"}'
  # the code is in the newest mail:
  grep -m1 -oE '^ {4}[0-9]{6}' $(ls -t %s/*.eml | head -1)
  curl -sS -X POST %s/api/verify -H 'Content-Type: application/json' \
    -d '{"email":"ada@example.com","code":"123456"}'

`, base, cfg.UserAPI.PublicURL, inboxLine, base, kafkaLine, opsLine(opsAddr), n.GroupID(), mailLine, r.GroupID(), aud.GroupID(), audStore, base, inboxLine, base, outboxDir(cfg), base)

	select {
	case <-ctx.Done():
	case <-gctx.Done():
	}
	env.Logger.Info("shutting down: draining HTTP, committing offsets, flushing the producer")
	apiErr := api.Close()
	stopWorkers()
	if err := g.Wait(); err != nil {
		return err
	}
	return apiErr
}

// named prefixes a service's error with its name.
func named(name string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// opsLine is where dev serves /metrics, for the banner.
func opsLine(addr string) string {
	if addr == "off" {
		return "off (METRICS_ADDR=off)"
	}
	return "http://" + addr
}

func outboxDir(cfg *config) string { return cmp.Or(cfg.OutboxDir, mail.DefaultOutboxDir) }

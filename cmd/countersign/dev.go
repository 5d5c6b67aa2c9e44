package main

import (
	"cmp"
	"context"
	"fmt"
	"strings"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/embedded"
	"github.com/countersign/countersign/mail"
	"github.com/countersign/countersign/notifier"
	"github.com/countersign/countersign/recommender"
	"github.com/countersign/countersign/userapi"
)

// runDev runs the whole platform in one process: an embedded broker (unless
// KAFKA_BROKERS points at a cluster), the user API, the notifier, the
// recommender and the audit (into ./countersign-audit.db by default). It is
// for a laptop: the embedded broker keeps everything in memory and loses it
// at exit.
func runDev(ctx context.Context, env *Env) error {
	apiCfg, err := userapi.ConfigFromEnv(env.Getenv)
	if err != nil {
		return err
	}
	notCfg, err := notifierConfigFromEnv(env.Getenv)
	if err != nil {
		return err
	}
	recCfg, err := recommenderConfigFromEnv(env.Getenv)
	if err != nil {
		return err
	}
	audCfg, err := auditConfigFromEnv(env.Getenv)
	if err != nil {
		return err
	}
	kcfg, err := kafkaConfig(env)
	if err != nil {
		return err
	}
	tpl, sender, err := mailer(env)
	if err != nil {
		return err
	}
	defer sender.Close()

	kafkaLine := kcfg.Brokers
	if kcfg.Brokers == "" {
		addr := strings.TrimSpace(env.Getenv("EMBEDDED_KAFKA_ADDR"))
		if addr == "" {
			addr = "127.0.0.1:9092"
		}
		broker, err := embedded.Start(addr)
		if err != nil {
			return fmt.Errorf("EMBEDDED_KAFKA_ADDR=%q: %w (set EMBEDDED_KAFKA_ADDR to a free address, or KAFKA_BROKERS to use a running cluster)", addr, err)
		}
		defer broker.Close()
		kcfg.Brokers = broker.Addr()
		kafkaLine = kcfg.Brokers + " (embedded, in memory)"
	}

	var keys *events.Keyring
	if env.Getenv("CODE_ENCRYPTION_KEYS") == "" {
		// One process seals and opens, so a key that lives as long as the
		// process is enough; events from an earlier run cannot be opened.
		if keys, err = events.NewRandomKeyring(); err != nil {
			return err
		}
		env.Logger.Info("CODE_ENCRYPTION_KEYS is not set: using a random key for this process")
	} else if keys, err = keyring(env); err != nil {
		return err
	}

	// One registry: the user API's /metrics shows every part's metrics.
	// The workers are built first: that validates their settings, while the
	// user API waits for Kafka (and Redis).
	reg := newRegistry()
	n, err := notifier.New(notCfg, notifier.Deps{Kafka: kcfg, Keyring: keys, Templates: tpl, Sender: sender, Logger: env.Logger, Registerer: reg})
	if err != nil {
		return err
	}
	r, err := recommender.New(recCfg, recommender.Deps{Kafka: kcfg, Templates: tpl, Sender: sender, Logger: env.Logger, Registerer: reg})
	if err != nil {
		return err
	}
	audStore, err := openAuditStore(ctx, env, audCfg)
	if err != nil {
		return err
	}
	defer audStore.Close()
	aud, err := audit.New(audCfg, audit.Deps{Kafka: kcfg, Store: audStore, Logger: env.Logger, Registerer: reg})
	if err != nil {
		return err
	}
	api, _, closeDeps, err := newUserAPI(ctx, env, apiCfg, kcfg, keys, reg)
	if err != nil {
		return err
	}
	defer closeDeps()
	if err := api.Open(); err != nil {
		return err
	}

	workers, stopWorkers := context.WithCancel(context.Background())
	defer stopWorkers()
	g := newGroup()
	g.Go("notifier", func() error { return n.Run(workers) })
	g.Go("recommender", func() error { return r.Run(workers) })
	g.Go("audit", func() error { return aud.Run(workers) })

	mailLine := "SMTP " + env.Getenv("SMTP_HOST")
	if env.Getenv("SMTP_HOST") == "" {
		dir := env.Getenv("MAIL_OUTBOX_DIR")
		if dir == "" {
			dir = mail.DefaultOutboxDir
		}
		mailLine = dir + "/ (one .eml file per mail; no SMTP server needed)"
	}
	base := "http://" + api.Addr()
	fmt.Fprintf(env.Stdout, `
Countersign dev is running. Ctrl-C stops it.

  Kafka        %s
  User API     %s   (/healthz, /readyz, /metrics)
  Notifier     consumer group %s, mail to %s
  Recommender  consumer group %s
  Audit        consumer group %s, every event into %s

Try it:
  curl -sS -X POST %s/api/register -H 'Content-Type: application/json' \
    -d '{"email":"ada@example.com","first_name":"Ada","last_name":"Lovelace"}'
  # the code is in the newest mail:
  grep -m1 -oE '^ {4}[0-9]{6}' $(ls -t %s/*.eml | head -1)
  curl -sS -X POST %s/api/verify -H 'Content-Type: application/json' \
    -d '{"email":"ada@example.com","code":"123456"}'

`, kafkaLine, base, cmp.Or(notCfg.GroupID, notifier.DefaultGroupID), mailLine, cmp.Or(recCfg.GroupID, recommender.DefaultGroupID), audCfg.GroupID, audStore, base, outboxDir(env), base)

	select {
	case <-ctx.Done():
	case <-g.Failed():
	}
	env.Logger.Info("shutting down: draining HTTP, committing offsets, flushing the producer")
	apiErr := closeServer(api)
	stopWorkers()
	if err := g.Wait(); err != nil {
		return err
	}
	return apiErr
}

func outboxDir(env *Env) string {
	if d := env.Getenv("MAIL_OUTBOX_DIR"); d != "" {
		return d
	}
	return mail.DefaultOutboxDir
}

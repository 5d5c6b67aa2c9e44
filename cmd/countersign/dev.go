package main

import (
	"cmp"
	"context"
	"fmt"
	"strings"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/embedded"
	"github.com/countersign/countersign/mail"
	"github.com/countersign/countersign/notifier"
	"github.com/countersign/countersign/recommender"
	"github.com/countersign/countersign/userapi"
)

// runDev runs the whole platform in one process: an embedded broker (unless
// KAFKA_BROKERS points at a cluster), the user API, the notifier and the
// recommender. It is for a laptop: the embedded broker keeps everything in
// memory and loses it at exit.
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

	// One registry: /metrics on METRICS_ADDR shows every part's metrics.
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
	api, _, closeDeps, err := newUserAPI(ctx, env, apiCfg, kcfg, keys, reg)
	if err != nil {
		return err
	}
	defer closeDeps()
	// Every part's metrics on the user API's METRICS_ADDR (issue 14: never
	// on the public HTTP_ADDR).
	stopOps, err := serveOps(env, defaultUserAPIOpsAddr, reg, api.Ready)
	if err != nil {
		return err
	}
	defer stopOps()
	if err := api.Open(); err != nil {
		return err
	}

	workers, stopWorkers := context.WithCancel(context.Background())
	defer stopWorkers()
	g := newGroup()
	g.Go("notifier", func() error { return n.Run(workers) })
	g.Go("recommender", func() error { return r.Run(workers) })

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
  User API     %s   (/healthz, /readyz)
  Metrics      %s   (/metrics, /healthz, /readyz)
  Notifier     consumer group %s, mail to %s
  Recommender  consumer group %s

Try it:
  curl -sS -X POST %s/api/register -H 'Content-Type: application/json' \
    -d '{"email":"ada@example.com","first_name":"Ada","last_name":"Lovelace"}'
  # the code is in the newest mail:
  grep -m1 -oE '^ {4}[0-9]{6}' $(ls -t %s/*.eml | head -1)
  curl -sS -X POST %s/api/verify -H 'Content-Type: application/json' \
    -d '{"email":"ada@example.com","code":"123456"}'

`, kafkaLine, base, opsLine(env), cmp.Or(notCfg.GroupID, notifier.DefaultGroupID), mailLine, cmp.Or(recCfg.GroupID, recommender.DefaultGroupID), base, outboxDir(env), base)

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

// opsLine is where dev serves /metrics, for the banner.
func opsLine(env *Env) string {
	addr := strings.TrimSpace(env.Getenv("METRICS_ADDR"))
	switch addr {
	case "":
		return "http://" + defaultUserAPIOpsAddr
	case "off":
		return "off (METRICS_ADDR=off)"
	}
	return "http://" + addr
}

func outboxDir(env *Env) string {
	if d := env.Getenv("MAIL_OUTBOX_DIR"); d != "" {
		return d
	}
	return mail.DefaultOutboxDir
}

package main

import (
	"context"
	"fmt"
	"time"

	"github.com/countersign/countersign/audit"
)

// auditSettings are the audit's own variables (settings.go has their rows).
var auditSettings = []string{audit.EnvGroupID, audit.EnvDatabaseURL, audit.EnvBatchSize, audit.EnvBatchInterval}

// auditCommand is `countersign audit`; main.go lists it.
var auditCommand = command{
	"write every event into SQL, in batches, exactly once (consumer group audit-service; SQLite by default, PostgreSQL for production)",
	concat(auditSettings, opsSettings, kafkaSettings, logSettings), runAudit,
}

// auditOpsAddr is the audit's default METRICS_ADDR.
const auditOpsAddr = "127.0.0.1:9103"

func auditConfigFromEnv(getenv func(string) string) (audit.Config, error) {
	r := envReader{Getenv: getenv}
	c := audit.Config{GroupID: r.String(audit.EnvGroupID), DatabaseURL: r.String(audit.EnvDatabaseURL)}
	r.Int(audit.EnvBatchSize, &c.BatchSize, 1)
	r.Duration(audit.EnvBatchInterval, &c.BatchInterval, "1s")
	if err := r.Err(); err != nil {
		return c, err
	}
	c = c.WithDefaults()
	return c, c.Validate()
}

// openAuditStore opens the audit database and migrates it, waiting for it a
// little: in docker compose the audit may start before PostgreSQL accepts
// connections.
func openAuditStore(ctx context.Context, env *Env, cfg audit.Config) (*audit.Store, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		s, err := audit.Open(ctx, cfg.DatabaseURL)
		if err == nil {
			env.Logger.Info("audit database ready", "database", s.String())
			return s, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: %w", audit.EnvDatabaseURL, err)
		case <-time.After(time.Second):
			env.Logger.Warn("audit database not ready; retrying", "err", err)
		}
	}
}

func runAudit(ctx context.Context, env *Env) error {
	cfg, err := auditConfigFromEnv(env.Getenv)
	if err != nil {
		return err
	}
	kcfg, err := kafkaConfig(env)
	if err != nil {
		return err
	}
	if err := kcfg.Validate(); err != nil {
		return err
	}
	store, err := openAuditStore(ctx, env, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	reg := newRegistry()
	a, err := audit.New(cfg, audit.Deps{Kafka: kcfg, Store: store, Logger: env.Logger, Registerer: reg})
	if err != nil {
		return err
	}
	return runWorker(ctx, env, kcfg, auditOpsAddr, reg, a)
}

package main

import (
	"cmp"
	"context"

	"github.com/countersign/countersign/cmd/internal/platform"
)

// auditCommand is `countersign audit`; main.go lists it.
var auditCommand = command{
	"write every event into SQL, in batches, exactly once (consumer group audit-service; SQLite by default, PostgreSQL for production)",
	concat(auditSettings, opsSettings, kafkaSettings, logSettings), runAudit,
}

// auditOpsAddr is the audit's default METRICS_ADDR.
const auditOpsAddr = "127.0.0.1:9103"

func runAudit(ctx context.Context, env *Env, cfg *config) error {
	reg := newRegistry()
	a, store, err := platform.NewAudit(ctx, cfg.Config, reg)
	if err != nil {
		return err
	}
	defer store.Close()
	return runWorker(ctx, env, cfg, cmp.Or(cfg.MetricsAddr, auditOpsAddr), reg, a)
}

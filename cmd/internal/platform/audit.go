package platform

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/countersign/countersign/audit"
)

// NewAudit opens the audit's database (migrating it), waiting for it up to
// StartTimeout: under docker compose the audit may start before PostgreSQL
// accepts connections. It returns the audit, ready to Run, and the store,
// to close after Run returned.
func NewAudit(ctx context.Context, cfg Config, reg prometheus.Registerer) (*audit.Audit, *audit.Store, error) {
	ac := cfg.Audit.WithDefaults()
	if err := ac.Validate(); err != nil {
		return nil, nil, err
	}
	var store *audit.Store
	err := WaitFor(ctx, StartTimeout, time.Second, func(ctx context.Context) error {
		s, err := audit.Open(ctx, ac.DatabaseURL)
		if err != nil {
			cfg.logger().Warn("audit database not ready; retrying", "err", err)
			return err
		}
		store = s
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", audit.EnvDatabaseURL, err)
	}
	cfg.logger().Info("audit database ready", "database", store.String())
	a, err := audit.New(ac, audit.Deps{Kafka: cfg.Kafka, Store: store, Logger: cfg.logger(), Registerer: reg})
	if err != nil {
		store.Close()
		return nil, nil, err
	}
	return a, store, nil
}

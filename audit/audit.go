// Package audit writes every event the platform emits into SQL (SQLite or
// PostgreSQL), in batches, exactly once: the audit_events table, the
// accounts table of verified addresses, and the offsets the service resumes
// from. See docs/audit.md for the schema and ready queries.
package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/countersign/countersign/events/kafka"
)

// DefaultGroupID is the audit's consumer group. Its offsets live in the
// database (audit_offsets, by group), so a renamed group re-reads the
// retained history; rows already there are not written twice.
const DefaultGroupID = "audit-service"

// Prefix starts the names of the audit's variables: AUDIT_GROUP_ID, …
const Prefix = "AUDIT_"

// Environment variables of the audit (read by cmd).
const (
	EnvGroupID       = "AUDIT_GROUP_ID"
	EnvDatabaseURL   = "AUDIT_DATABASE_URL"
	EnvBatchSize     = "AUDIT_BATCH_SIZE"
	EnvBatchInterval = "AUDIT_BATCH_INTERVAL"
)

// Defaults.
const (
	DefaultDatabaseURL   = "sqlite://./countersign-audit.db"
	DefaultBatchSize     = 500
	DefaultBatchInterval = time.Second
)

// Config configures the audit. Zero values mean the defaults.
type Config struct {
	// GroupID is the consumer group (AUDIT_GROUP_ID, default
	// "audit-service"); it names the dead-letter topic "<group-id>.dlq".
	GroupID string
	// DatabaseURL picks the database (AUDIT_DATABASE_URL, default
	// sqlite://./countersign-audit.db): sqlite://PATH or postgres://….
	DatabaseURL string
	// BatchSize writes a batch once it holds this many events
	// (AUDIT_BATCH_SIZE, default 500).
	BatchSize int
	// BatchInterval writes the open batch this long after its first event
	// when it did not fill up first (AUDIT_BATCH_INTERVAL, default 1s).
	BatchInterval time.Duration
}

// WithDefaults returns c with zero-valued fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.GroupID == "" {
		c.GroupID = DefaultGroupID
	}
	if c.DatabaseURL == "" {
		c.DatabaseURL = DefaultDatabaseURL
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.BatchInterval == 0 {
		c.BatchInterval = DefaultBatchInterval
	}
	return c
}

// Validate reports every setting that cannot work, naming its variable.
// Call it after WithDefaults.
func (c Config) Validate() error {
	var errs []error
	// The kit's rule for group ids (it names the dead-letter topic).
	wc := kafka.WorkerConfig{Prefix: Prefix, GroupID: c.GroupID}.WithDefaults(DefaultGroupID)
	if err := wc.Validate(); err != nil {
		errs = append(errs, err)
	}
	if _, _, err := ParseDatabaseURL(c.DatabaseURL); err != nil {
		// The URL may hold a password: not quoted.
		errs = append(errs, fmt.Errorf("%s: %w", EnvDatabaseURL, err))
	}
	if c.BatchSize < 1 {
		errs = append(errs, fmt.Errorf("%s=%d: want a whole number ≥ 1", EnvBatchSize, c.BatchSize))
	}
	if c.BatchInterval <= 0 {
		errs = append(errs, fmt.Errorf("%s=%v: want a duration > 0, such as 1s", EnvBatchInterval, c.BatchInterval))
	}
	return errors.Join(errs...)
}

// Deps are the audit's collaborators.
type Deps struct {
	Kafka kafka.Config
	// Store is the database; Open makes one from Config.DatabaseURL. The
	// audit does not close it.
	Store  *Store
	Logger *slog.Logger
	// Registerer receives the metrics; nil registers nowhere.
	Registerer prometheus.Registerer
}

// Audit is the audit service: a kafka.BatchConsumer writing to a Store.
type Audit struct {
	*kafka.BatchConsumer
	store   *Store
	metrics *metrics
}

// Option adjusts the batch consumer's configuration; tests use it.
type Option func(*kafka.BatchConfig)

// New checks the configuration and builds the service; Run starts it.
func New(cfg Config, deps Deps, opts ...Option) (*Audit, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Store == nil {
		return nil, errors.New("audit: no store")
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	a := &Audit{store: deps.Store, metrics: newMetrics(deps.Registerer)}
	deps.Store.onDuplicates = func(n int) { a.metrics.duplicates.Add(float64(n)) }
	bc := kafka.BatchConfig{
		GroupID:  cfg.GroupID,
		Topics:   Topics,
		Size:     cfg.BatchSize,
		Interval: cfg.BatchInterval,
		Decode:   Decode,
		OnBatch: func(s kafka.BatchStats) {
			a.metrics.batchSize.Observe(float64(s.Records))
			a.metrics.batchDuration.Observe(s.Duration.Seconds())
			a.metrics.rows.Add(float64(s.Records))
		},
		OnDeadLetter: func(topic string, _ error) { a.metrics.deadLettered.WithLabelValues(topic).Inc() },
		OnWriteError: func(error) { a.metrics.writeErrors.Inc() },
		OnLag: func(p kafka.Partition, lag int64) {
			a.metrics.lag.WithLabelValues(p.Topic, strconv.Itoa(int(p.Partition))).Set(float64(lag))
		},
		// Partitions that went to another member have no lag here.
		OnAssignment: func([]kafka.Partition) { a.metrics.lag.Reset() },
		// The kit's metrics, as every subscriber exports them (issue 17):
		// countersign_consumer_lag_records{group="audit-service",…}, which
		// the dashboard and the lag alert read, held back while the
		// database is down, and dead letters.
		Registerer: deps.Registerer,
	}
	for _, o := range opts {
		o(&bc)
	}
	k := deps.Kafka
	k.Logger = deps.Logger
	c, err := kafka.NewBatchConsumer(k, bc, deps.Store)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	a.BatchConsumer = c
	return a, nil
}

// Ready reports whether the service consumes, the database answers and the
// brokers answer: what /readyz serves.
func (a *Audit) Ready(ctx context.Context) error {
	if err := a.store.Ping(ctx); err != nil {
		return fmt.Errorf("audit database: %w", err)
	}
	return a.BatchConsumer.Ready(ctx)
}

// Metrics are the service's metric collectors, for tests.
type Metrics struct {
	Rows, Duplicates, DatabaseErrors prometheus.Counter
}

// Metrics returns the collectors behind the rows, duplicates and database
// errors counters.
func (a *Audit) Metrics() Metrics {
	return Metrics{Rows: a.metrics.rows, Duplicates: a.metrics.duplicates, DatabaseErrors: a.metrics.writeErrors}
}

type metrics struct {
	rows, duplicates, writeErrors prometheus.Counter
	deadLettered                  *prometheus.CounterVec
	batchSize, batchDuration      prometheus.Histogram
	lag                           *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		rows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "countersign_audit_rows_written_total", Help: "Events written to audit_events in committed batches (an event already there counts too; see duplicates).",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "countersign_audit_duplicates_skipped_total", Help: "Events of committed batches whose event_id was already in audit_events (published twice, or re-read after a lost partition).",
		}),
		writeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "countersign_audit_database_errors_total", Help: "Failed batch writes and offset reads; the batch is held and retried.",
		}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "countersign_audit_dead_lettered_total", Help: "Records that were not valid events, written to audit-service.dlq, by original topic.",
		}, []string{"topic"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "countersign_audit_batch_size", Help: "Events per committed batch.",
			Buckets: []float64{1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000},
		}),
		batchDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "countersign_audit_batch_duration_seconds", Help: "Time to write one batch (one transaction with its offsets).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "countersign_audit_lag", Help: "Records on the broker not yet in the database, by assigned topic and partition (high watermark minus the stored offset).",
		}, []string{"topic", "partition"}),
	}
	if reg != nil {
		reg.MustRegister(m.rows, m.duplicates, m.writeErrors, m.deadLettered, m.batchSize, m.batchDuration, m.lag)
	}
	return m
}

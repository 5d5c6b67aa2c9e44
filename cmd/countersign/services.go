package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/countersign/countersign/cmd/internal/platform"
	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/problem"
)

func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

func runKeygen(_ context.Context, env *Env, _ *config) error {
	entry, err := events.GenerateKeyEntry()
	if err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, entry)
	return nil
}

func runUserAPI(ctx context.Context, env *Env, cfg *config) error {
	if err := platform.EnsureTopics(ctx, cfg.Kafka, events.Topics...); err != nil {
		return err
	}
	reg := newRegistry()
	api, err := platform.NewUserAPI(ctx, cfg.Config, reg)
	if err != nil {
		return err
	}
	// /metrics on METRICS_ADDR, never on the public HTTP_ADDR (issue 14).
	stopOps, err := serveOps(cmp.Or(cfg.MetricsAddr, userAPIOpsAddr), env.Logger, reg, api.Ready)
	if err != nil {
		_ = api.Close()
		return err
	}
	defer stopOps()
	if err := api.Open(); err != nil {
		_ = api.Close()
		return err
	}
	env.Logger.Info("user API started", "addr", api.Addr(), "kafka", cfg.Kafka, "pending_store", api.Store)
	<-ctx.Done()
	env.Logger.Info("shutting down: draining HTTP, then flushing the producer")
	return api.Close()
}

func runNotifier(ctx context.Context, env *Env, cfg *config) error {
	m, err := platform.NewMail(cfg.Config)
	if err != nil {
		return err
	}
	defer m.Close()
	reg := newRegistry()
	n, err := platform.NewNotifier(cfg.Config, m, reg, platform.TopicsReady())
	if err != nil {
		return err
	}
	return runWorker(ctx, env, cfg, cmp.Or(cfg.MetricsAddr, notifierOpsAddr), reg, n)
}

func runRecommender(ctx context.Context, env *Env, cfg *config) error {
	m, err := platform.NewMail(cfg.Config)
	if err != nil {
		return err
	}
	defer m.Close()
	reg := newRegistry()
	r, err := platform.NewRecommender(cfg.Config, m, reg, platform.TopicsReady())
	if err != nil {
		return err
	}
	return runWorker(ctx, env, cfg, cmp.Or(cfg.MetricsAddr, recommenderOpsAddr), reg, r)
}

// worker is a consumer run by runWorker: the notifier or the recommender.
type worker interface {
	Run(context.Context) error
	Ready(context.Context) error
	DeadLetterTopic() string
}

// runWorker serves a consumer's /metrics, /healthz and /readyz on opsAddr,
// creates the topics and its dead-letter topic when missing, and runs it
// until ctx ends.
func runWorker(ctx context.Context, env *Env, cfg *config, opsAddr string, reg *prometheus.Registry, w worker) error {
	stopOps, err := serveOps(opsAddr, env.Logger, reg, w.Ready)
	if err != nil {
		return err
	}
	defer stopOps()
	if err := platform.EnsureTopics(ctx, cfg.Kafka, append(events.Topics[:len(events.Topics):len(events.Topics)], w.DeadLetterTopic())...); err != nil {
		return err
	}
	return w.Run(ctx)
}

// serveOps serves /metrics, /healthz and /readyz of a service on addr ("off"
// disables it). /healthz says the process is up; /readyz asks ready, and
// answers 503 problem+json when it fails. Bind errors come back at once.
func serveOps(addr string, logger *slog.Logger, reg *prometheus.Registry, ready func(context.Context) error) (stop func(), err error) {
	if addr == "off" {
		return func() {}, nil
	}
	// The user API registers countersign_ready itself (platform.NewUserAPI):
	// its ops endpoint serves that one.
	if err := platform.RegisterReady(reg, ready); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("METRICS_ADDR=%q: %w (set METRICS_ADDR to a free address, or off)", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			logger.Warn("not ready", "err", err)
			problem.Write(w, problem.Problem{
				Type:     problem.Type("unavailable"),
				Title:    "Service unavailable",
				Status:   http.StatusServiceUnavailable,
				Detail:   "The service is not ready: the consumer is not running, or the message broker or the pending store is not reachable.",
				Instance: r.URL.Path,
			})
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ready"}` + "\n"))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics server stopped", "err", err)
		}
	}()
	logger.Info("metrics and health endpoint started", "addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

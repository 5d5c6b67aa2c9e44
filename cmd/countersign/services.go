package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/mail"
	"github.com/countersign/countersign/notifier"
	"github.com/countersign/countersign/recommender"
	"github.com/countersign/countersign/templates"
	"github.com/countersign/countersign/userapi"
)

// shutdownTimeout bounds each step of a graceful shutdown: draining HTTP,
// flushing the producer.
const shutdownTimeout = 15 * time.Second

func kafkaConfig(env *Env) (kafka.Config, error) {
	cfg, err := kafka.ConfigFromEnv(env.Environ())
	if err != nil {
		return cfg, err
	}
	cfg.Logger = env.Logger
	return cfg, nil
}

// alignDeliveryTimeout makes librdkafka give up on an event when the user
// API does: a 503 after PUBLISH_TIMEOUT then means "not delivered" rather
// than "maybe delivered later" (an in-flight request can still land). An
// explicit KAFKA_MESSAGE_TIMEOUT_MS wins.
func alignDeliveryTimeout(kcfg *kafka.Config, cfg userapi.Config) {
	if _, set := kcfg.Client["message.timeout.ms"]; set {
		return
	}
	d := cfg.PublishTimeout
	if d == 0 {
		d = userapi.DefaultPublishTimeout
	}
	if kcfg.Client == nil {
		kcfg.Client = map[string]string{}
	}
	kcfg.Client["message.timeout.ms"] = strconv.FormatInt(d.Milliseconds(), 10)
}

func keyring(env *Env) (*events.Keyring, error) {
	return events.ParseKeyring(env.Getenv("CODE_ENCRYPTION_KEYS"))
}

func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

func runKeygen(_ context.Context, env *Env) error {
	entry, err := events.GenerateKeyEntry()
	if err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, entry)
	return nil
}

func runUserAPI(ctx context.Context, env *Env) error {
	cfg, err := userapi.ConfigFromEnv(env.Getenv)
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
	keys, err := keyring(env)
	if err != nil {
		return err
	}
	reg := newRegistry()
	srv, store, closeDeps, err := newUserAPI(ctx, env, cfg, kcfg, keys, reg)
	if err != nil {
		return err
	}
	defer closeDeps()
	// /metrics on METRICS_ADDR, never on the public HTTP_ADDR (issue 14).
	stopOps, err := serveOps(env, defaultUserAPIOpsAddr, reg, srv.Ready)
	if err != nil {
		return err
	}
	defer stopOps()
	if err := srv.Open(); err != nil {
		return err
	}
	env.Logger.Info("user API started", "addr", srv.Addr(), "kafka", kcfg, "pending_store", store.desc)
	<-ctx.Done()
	env.Logger.Info("shutting down: draining HTTP, then flushing the producer")
	return closeServer(srv)
}

// defaultUserAPIOpsAddr is METRICS_ADDR's default for userapi and dev.
const defaultUserAPIOpsAddr = "127.0.0.1:9100"

// newUserAPI builds a user API with its producer and pending store, after
// creating the topics when missing. closeDeps flushes the producer and
// closes the store: call it after the server is closed.
func newUserAPI(ctx context.Context, env *Env, cfg userapi.Config, kcfg kafka.Config, keys *events.Keyring, reg userapi.Registry) (srv *userapi.Server, store *pendingStore, closeDeps func(), err error) {
	// A wrong setting is reported before anything waits for Kafka or Redis,
	// not a minute later as "not reachable".
	if err := cfg.WithDefaults().Validate(); err != nil {
		return nil, nil, nil, err
	}
	if _, err := parsePendingStore(strings.TrimSpace(env.Getenv("PENDING_STORE"))); err != nil {
		return nil, nil, nil, err
	}
	if err := ensureTopics(ctx, kcfg); err != nil {
		return nil, nil, nil, err
	}
	pcfg := kcfg
	pcfg.Client = maps.Clone(kcfg.Client)
	alignDeliveryTimeout(&pcfg, cfg)
	producer, err := kafka.NewProducer(pcfg)
	if err != nil {
		return nil, nil, nil, err
	}
	store, err = openPendingStore(ctx, env)
	if err != nil {
		closeProducer(producer, env.Logger)
		return nil, nil, nil, err
	}
	closeDeps = func() {
		closeProducer(producer, env.Logger)
		store.close()
	}
	srv, err = userapi.NewServer(cfg, userapi.Deps{
		Publisher: producer, Keyring: keys, Store: store.Store, NewRateLimiter: store.newRateLimiter,
		NewMailBudget: store.newMailBudget,
		Ready:         store.ready(producer.Ping), Logger: env.Logger, Registry: reg,
	})
	if err != nil {
		closeDeps()
		return nil, nil, nil, err
	}
	return srv, store, closeDeps, nil
}

func closeServer(srv *userapi.Server) error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	return srv.Close(ctx)
}

func closeProducer(p *kafka.Producer, logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		logger.Error("close producer", "err", err)
	}
}

// ensureTopics creates topics when missing (the platform's when none are
// named), waiting for the brokers a little: in docker compose the services
// may start before Kafka accepts requests.
func ensureTopics(ctx context.Context, kcfg kafka.Config, topics ...string) error {
	if len(topics) == 0 {
		topics = events.Topics
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var err error
	for {
		if err = kafka.EnsureTopics(ctx, kcfg, topics...); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafka not reachable: %w", err)
		case <-time.After(time.Second):
		}
	}
}

// mailer builds the shared mail pieces: templates and a sender.
func mailer(env *Env) (*templates.Set, mail.Sender, error) {
	tpl, err := templates.Load(strings.TrimSpace(env.Getenv("TEMPLATES_DIR")))
	if err != nil {
		return nil, nil, err
	}
	smtpCfg, outbox, err := smtpConfigFromEnv(env.Getenv)
	if err != nil {
		return nil, nil, err
	}
	sender, err := mail.NewSender(smtpCfg, outbox, env.Logger)
	if err != nil {
		return nil, nil, err
	}
	return tpl, sender, nil
}

func runNotifier(ctx context.Context, env *Env) error {
	cfg, err := notifierConfigFromEnv(env.Getenv)
	if err != nil {
		return err
	}
	kcfg, err := kafkaConfig(env)
	if err != nil {
		return err
	}
	keys, err := keyring(env)
	if err != nil {
		return err
	}
	tpl, sender, err := mailer(env)
	if err != nil {
		return err
	}
	defer sender.Close()
	reg := newRegistry()
	n, err := notifier.New(cfg, notifier.Deps{Kafka: kcfg, Keyring: keys, Templates: tpl, Sender: sender, Logger: env.Logger, Registerer: reg})
	if err != nil {
		return err
	}
	return runWorker(ctx, env, kcfg, "127.0.0.1:9101", reg, n)
}

// worker is a consumer run by runWorker: the notifier or the recommender.
type worker interface {
	Run(context.Context) error
	Ready(context.Context) error
}

// runWorker serves a consumer's /metrics, /healthz and /readyz on
// METRICS_ADDR (defaultOpsAddr when unset), creates the topics when missing,
// and runs it until ctx ends.
func runWorker(ctx context.Context, env *Env, kcfg kafka.Config, defaultOpsAddr string, reg *prometheus.Registry, w worker) error {
	stopOps, err := serveOps(env, defaultOpsAddr, reg, w.Ready)
	if err != nil {
		return err
	}
	defer stopOps()
	if err := ensureTopics(ctx, kcfg); err != nil {
		return err
	}
	return w.Run(ctx)
}

func runRecommender(ctx context.Context, env *Env) error {
	cfg, err := recommenderConfigFromEnv(env.Getenv)
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
	reg := newRegistry()
	r, err := recommender.New(cfg, recommender.Deps{Kafka: kcfg, Templates: tpl, Sender: sender, Logger: env.Logger, Registerer: reg})
	if err != nil {
		return err
	}
	return runWorker(ctx, env, kcfg, "127.0.0.1:9102", reg, r)
}

// serveOps serves /metrics, /healthz and /readyz of a worker on
// METRICS_ADDR (defaultAddr when unset; "off" disables it). /healthz says
// the process is up; /readyz asks ready, and answers 503 problem+json when
// it fails. Bind errors come back at once.
func serveOps(env *Env, defaultAddr string, reg *prometheus.Registry, ready func(context.Context) error) (stop func(), err error) {
	addr := strings.TrimSpace(env.Getenv("METRICS_ADDR"))
	if addr == "" {
		addr = defaultAddr
	}
	if addr == "off" {
		return func() {}, nil
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
			env.Logger.Warn("not ready", "err", err)
			w.Header().Set("Content-Type", userapi.ContentTypeProblem)
			w.WriteHeader(http.StatusServiceUnavailable)
			_ = json.NewEncoder(w).Encode(userapi.Problem{
				Type:     userapi.CodeUnavailable.Type(),
				Title:    "Service unavailable",
				Status:   http.StatusServiceUnavailable,
				Detail:   "The consumer is not running or the message broker is not reachable.",
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
			env.Logger.Error("metrics server stopped", "err", err)
		}
	}()
	env.Logger.Info("metrics and health endpoint started", "addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// group runs functions until the first fails or all return; like errgroup,
// kept here to spare a dependency for twenty lines.
type group struct {
	wg   sync.WaitGroup
	once sync.Once
	err  error
	fail chan struct{}
}

func newGroup() *group { return &group{fail: make(chan struct{})} }

func (g *group) Go(name string, fn func() error) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := fn(); err != nil {
			g.once.Do(func() { g.err = fmt.Errorf("%s: %w", name, err); close(g.fail) })
		}
	}()
}

// Failed is closed when a function returned an error.
func (g *group) Failed() <-chan struct{} { return g.fail }

// Wait waits for all and returns the first error.
func (g *group) Wait() error {
	g.wg.Wait()
	return g.err
}

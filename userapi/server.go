package userapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"
	"go.opentelemetry.io/otel/trace"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/templates"
)

// Deps are the server's collaborators.
type Deps struct {
	// Publisher publishes user_account_created, user_account_verified and
	// user_account_exists.
	// Required; in production an *kafka.Producer.
	Publisher events.Publisher

	// Keyring seals codes into events and MACs them for the store. Required.
	// Every replica must share it (CODE_ENCRYPTION_KEYS).
	Keyring *events.Keyring

	// NewRateLimiter, when set, builds the per-client rate limit from
	// Config.RateLimitPerIP and RateLimitBurst (unless the limit is off);
	// nil means an in-process limiter. Replicas behind one load balancer
	// share a budget with RedisStore.RateLimiter.
	NewRateLimiter func(perMinute, burst int) RateLimiter

	// Store keeps pending registrations. Nil means a new MemoryStore.
	Store Store

	// NewMailBudget, when set, builds the mail budgets from
	// Config.CodeMaxSendsPerDay and CodeMaxSendsPerHour; nil means an
	// in-process MemoryBudget. Replicas share budgets with
	// RedisStore.MailBudget.
	NewMailBudget func(perDay, perHour int) MailBudget

	// Ready reports whether the broker and the pending store are
	// reachable, for GET /readyz (kafka.Producer.Ping, and the Redis
	// store's Ping). Nil means always ready.
	Ready func(context.Context) error

	// AccountsLoaded is closed once the store holds every account of the
	// accounts log (cmd/countersign follows the compacted topic
	// user_account_verified with kafka.FollowTopic). Until then /readyz and
	// every /api/ route answer 503, so no request is answered from a
	// half-built memory. Nil means nothing to wait for.
	AccountsLoaded <-chan struct{}

	// Logger receives request logs (debug) and server-side failures
	// (error). Nil means slog.Default().
	Logger *slog.Logger

	// Pages renders the hosted pages when Config.Pages is on. Nil means
	// the embedded pages (templates.LoadPages("", …)) with PublicURL.
	Pages *templates.Pages

	// TracerProvider makes a span of each API request, which the events
	// it publishes continue (see traceRequests). Nil means OpenTelemetry's
	// global provider, which does nothing unless the process installed one.
	TracerProvider trace.TracerProvider

	// Registry gets the server's metrics. Nil means a new registry with the
	// Go and process collectors, never the global default one, so several
	// servers can share a process. The server does not serve it: /metrics
	// belongs on an operations address (METRICS_ADDR), never on the public
	// port, where it would tell which addresses are pending.
	Registry Registry
}

// Server is the user API over HTTP. Create it with NewServer, then either
// Open it (it listens on Config.HTTPAddr) or mount Handler yourself.
type Server struct {
	cfg       Config
	publisher events.Publisher
	keyring   *events.Keyring
	store     Store
	ready     func(context.Context) error
	loaded    <-chan struct{}
	logger    *slog.Logger
	tracer    trace.Tracer
	metrics   *metrics
	limiter   RateLimiter
	pages     *templates.Pages
	budget    MailBudget

	router  *mux.Router
	handler http.Handler
	// allow maps each path to its methods, for 405's Allow header.
	allow map[string][]string
	// publishEWMA is a moving average of user_account_created publish
	// latency in nanoseconds (see handleResend).
	publishEWMA atomic.Int64
	// lastFullWarn is when "pending store full" was last logged (Unix ns).
	lastFullWarn atomic.Int64

	mu     sync.Mutex
	srv    *http.Server
	ln     net.Listener
	served chan struct{}
}

// NewServer checks cfg (after applying defaults) and deps and builds the
// routes. It does not listen: see Open.
func NewServer(cfg Config, deps Deps) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("userapi: %w", err)
	}
	if deps.Publisher == nil {
		return nil, errors.New("userapi: Deps.Publisher is required")
	}
	if deps.Keyring == nil {
		return nil, errors.New("userapi: Deps.Keyring is required")
	}
	if deps.Store == nil {
		deps.Store = NewMemoryStore()
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Registry == nil {
		deps.Registry = newDefaultRegistry()
	}
	if cfg.Pages && deps.Pages == nil {
		p, err := templates.LoadPages("", templates.Brand{PublicURL: cfg.PublicURL})
		if err != nil {
			return nil, fmt.Errorf("userapi: %w", err)
		}
		deps.Pages = p
	}
	m, err := newMetrics(deps.Registry, deps.Store)
	if err != nil {
		return nil, fmt.Errorf("userapi: register metrics: %w", err)
	}
	s := &Server{
		cfg:       cfg,
		publisher: deps.Publisher,
		keyring:   deps.Keyring,
		store:     deps.Store,
		ready:     deps.Ready,
		loaded:    deps.AccountsLoaded,
		logger:    deps.Logger.With("component", "userapi"),
		tracer:    newTracer(deps.TracerProvider),
		metrics:   m,
		pages:     deps.Pages,
	}
	if cfg.RateLimitPerIP != RateLimitOff {
		if deps.NewRateLimiter != nil {
			s.limiter = deps.NewRateLimiter(cfg.RateLimitPerIP, cfg.RateLimitBurst)
		} else {
			s.limiter = newIPLimiter(cfg.RateLimitPerIP, cfg.RateLimitBurst)
		}
	}
	if deps.NewMailBudget != nil {
		s.budget = deps.NewMailBudget(cfg.CodeMaxSendsPerDay, cfg.CodeMaxSendsPerHour)
	} else {
		s.budget = NewMemoryBudget(cfg.CodeMaxSendsPerDay, cfg.CodeMaxSendsPerHour)
	}
	s.routes()
	return s, nil
}

func (s *Server) routes() {
	r := mux.NewRouter()
	// Paths are matched as sent: cleaning would answer odd paths with a 301
	// redirect instead of a problem document.
	r.SkipClean(true)
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.wantsPage(r) {
			s.notFoundPage(w, r)
			return
		}
		s.error(w, r, Errorf(CodeNotFound, "There is no resource at this path."))
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.error(w, r, &Error{Code: CodeMethodNotAllowed, Detail: "The resource does not support this method.", Allow: s.allow[r.URL.Path]})
	})
	r.Use(nameRoute)
	r.Use(s.traceRequests)

	// The API routes are wrapped one by one rather than grouped in a mux
	// subrouter: a subrouter answers a wrong method with 404, not 405.
	api := func(h http.HandlerFunc) http.Handler {
		h = s.afterAccountsLoaded(h)
		if s.limiter == nil {
			return h
		}
		return rateLimit(s.limiter, s.cfg.TrustedProxies, s.logger, s.error)(h)
	}
	r.Handle("/api/register", api(s.handleRegister)).Methods(http.MethodPost)
	r.Handle("/api/verify", api(s.handleVerify)).Methods(http.MethodPost)
	r.Handle("/api/resend", api(s.handleResend)).Methods(http.MethodPost)

	s.pageRoutes(r)

	r.HandleFunc("/healthz", s.handleHealthz).Methods(http.MethodGet)
	r.HandleFunc("/readyz", s.handleReadyz).Methods(http.MethodGet)

	s.allow = map[string][]string{}
	_ = r.Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		tpl, err1 := route.GetPathTemplate()
		methods, err2 := route.GetMethods()
		if err1 == nil && err2 == nil {
			s.allow[tpl] = append(s.allow[tpl], methods...)
			sort.Strings(s.allow[tpl])
		}
		return nil
	})
	s.router = r
	s.handler = s.metrics.instrument(s.logRequests(s.recoverPanics(r)))
}

// Ready reports whether the broker and the pending store are reachable
// (Deps.Ready; nil when none was given), for an operations endpoint.
func (s *Server) Ready(ctx context.Context) error {
	if s.ready == nil {
		return nil
	}
	return s.ready(ctx)
}

// Handler returns the whole API: routes, metrics, logging, panic recovery.
func (s *Server) Handler() http.Handler { return s.handler }

// Router returns the route table, for tests that compare it with the
// OpenAPI document. Serve Handler, not this.
func (s *Server) Router() *mux.Router { return s.router }

// Open listens on Config.HTTPAddr and serves in the background. A bind error
// is returned at once. Open may be called once.
func (s *Server) Open() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return errors.New("userapi: server already opened")
	}
	ln, err := net.Listen("tcp", s.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("userapi: listen %s=%s: %w", EnvHTTPAddr, s.cfg.HTTPAddr, err)
	}
	s.ln = ln
	s.srv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		// A request may wait PublishTimeout for the broker, plus the store.
		WriteTimeout:   s.cfg.PublishTimeout + 10*time.Second,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 32 << 10,
		ErrorLog:       slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
	}
	s.served = make(chan struct{})
	go func(srv *http.Server, done chan struct{}) {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logger.Error("http server stopped", "err", err)
		}
	}(s.srv, s.served)
	s.logger.Info("listening", "addr", ln.Addr().String())
	return nil
}

// Addr returns the address the server listens on (the real port when
// HTTPAddr asked for port 0), or "" before Open.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Close stops accepting connections and waits, until ctx ends, for requests
// in flight to finish (http.Server.Shutdown); then it closes the remaining
// connections and returns ctx's error. A request cut off that way has had
// its store change undone or kept consistently: publishing is never tied
// to the client's connection. Close before Open does nothing.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	srv, served := s.srv, s.served
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	err := srv.Shutdown(ctx)
	if err != nil {
		_ = srv.Close()
		err = fmt.Errorf("userapi: shutdown: %w", err)
	}
	<-served
	return err
}

// accountsLoaded reports whether the store holds every account yet.
func (s *Server) accountsLoaded() bool {
	if s.loaded == nil {
		return true
	}
	select {
	case <-s.loaded:
		return true
	default:
		return false
	}
}

var errAccountsLoading = &Error{Code: CodeUnavailable, Detail: "The service is starting; retry in a few seconds.", RetryAfter: 5 * time.Second,
	Err: errors.New("the verified addresses are still being loaded from Kafka")}

// afterAccountsLoaded answers 503 until the accounts are loaded.
func (s *Server) afterAccountsLoaded(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.accountsLoaded() {
			s.error(w, r, errAccountsLoading)
			return
		}
		h(w, r)
	}
}

func (s *Server) error(w http.ResponseWriter, r *http.Request, err error) {
	writeError(w, r, s.logger, err)
}

// logRequests logs each request at debug level. The path and the status are
// logged; the body, which holds addresses and codes, never is.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.logger.Enabled(r.Context(), slog.LevelDebug) {
			next.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		s.logger.LogAttrs(r.Context(), slog.LevelDebug, "request",
			slog.String("method", r.Method),
			slog.String("path", safePath(r)),
			slog.Int("status", sw.status()),
			slog.Duration("duration", time.Since(start)))
	})
}

// recoverPanics turns a panic in a handler into a 500 problem, so one bad
// request never takes the process down. http.ErrAbortHandler is let through:
// it is net/http's way to abort a response on purpose.
func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.error(w, r, fmt.Errorf("panic: %v\n%s", v, debug.Stack()))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

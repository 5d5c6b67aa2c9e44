package userapi

import (
	"context"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Registry is where the server registers its metrics, for the binary to
// serve on METRICS_ADDR. *prometheus.Registry implements it.
type Registry interface {
	prometheus.Registerer
	prometheus.Gatherer
}

// routeUnmatched labels requests no route matched (404, 405), so unknown
// paths cannot grow the label set.
const routeUnmatched = "unmatched"

type metrics struct {
	requests  *prometheus.CounterVec
	durations *prometheus.HistogramVec
	publish   *prometheus.HistogramVec
	// Issue 14's limits.
	heldBack       *prometheus.CounterVec
	pendingRefused prometheus.Counter
	// Issue 13's notices to accounts (notice.go).
	notices *prometheus.CounterVec
}

// Outcomes of a register of an account, the label values of
// countersign_account_notices_total.
const (
	noticeSent      = "sent"
	noticeThrottled = "throttled"
	noticeHeldBack  = "held_back"
)

// newMetrics registers the server's metrics on reg. pending is read at each
// scrape from the store.
func newMetrics(reg prometheus.Registerer, store Store) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "countersign_http_requests_total",
			Help: "HTTP requests handled, by route template, method and status code.",
		}, []string{"route", "method", "status"}),
		durations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "countersign_http_request_duration_seconds",
			Help:    "Time to handle an HTTP request, by route template.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route"}),
		publish: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "countersign_publish_duration_seconds",
			Help:    "Time from publishing an event to the broker's acknowledgement (or the failure), by topic and outcome (ok, error).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"topic", "outcome"}),
	}
	m.heldBack = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "countersign_code_mails_held_back_total",
		Help: "Code mails not sent because a mail budget was used up, by budget: mailbox (CODE_MAX_SENDS_PER_DAY) or platform (CODE_MAX_SENDS_PER_HOUR). The request still got 202.",
	}, []string{"budget"})
	m.pendingRefused = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "countersign_pending_refused_total",
		Help: "Registrations refused with 503 because the store held PENDING_MAX pending registrations.",
	})
	for _, b := range []string{BudgetMailbox, BudgetPlatform} {
		m.heldBack.WithLabelValues(b)
	}
	m.notices = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "countersign_account_notices_total",
		Help: "Registers of an address that is an account, by what became of the owner's notice (user_account_exists): sent (published), throttled (one went out less than RESEND_INTERVAL ago), held_back (a mail budget was used up). The request got 202 in every case.",
	}, []string{"outcome"})
	for _, o := range []string{noticeSent, noticeThrottled, noticeHeldBack} {
		m.notices.WithLabelValues(o)
	}
	pending := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "countersign_pending_registrations",
		Help: "Pending registrations held by the store (may include expired ones not swept yet).",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		n, err := store.Len(ctx)
		if err != nil {
			return math.NaN()
		}
		return float64(n)
	})
	for _, c := range []prometheus.Collector{m.requests, m.durations, m.publish, pending, m.heldBack, m.pendingRefused, m.notices} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// newDefaultRegistry is a fresh registry with the Go runtime and process
// collectors: a server never touches the global default registry, so several
// can run in one process (tests, countersign dev).
func newDefaultRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

func (m *metrics) observePublish(topic string, start time.Time, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	m.publish.WithLabelValues(topic, outcome).Observe(time.Since(start).Seconds())
}

// instrument counts and times every request. It wraps the router, so it
// sees 404s and 405s too; the route label is set by nameRoute from inside,
// through the response writer (not the request's context, which would copy
// the request once more for every request).
func (m *metrics) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, route: routeUnmatched}
		next.ServeHTTP(sw, r)
		m.requests.WithLabelValues(sw.route, r.Method, strconv.Itoa(sw.status())).Inc()
		m.durations.WithLabelValues(sw.route).Observe(time.Since(start).Seconds())
	})
}

// nameRoute is router middleware: it runs only for matched routes, and
// names the route to instrument's writer, found under any writers that
// later middleware wrapped around it.
func nameRoute(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for x := w; ; {
			if sw, ok := x.(*statusWriter); ok && sw.route != "" {
				if tpl, err := mux.CurrentRoute(r).GetPathTemplate(); err == nil {
					sw.route = tpl
				}
				break
			}
			u, ok := x.(interface{ Unwrap() http.ResponseWriter })
			if !ok {
				break
			}
			x = u.Unwrap()
		}
		next.ServeHTTP(w, r)
	})
}

// statusWriter remembers the status code written.
type statusWriter struct {
	http.ResponseWriter
	code int
	// route is the route template instrument labels the request with;
	// empty in the writers of other middleware.
	route string
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

package kafka

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/countersign/countersign/events"
)

// WorkerConfig is the configuration every service built on the kit shares:
// which group it is, how often it commits, how hard it retries, and how long
// it remembers what it handled. cmd fills it from the variables
// <Prefix>GROUP_ID, <Prefix>COMMIT_EVERY, <Prefix>MAX_ATTEMPTS,
// <Prefix>RETRY_BACKOFF, <Prefix>RETRY_MAX_BACKOFF and <Prefix>DEDUPE_WINDOW
// (Prefix "NOTIFIER_", "RECOMMENDER_", "AUDIT_", …); zero values mean the
// defaults, and Validate names the variable that is wrong.
type WorkerConfig struct {
	// Prefix names the service's variables in errors, e.g. "NOTIFIER_".
	Prefix string
	// GroupID is the consumer group (<Prefix>GROUP_ID). It is the
	// service's identity: a renamed group re-reads the retained history. It
	// also names the dead-letter topic, "<group-id>.dlq", so it is limited
	// to what a topic name may hold: 1 to 245 letters, digits, '.', '_' or
	// '-'.
	GroupID string
	// CommitEvery commits offsets after this many handled events
	// (<Prefix>COMMIT_EVERY, default 5), in the background (see
	// SubscriberConfig.CommitEvery): a crash re-delivers fewer than twice
	// this many events per process.
	CommitEvery int
	// MaxAttempts bounds the tries of one event on temporary failures before
	// it is dead-lettered (<Prefix>MAX_ATTEMPTS, default 12; with the default
	// backoff, 500ms doubling to 30s, the waits add up to about three
	// minutes). An error marked events.Unavailable is held back past them,
	// tried every SubscriberConfig.ProbeInterval (5s), never dead-lettered. The partition waits
	// meanwhile.
	MaxAttempts int
	// InitialBackoff and MaxBackoff shape the retry waits
	// (<Prefix>RETRY_BACKOFF, <Prefix>RETRY_MAX_BACKOFF; defaults 500ms and
	// 30s).
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	// DedupeWindow is how long a handled event id is remembered, so the same
	// event delivered twice (after a rebalance, say) is handled once
	// (<Prefix>DEDUPE_WINDOW, default 15m; 0 keeps the default, see
	// DedupeOff). It is per process: a crash forgets it, which is why
	// CommitEvery also bounds duplicates.
	DedupeWindow time.Duration
}

// DedupeOff as WorkerConfig.DedupeWindow switches the dedupe off, for a
// handler that is idempotent by itself (a database upsert, say).
const DedupeOff time.Duration = -1

// Worker defaults, applied to zero-valued fields by WithDefaults.
const (
	DefaultCommitEvery    = 5
	DefaultMaxAttempts    = 12
	DefaultInitialBackoff = 500 * time.Millisecond
	DefaultMaxBackoff     = 30 * time.Second
	DefaultDedupeWindow   = 15 * time.Minute
)

// Kafka topic names are at most 249 characters of these; the dead-letter
// topic adds ".dlq".
var legalGroupID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,245}$`)

// WithDefaults returns c with zero-valued fields set to their defaults, and
// the group id to defaultGroupID when empty.
func (c WorkerConfig) WithDefaults(defaultGroupID string) WorkerConfig {
	if c.GroupID == "" {
		c.GroupID = defaultGroupID
	}
	if c.CommitEvery == 0 {
		c.CommitEvery = DefaultCommitEvery
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.InitialBackoff == 0 {
		c.InitialBackoff = DefaultInitialBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.DedupeWindow == 0 {
		c.DedupeWindow = DefaultDedupeWindow
	}
	return c
}

// Of is WithDefaults for a service: it also sets the prefix of the
// service's variables, so Validate names them.
func (c WorkerConfig) Of(prefix, defaultGroupID string) WorkerConfig {
	c.Prefix = prefix
	return c.WithDefaults(defaultGroupID)
}

// Validate reports the first setting that cannot work, naming its variable.
// Call it after WithDefaults.
func (c WorkerConfig) Validate() error {
	v := func(name string) string { return c.Prefix + name }
	switch {
	case !legalGroupID.MatchString(c.GroupID):
		return fmt.Errorf("%s=%q: want 1 to 245 letters, digits, '.', '_' or '-' (it names the dead-letter topic)", v("GROUP_ID"), c.GroupID)
	case c.CommitEvery < 1:
		return fmt.Errorf("%s: want a whole number ≥ 1", v("COMMIT_EVERY"))
	case c.MaxAttempts < 1:
		return fmt.Errorf("%s: want a whole number ≥ 1", v("MAX_ATTEMPTS"))
	case c.InitialBackoff < 0 || c.MaxBackoff < c.InitialBackoff:
		return fmt.Errorf("%s, %s: want 0 ≤ backoff ≤ max backoff", v("RETRY_BACKOFF"), v("RETRY_MAX_BACKOFF"))
	case c.DedupeWindow < 0 && c.DedupeWindow != DedupeOff:
		return fmt.Errorf("%s: want a duration ≥ 0", v("DEDUPE_WINDOW"))
	}
	return nil
}

// WorkerOption adds an optional hook to a Worker.
type WorkerOption func(*workerOptions)

type workerOptions struct {
	onResult    func(Result)
	onDuplicate func(events.Event)
	subscriber  func(*SubscriberConfig)
	registerer  prometheus.Registerer
}

// OnResult sees every finished record (handled or dead-lettered), from the
// consuming goroutine: keep it fast (metrics, not I/O).
func OnResult(fn func(Result)) WorkerOption {
	return func(o *workerOptions) { o.onResult = fn }
}

// OnDuplicate sees every event skipped because it was handled within the
// dedupe window.
func OnDuplicate(fn func(events.Event)) WorkerOption {
	return func(o *workerOptions) { o.onDuplicate = fn }
}

// WithSubscriberConfig adjusts the underlying SubscriberConfig after the
// worker filled it in: tests shorten HandlerTimeout or CommitInterval this
// way. The group, topics and hooks are the worker's.
func WithSubscriberConfig(fn func(*SubscriberConfig)) WorkerOption {
	return func(o *workerOptions) { o.subscriber = fn }
}

// Worker is a service's consumer, built from a WorkerConfig and a handler:
// at-least-once delivery, commits every N, retries with backoff, hold-back
// through outages, dead letters, dedupe within a window, and a graceful
// shutdown that finishes the event in hand and commits. It is what the
// notifier, the recommender and any later subscriber run on.
type Worker struct {
	kafka   Config
	cfg     WorkerConfig
	topics  []string
	handler events.Handler
	opts    workerOptions
	sub     *Subscriber
}

// NewWorker validates cfg (after defaults; GroupID has no default here:
// pass it or call WithDefaults first) and builds the worker; Run connects.
// The handler follows events.Handler; it is wrapped with Dedupe unless
// cfg.DedupeWindow is DedupeOff.
func NewWorker(k Config, cfg WorkerConfig, topics []string, h events.Handler, opts ...WorkerOption) (*Worker, error) {
	cfg = cfg.WithDefaults(cfg.GroupID)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	w := &Worker{kafka: k, cfg: cfg, topics: topics, handler: h}
	for _, o := range opts {
		o(&w.opts)
	}
	if cfg.DedupeWindow != DedupeOff {
		w.handler = Dedupe(cfg.DedupeWindow, w.opts.onDuplicate, h)
	}
	sub, err := w.subscriber(cfg.GroupID, topics, w.opts.onResult)
	if err != nil {
		return nil, err
	}
	w.sub = sub
	return w, nil
}

func (w *Worker) subscriber(group string, topics []string, onResult func(Result)) (*Subscriber, error) {
	sc := SubscriberConfig{
		CommitEvery:    w.cfg.CommitEvery,
		MaxAttempts:    w.cfg.MaxAttempts,
		InitialBackoff: w.cfg.InitialBackoff,
		MaxBackoff:     w.cfg.MaxBackoff,
	}
	if w.opts.subscriber != nil {
		w.opts.subscriber(&sc)
	}
	sc.GroupID, sc.Topics, sc.OnResult = group, topics, onResult
	if w.opts.registerer != nil {
		sc.Registerer = w.opts.registerer
	}
	return NewSubscriber(w.kafka, sc, w.handler)
}

// Run consumes until ctx is cancelled; see Subscriber.Run.
func (w *Worker) Run(ctx context.Context) error { return w.sub.Run(ctx) }

// Ready reports whether it is consuming and the brokers answer, for
// /readyz; see Subscriber.Ready.
func (w *Worker) Ready(ctx context.Context) error { return w.sub.Ready(ctx) }

// Handler is the handler as the worker runs it, dedupe included: what a
// test or a replay tool calls to handle one event exactly as the worker
// would.
func (w *Worker) Handler() events.Handler { return w.handler }

// GroupID is the worker's consumer group.
func (w *Worker) GroupID() string { return w.cfg.GroupID }

// Topics are what the worker reads.
func (w *Worker) Topics() []string { return append([]string(nil), w.topics...) }

// DeadLetterTopic is where events the worker gave up on are written.
func (w *Worker) DeadLetterTopic() string { return DeadLetterTopic(w.cfg.GroupID) }

// Replay builds a subscriber that re-processes this worker's dead letters
// for it alone: the same handler and retry settings, as consumer group
// "<group-id>.replay" reading "<group-id>.dlq" (docs/subscribers.md). Its
// committed offsets make each dead letter replayed once; what fails again
// goes to "<group-id>.replay.dlq". onResult, when set, sees every record.
func (w *Worker) Replay(onResult func(Result)) (*Subscriber, error) {
	return w.subscriber(w.cfg.GroupID+".replay", []string{w.DeadLetterTopic()}, onResult)
}

// Serve builds a Worker and runs it until the process gets SIGINT or
// SIGTERM; then it finishes the event in hand, commits, and returns nil. It
// is the whole main of a standalone subscriber (docs/subscribers.md); the
// platform's own services build their workers with NewWorker and run them
// under cmd's context.
func Serve(k Config, cfg WorkerConfig, topics []string, h events.Handler, opts ...WorkerOption) error {
	w, err := NewWorker(k, cfg, topics, h, opts...)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return w.Run(ctx)
}

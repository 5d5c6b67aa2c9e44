package notifier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	gocache "github.com/patrickmn/go-cache"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/templates"
)

// DefaultGroupID is the notifier's consumer group. Renaming it would make the
// notifier read the retained history again and mail everyone twice.
const DefaultGroupID = "notification-service"

// Config configures the notifier. cmd fills it from the environment variables
// named on each field; zero values mean the defaults.
type Config struct {
	// GroupID is the consumer group (NOTIFIER_GROUP_ID, default
	// "notification-service").
	GroupID string
	// CommitEvery commits offsets after this many handled events
	// (NOTIFIER_COMMIT_EVERY, default 5). The commit runs in the background
	// while the next mails go out (see events.SubscriberConfig.CommitEvery),
	// so a crash re-sends fewer than twice this many mails per notifier
	// process.
	CommitEvery int
	// MaxAttempts bounds the tries of one mail on temporary SMTP failures
	// before it goes to the dead-letter topic (NOTIFIER_MAX_ATTEMPTS,
	// default 12; with the default backoff, 500ms doubling to 30s, the waits
	// add up to about three minutes). When the SMTP server itself is down
	// (MailError.ServiceUnavailable) the mail is not dead-lettered once they
	// are spent: it is held back and tried every MaxBackoff until the
	// server answers (events.Unavailable).
	MaxAttempts int
	// InitialBackoff and MaxBackoff shape the retry waits
	// (NOTIFIER_RETRY_BACKOFF, NOTIFIER_RETRY_MAX_BACKOFF; defaults 500ms
	// and 30s).
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	// DedupeWindow is how long a sent event id is remembered, so the same
	// event delivered twice (after a rebalance, say) sends one mail
	// (NOTIFIER_DEDUPE_WINDOW, default 15m). It is per process: a crash
	// forgets it, which is why CommitEvery also bounds duplicates.
	DedupeWindow time.Duration
}

func (c *Config) setDefaults() {
	if c.GroupID == "" {
		c.GroupID = DefaultGroupID
	}
	if c.CommitEvery == 0 {
		c.CommitEvery = 5
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 12
	}
	if c.InitialBackoff == 0 {
		c.InitialBackoff = 500 * time.Millisecond
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.DedupeWindow == 0 {
		c.DedupeWindow = 15 * time.Minute
	}
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	switch {
	case c.CommitEvery < 1:
		return errors.New("NOTIFIER_COMMIT_EVERY: want a whole number ≥ 1")
	case c.MaxAttempts < 1:
		return errors.New("NOTIFIER_MAX_ATTEMPTS: want a whole number ≥ 1")
	case c.InitialBackoff < 0 || c.MaxBackoff < c.InitialBackoff:
		return errors.New("NOTIFIER_RETRY_BACKOFF, NOTIFIER_RETRY_MAX_BACKOFF: want 0 ≤ backoff ≤ max backoff")
	case c.DedupeWindow < 0:
		return errors.New("NOTIFIER_DEDUPE_WINDOW: want a duration ≥ 0")
	}
	return nil
}

// Deps are the notifier's collaborators.
type Deps struct {
	Kafka     events.Config
	Keyring   *events.Keyring // opens the sealed codes; required
	Templates *templates.Set  // required
	Sender    Sender          // required; the notifier does not close it
	Logger    *slog.Logger
	// Registerer receives the notifier's metrics; nil registers nowhere.
	Registerer prometheus.Registerer
}

// Notifier mails a verification code for every user_account_created event
// and a confirmation for every user_account_verified event.
type Notifier struct {
	cfg     Config
	deps    Deps
	logger  *slog.Logger
	sent    *gocache.Cache
	metrics *metrics
	sub     *events.Subscriber
}

// Mail kinds, the "kind" label of the metrics.
const (
	KindVerification = "verification"
	KindVerified     = "verified"
)

// New checks the configuration and builds a notifier; Run starts it.
func New(cfg Config, deps Deps) (*Notifier, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	switch {
	case deps.Keyring == nil:
		return nil, errors.New("notifier: no code encryption keys: set CODE_ENCRYPTION_KEYS (the user API's keys; `countersign keygen` prints one)")
	case deps.Templates == nil:
		return nil, errors.New("notifier: no templates")
	case deps.Sender == nil:
		return nil, errors.New("notifier: no mail sender")
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	n := &Notifier{
		cfg: cfg, deps: deps,
		logger:  deps.Logger.With("component", "notifier"),
		sent:    gocache.New(cfg.DedupeWindow, time.Minute),
		metrics: newMetrics(deps.Registerer),
	}
	sub, err := events.NewSubscriber(deps.Kafka, events.SubscriberConfig{
		GroupID:        cfg.GroupID,
		Topics:         []string{events.TopicUserAccountCreated, events.TopicUserAccountVerified},
		CommitEvery:    cfg.CommitEvery,
		MaxAttempts:    cfg.MaxAttempts,
		InitialBackoff: cfg.InitialBackoff,
		MaxBackoff:     cfg.MaxBackoff,
		OnResult:       n.onResult,
	}, n.Handle)
	if err != nil {
		return nil, fmt.Errorf("notifier: %w", err)
	}
	n.sub = sub
	return n, nil
}

// Run consumes until ctx is cancelled; see events.Subscriber.Run.
func (n *Notifier) Run(ctx context.Context) error { return n.sub.Run(ctx) }

// Ready reports whether it is consuming and the brokers answer, for
// /readyz; see events.Subscriber.Ready.
func (n *Notifier) Ready(ctx context.Context) error { return n.sub.Ready(ctx) }

// Replay builds a subscriber that re-processes this notifier's dead letters
// for it alone: Handle, with the notifier's retry settings, as consumer group
// "<group-id>.replay" reading "<group-id>.dlq" (docs/subscribers.md). Its
// committed offsets make each dead letter replayed once; what fails again
// goes to "<group-id>.replay.dlq". onResult, when set, sees every record.
func (n *Notifier) Replay(onResult func(events.Result)) (*events.Subscriber, error) {
	return events.NewSubscriber(n.deps.Kafka, events.SubscriberConfig{
		GroupID:        n.cfg.GroupID + ".replay",
		Topics:         []string{events.DeadLetterTopic(n.cfg.GroupID)},
		CommitEvery:    n.cfg.CommitEvery,
		MaxAttempts:    n.cfg.MaxAttempts,
		InitialBackoff: n.cfg.InitialBackoff,
		MaxBackoff:     n.cfg.MaxBackoff,
		OnResult:       onResult,
	}, n.Handle)
}

// Handle sends the mail one event asks for. It is idempotent within the
// dedupe window. Errors follow events.Handler: temporary SMTP failures are
// returned for a retry, wrapped with events.Unavailable when the mail
// service itself is down (see MailError.ServiceUnavailable), and permanent
// ones wrapped with events.Permanent.
func (n *Notifier) Handle(ctx context.Context, e events.Event) error {
	if _, dup := n.sent.Get(e.ID); dup {
		n.metrics.duplicates.Inc()
		n.logger.Info("duplicate event: mail already sent", "event_id", e.ID, "type", e.Type)
		return nil
	}
	var (
		kind string
		msg  Message
		err  error
	)
	switch e.Type {
	case events.TopicUserAccountCreated:
		kind = KindVerification
		msg, err = n.verificationMail(e)
	case events.TopicUserAccountVerified:
		kind = KindVerified
		msg, err = n.verifiedMail(e)
	default:
		// Decode only lets known types through; a new type this notifier
		// does not know yet is not its business.
		return nil
	}
	if errors.Is(err, errExpired) {
		n.metrics.expired.Inc()
		n.logger.Info("code already expired: no mail sent", "event_id", e.ID)
		return nil
	}
	if err != nil {
		n.metrics.failed.WithLabelValues(kind, "permanent").Inc()
		return events.Permanent(fmt.Errorf("%s mail for event %s: %w", kind, e.ID, err))
	}
	if err := n.deps.Sender.Send(ctx, msg); err != nil {
		if IsPermanentMailError(err) {
			n.metrics.failed.WithLabelValues(kind, "permanent").Inc()
			return events.Permanent(err)
		}
		n.metrics.failed.WithLabelValues(kind, "temporary").Inc()
		if IsMailServiceUnavailable(err) {
			// Not this mail's fault: held back, never dead-lettered, until
			// the server answers (events.Unavailable).
			return events.Unavailable(err)
		}
		return err
	}
	n.sent.SetDefault(e.ID, struct{}{})
	n.metrics.sent.WithLabelValues(kind).Inc()
	n.metrics.latency.WithLabelValues(kind).Observe(time.Since(e.Time).Seconds())
	return nil
}

var errExpired = errors.New("code expired")

func (n *Notifier) verificationMail(e events.Event) (Message, error) {
	d, err := e.UserAccountCreated()
	if err != nil {
		return Message{}, err
	}
	if !d.ExpiresAt.After(time.Now()) {
		return Message{}, errExpired
	}
	code, err := n.deps.Keyring.Open(d.EncryptedCode, d.UserID, d.Email)
	if err != nil {
		return Message{}, err
	}
	r, err := n.deps.Templates.Verification(templates.Verification{
		FirstName: d.FirstName, LastName: d.LastName, Email: d.Email, Code: code, ExpiresAt: d.ExpiresAt,
	})
	if err != nil {
		return Message{}, fmt.Errorf("render: %w", err)
	}
	return Message{To: d.Email, ToName: fullName(d.FirstName, d.LastName), Subject: r.Subject, HTML: r.HTML, Text: r.Text,
		ID: e.ID + "." + KindVerification}, nil
}

func (n *Notifier) verifiedMail(e events.Event) (Message, error) {
	d, err := e.UserAccountVerified()
	if err != nil {
		return Message{}, err
	}
	r, err := n.deps.Templates.Verified(templates.Verified{
		FirstName: d.FirstName, LastName: d.LastName, Email: d.Email, VerifiedAt: d.VerifiedAt,
	})
	if err != nil {
		return Message{}, fmt.Errorf("render: %w", err)
	}
	return Message{To: d.Email, ToName: fullName(d.FirstName, d.LastName), Subject: r.Subject, HTML: r.HTML, Text: r.Text,
		ID: e.ID + "." + KindVerified}, nil
}

func fullName(first, last string) string { return strings.TrimSpace(first + " " + last) }

func (n *Notifier) onResult(r events.Result) {
	if r.Outcome == events.OutcomeDeadLettered {
		n.metrics.deadLettered.WithLabelValues(r.Topic).Inc()
	}
}

type metrics struct {
	sent, failed, deadLettered *prometheus.CounterVec
	duplicates, expired        prometheus.Counter
	latency                    *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "countersign_notifier_mails_sent_total", Help: "Mails handed to the SMTP server (or the outbox), by kind.",
		}, []string{"kind"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "countersign_notifier_mails_failed_total", Help: "Failed send attempts, by kind and whether the failure is temporary (retried) or permanent (dead-lettered).",
		}, []string{"kind", "reason"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "countersign_notifier_dead_lettered_total", Help: "Events written to the dead-letter topic, by original topic.",
		}, []string{"topic"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "countersign_notifier_duplicates_skipped_total", Help: "Events delivered again within the dedupe window, whose mail was not sent twice.",
		}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "countersign_notifier_expired_skipped_total", Help: "Verification events whose code had expired before the mail could go out.",
		}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "countersign_notifier_end_to_end_latency_seconds",
			Help:    "From the event's time to the SMTP server's acceptance of the mail, by kind.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"kind"}),
	}
	if reg != nil {
		reg.MustRegister(m.sent, m.failed, m.deadLettered, m.duplicates, m.expired, m.latency)
	}
	return m
}

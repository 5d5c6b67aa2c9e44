// Package recommender is the recommendation service: a consumer group that
// greets every newly verified user with a "Getting started" mail of three
// starter recommendations.
//
// It is the platform's proof that a subscriber is added without touching the
// user API: it is built on the events subscriber runner, reads only the
// user_account_verified topic, and imports nothing from userapi (a test checks
// the import graph). docs/subscribers.md is the guide for teams adding their
// own subscriber.
//
// Why a mail and not a store: a verified user has just shown they read mail
// at that address, which makes it the moment a product team most wants to
// point them at their first steps; the rendered mail needs nothing but the
// event. The items come from a small catalogue embedded in the binary
// (catalog.json), which an operator replaces with RECOMMENDER_CATALOG. The
// choice is deterministic (see Catalog.Pick), so a re-delivered event sends
// the same items, and the mail's Message-ID is derived from the event id, so
// a receiving server can also recognise the duplicate.
//
// Mail goes through the notifier's Sender: the notifier package is the
// platform's mail layer, and cmd wires the same SMTP configuration into both
// services.
package recommender

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	gocache "github.com/patrickmn/go-cache"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/notifier"
	"github.com/countersign/countersign/templates"
)

// DefaultGroupID is the recommender's consumer group; its dead-letter topic
// is "recommendation-service.dlq". Renaming the group would make the
// recommender read the retained history again and mail every verified user a
// second time.
const DefaultGroupID = "recommendation-service"

// MailKind names the Getting started mail: the suffix of its Message.ID and
// the template it is rendered from.
const MailKind = "getting_started"

// Environment variables read by ConfigFromEnv. The names are a contract with
// operators and never change.
const (
	EnvGroupID         = "RECOMMENDER_GROUP_ID"
	EnvCommitEvery     = "RECOMMENDER_COMMIT_EVERY"
	EnvMaxAttempts     = "RECOMMENDER_MAX_ATTEMPTS"
	EnvRetryBackoff    = "RECOMMENDER_RETRY_BACKOFF"
	EnvRetryMaxBackoff = "RECOMMENDER_RETRY_MAX_BACKOFF"
	EnvDedupeWindow    = "RECOMMENDER_DEDUPE_WINDOW"
	EnvCatalog         = "RECOMMENDER_CATALOG"
)

// Config configures the recommender. ConfigFromEnv fills it from the
// environment variables named on each field; zero values mean the defaults.
type Config struct {
	// GroupID is the consumer group (RECOMMENDER_GROUP_ID, default
	// "recommendation-service"). It also names the dead-letter topic,
	// "<group-id>.dlq", so it is limited to what a topic name may hold.
	GroupID string
	// CommitEvery commits offsets after this many handled events
	// (RECOMMENDER_COMMIT_EVERY, default 5), in the background (see
	// events.SubscriberConfig.CommitEvery): a crash re-sends fewer than twice
	// this many mails per recommender process.
	CommitEvery int
	// MaxAttempts bounds the tries of one mail on temporary SMTP failures
	// before the event goes to the dead-letter topic
	// (RECOMMENDER_MAX_ATTEMPTS, default 12). With the default backoff
	// (500ms doubling to 30s) the waits add up to about three minutes. When
	// the SMTP server itself is down the mail is held back past them, tried
	// every MaxBackoff until it answers (events.Unavailable). The partition
	// waits meanwhile.
	MaxAttempts int
	// InitialBackoff and MaxBackoff shape the retry waits
	// (RECOMMENDER_RETRY_BACKOFF, RECOMMENDER_RETRY_MAX_BACKOFF; defaults
	// 500ms and 30s).
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	// DedupeWindow is how long a handled event id is remembered, so the
	// same event delivered twice (after a rebalance, say) sends one mail
	// (RECOMMENDER_DEDUPE_WINDOW, default 15m). It is per process: a crash
	// forgets it, which is why CommitEvery also bounds duplicates, and why
	// the Message-ID is stable.
	DedupeWindow time.Duration
	// CatalogFile is a JSON catalogue that replaces the embedded one
	// (RECOMMENDER_CATALOG, default empty: the embedded catalog.json). It is
	// read and validated by New, so a broken file stops the start.
	CatalogFile string
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

// Kafka topic names are at most 249 characters of these; the dead-letter
// topic adds ".dlq".
var legalGroupID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,245}$`)

// Validate reports the first setting that cannot work, naming its variable.
// It expects the defaults applied (New does that); on a zero Config it
// reports the missing group id.
func (c Config) Validate() error {
	switch {
	case !legalGroupID.MatchString(c.GroupID):
		return fmt.Errorf("%s: want 1 to 245 letters, digits, '.', '_' or '-' (it names the dead-letter topic)", EnvGroupID)
	case c.CommitEvery < 1:
		return fmt.Errorf("%s: want a whole number ≥ 1", EnvCommitEvery)
	case c.MaxAttempts < 1:
		return fmt.Errorf("%s: want a whole number ≥ 1", EnvMaxAttempts)
	case c.InitialBackoff < 0 || c.MaxBackoff < c.InitialBackoff:
		return fmt.Errorf("%s, %s: want 0 ≤ backoff ≤ max backoff", EnvRetryBackoff, EnvRetryMaxBackoff)
	case c.DedupeWindow < 0:
		return fmt.Errorf("%s: want a duration ≥ 0", EnvDedupeWindow)
	}
	return nil
}

// ConfigFromEnv reads the configuration through getenv (os.Getenv, or a
// lookup in a .env map). Unset or empty variables keep their defaults. Errors
// name the variable and what it accepts; all bad variables are reported at
// once, worded as the notifier's (both use notifier.EnvReader). The result is
// not validated yet: New applies defaults and validates.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	r := notifier.EnvReader{Getenv: getenv}
	c := Config{GroupID: r.String(EnvGroupID), CatalogFile: r.String(EnvCatalog)}
	r.Int(EnvCommitEvery, &c.CommitEvery, 1)
	r.Int(EnvMaxAttempts, &c.MaxAttempts, 1)
	r.Duration(EnvRetryBackoff, &c.InitialBackoff, "500ms")
	r.Duration(EnvRetryMaxBackoff, &c.MaxBackoff, "30s")
	r.Duration(EnvDedupeWindow, &c.DedupeWindow, "15m")
	return c, r.Err()
}

// Deps are the recommender's collaborators.
type Deps struct {
	Kafka     events.Config
	Templates *templates.Set // required
	// Sender delivers the mails; required. The recommender does not close
	// it, so cmd may share one with the notifier.
	Sender notifier.Sender
	Logger *slog.Logger
	// Registerer receives the recommender's metrics; nil registers nowhere.
	Registerer prometheus.Registerer
}

// Recommender mails starter recommendations to every verified user.
type Recommender struct {
	cfg     Config
	deps    Deps
	catalog *Catalog
	logger  *slog.Logger
	sent    *gocache.Cache
	metrics *metrics
	sub     *events.Subscriber
}

// New checks the configuration, loads the catalogue and builds a
// recommender; Run starts it.
func New(cfg Config, deps Deps) (*Recommender, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	switch {
	case deps.Templates == nil:
		return nil, errors.New("recommender: no templates")
	case deps.Sender == nil:
		return nil, errors.New("recommender: no mail sender")
	}
	catalog, err := LoadCatalog(cfg.CatalogFile)
	if err != nil {
		if cfg.CatalogFile != "" {
			return nil, fmt.Errorf("recommender: %s: %w", EnvCatalog, err)
		}
		return nil, fmt.Errorf("recommender: %w", err)
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	r := &Recommender{
		cfg: cfg, deps: deps, catalog: catalog,
		logger:  deps.Logger.With("component", "recommender"),
		sent:    gocache.New(cfg.DedupeWindow, time.Minute),
		metrics: newMetrics(deps.Registerer, catalog),
	}
	sub, err := events.NewSubscriber(deps.Kafka, events.SubscriberConfig{
		GroupID: cfg.GroupID,
		// Only the verified topic: the recommender has nothing to say to
		// someone who has not proved the address is theirs.
		Topics:         []string{events.TopicUserAccountVerified},
		CommitEvery:    cfg.CommitEvery,
		MaxAttempts:    cfg.MaxAttempts,
		InitialBackoff: cfg.InitialBackoff,
		MaxBackoff:     cfg.MaxBackoff,
		OnResult:       r.onResult,
	}, r.Handle)
	if err != nil {
		return nil, fmt.Errorf("recommender: %w", err)
	}
	r.sub = sub
	return r, nil
}

// Run consumes until ctx is cancelled; see events.Subscriber.Run. It creates
// the topics and "<group-id>.dlq" when they are missing.
func (r *Recommender) Run(ctx context.Context) error { return r.sub.Run(ctx) }

// Ready reports whether it is consuming and the brokers answer, for
// /readyz; see events.Subscriber.Ready.
func (r *Recommender) Ready(ctx context.Context) error { return r.sub.Ready(ctx) }

// DeadLetterTopic is where events the recommender gave up on are written.
func (r *Recommender) DeadLetterTopic() string { return events.DeadLetterTopic(r.cfg.GroupID) }

// Replay builds a subscriber that re-processes this recommender's dead
// letters for it alone: Handle, with the recommender's retry settings, as
// consumer group "<group-id>.replay" reading "<group-id>.dlq"
// (docs/subscribers.md). Its committed offsets make each dead letter replayed
// once; what fails again goes to "<group-id>.replay.dlq". onResult, when set,
// sees every record.
func (r *Recommender) Replay(onResult func(events.Result)) (*events.Subscriber, error) {
	return events.NewSubscriber(r.deps.Kafka, events.SubscriberConfig{
		GroupID:        r.cfg.GroupID + ".replay",
		Topics:         []string{r.DeadLetterTopic()},
		CommitEvery:    r.cfg.CommitEvery,
		MaxAttempts:    r.cfg.MaxAttempts,
		InitialBackoff: r.cfg.InitialBackoff,
		MaxBackoff:     r.cfg.MaxBackoff,
		OnResult:       onResult,
	}, r.Handle)
}

// Handle sends the Getting started mail for one user_account_verified event
// and ignores every other type. It is idempotent within the dedupe window,
// and beyond it sends the same items under the same Message-ID. Errors follow
// events.Handler: temporary SMTP failures are returned for a retry (wrapped
// with events.Unavailable when the mail service itself is down), permanent
// ones (SMTP 5xx, an invalid address) are wrapped with events.Permanent.
func (r *Recommender) Handle(ctx context.Context, e events.Event) error {
	if e.Type != events.TopicUserAccountVerified {
		// Not subscribed to anything else; a handler called directly (or a
		// future subscription) must still not mail on other events.
		return nil
	}
	if _, dup := r.sent.Get(e.ID); dup {
		r.metrics.duplicates.Inc()
		return nil
	}
	d, err := e.UserAccountVerified()
	if err != nil {
		r.metrics.failed.WithLabelValues(reasonPermanent).Inc()
		return events.Permanent(fmt.Errorf("getting started mail for event %s: %w", e.ID, err))
	}
	items := r.catalog.Pick(d.UserID, d.Email)
	model := templates.GettingStarted{FirstName: d.FirstName, LastName: d.LastName, Email: d.Email}
	for _, it := range items {
		model.Items = append(model.Items, templates.Recommendation{Title: it.Title, Description: it.Description, URL: it.URL})
	}
	rendered, err := r.deps.Templates.GettingStarted(model)
	if err != nil {
		r.metrics.failed.WithLabelValues(reasonPermanent).Inc()
		return events.Permanent(fmt.Errorf("getting started mail for event %s: render: %w", e.ID, err))
	}
	msg := notifier.Message{
		To: d.Email, ToName: strings.TrimSpace(d.FirstName + " " + d.LastName),
		Subject: rendered.Subject, HTML: rendered.HTML, Text: rendered.Text,
		// Stable across re-deliveries, and distinct from the notifier's
		// "<event id>.verified" mail for the same event.
		ID: e.ID + "." + MailKind,
	}
	if err := r.deps.Sender.Send(ctx, msg); err != nil {
		if notifier.IsPermanentMailError(err) {
			r.metrics.failed.WithLabelValues(reasonPermanent).Inc()
			return events.Permanent(err)
		}
		r.metrics.failed.WithLabelValues(reasonTemporary).Inc()
		if notifier.IsMailServiceUnavailable(err) {
			return events.Unavailable(err)
		}
		return err
	}
	r.sent.SetDefault(e.ID, struct{}{})
	r.metrics.sent.Inc()
	ids := make([]string, len(items))
	for i, it := range items {
		r.metrics.recommendations.WithLabelValues(it.ID).Inc()
		ids[i] = it.ID
	}
	// The user id, not the address: logs carry no personal data.
	r.logger.DebugContext(ctx, "getting started mail sent", "event_id", e.ID, "user_id", d.UserID, "items", ids)
	return nil
}

func (r *Recommender) onResult(res events.Result) {
	if res.Outcome == events.OutcomeDeadLettered {
		r.metrics.deadLettered.Inc()
	}
}

// Values of the "reason" label of countersign_recommender_mails_failed_total.
const (
	reasonTemporary = "temporary"
	reasonPermanent = "permanent"
)

type metrics struct {
	sent, deadLettered, duplicates prometheus.Counter
	failed, recommendations        *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, c *Catalog) *metrics {
	m := &metrics{
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "countersign_recommender_mails_sent_total",
			Help: "Getting started mails handed to the SMTP server (or the outbox).",
		}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "countersign_recommender_mails_failed_total",
			Help: "Failed attempts at a Getting started mail, by whether the failure is temporary (retried) or permanent (dead-lettered).",
		}, []string{"reason"}),
		deadLettered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "countersign_recommender_dead_lettered_total",
			Help: "Events written to the recommender's dead-letter topic.",
		}),
		recommendations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "countersign_recommender_recommendations_total",
			Help: "Recommendations sent in Getting started mails, by catalogue item id.",
		}, []string{"item"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "countersign_recommender_duplicates_skipped_total",
			Help: "Events delivered again within the dedupe window, whose mail was not sent twice.",
		}),
	}
	// Every series exists from the start at 0, so a rate() or an alert does
	// not wait for the first failure, and an item never recommended shows
	// as 0 rather than missing. The item label is bounded by the catalogue.
	for _, r := range []string{reasonTemporary, reasonPermanent} {
		m.failed.WithLabelValues(r)
	}
	for _, it := range c.Items() {
		m.recommendations.WithLabelValues(it.ID)
	}
	if reg != nil {
		reg.MustRegister(m.sent, m.failed, m.deadLettered, m.recommendations, m.duplicates)
	}
	return m
}

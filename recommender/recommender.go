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
// Mail goes through the courier (package mail), which cmd shares with the
// notifier; the consumer is the subscriber kit (events/kafka.Worker). It
// imports no other service.
package recommender

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/mail"
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

// Prefix starts the names of the recommender's worker variables:
// RECOMMENDER_GROUP_ID, RECOMMENDER_COMMIT_EVERY, … (see kafka.WorkerConfig).
const Prefix = "RECOMMENDER_"

// EnvCatalog names the catalogue setting in errors.
const EnvCatalog = "RECOMMENDER_CATALOG"

// Config configures the recommender. Zero values mean the defaults.
type Config struct {
	// WorkerConfig is its consumer group, commits, retries and dedupe
	// window (the RECOMMENDER_ variables; the group defaults to
	// "recommendation-service"). Only the verified topic is read.
	kafka.WorkerConfig
	// CatalogFile is a JSON catalogue that replaces the embedded one
	// (RECOMMENDER_CATALOG, default empty: the embedded catalog.json). It is
	// read and validated by New, so a broken file stops the start.
	CatalogFile string
}

// WithDefaults returns c with its zero-valued fields set to their defaults.
func (c Config) WithDefaults() Config {
	c.WorkerConfig = c.WorkerConfig.Of(Prefix, DefaultGroupID)
	return c
}

// Deps are the recommender's collaborators.
type Deps struct {
	Kafka     kafka.Config
	Templates *templates.Set // required
	// Sender delivers the mails; required. The recommender does not close
	// it, so cmd may share one with the notifier.
	Sender mail.Sender
	Logger *slog.Logger
	// Registerer receives the recommender's metrics; nil registers nowhere.
	Registerer prometheus.Registerer
}

// Recommender mails starter recommendations to every verified user.
type Recommender struct {
	*kafka.Worker
	deps    Deps
	catalog *Catalog
	logger  *slog.Logger
	metrics *metrics
}

// New checks the configuration, loads the catalogue and builds a
// recommender; Run starts it. Replay, Ready and DeadLetterTopic come from
// the kit (kafka.Worker).
func New(cfg Config, deps Deps, opts ...kafka.WorkerOption) (*Recommender, error) {
	cfg = cfg.WithDefaults()
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
		deps: deps, catalog: catalog,
		logger:  deps.Logger.With("component", "recommender"),
		metrics: newMetrics(deps.Registerer, catalog),
	}
	// Only the verified topic: the recommender has nothing to say to
	// someone who has not proved the address is theirs.
	w, err := kafka.NewWorker(deps.Kafka, cfg.WorkerConfig, []string{events.TopicUserAccountVerified}, r.Handle,
		append([]kafka.WorkerOption{kafka.OnResult(r.onResult), kafka.OnDuplicate(func(events.Event) { r.metrics.duplicates.Inc() }), kafka.WithRegisterer(deps.Registerer)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("recommender: %w", err)
	}
	r.Worker = w
	return r, nil
}

// Handle sends the Getting started mail for one user_account_verified event
// and ignores every other type. The worker dedupes it within its window;
// beyond it the same items go out under the same Message-ID. Errors follow
// events.Handler through mail.HandlerError.
func (r *Recommender) Handle(ctx context.Context, e events.Event) error {
	if e.Type != events.TopicUserAccountVerified {
		// Not subscribed to anything else; a handler called directly (or a
		// future subscription) must still not mail on other events.
		return nil
	}
	d, err := e.UserAccountVerified()
	if err != nil {
		r.metrics.failed.WithLabelValues(mail.ReasonPermanent).Inc()
		return events.Permanent(fmt.Errorf("getting started mail for event %s: %w", e.ID, err))
	}
	items := r.catalog.Pick(d.UserID, d.Email)
	model := templates.GettingStarted{FirstName: d.FirstName, LastName: d.LastName, Email: d.Email}
	for _, it := range items {
		model.Items = append(model.Items, templates.Recommendation{Title: it.Title, Description: it.Description, URL: it.URL})
	}
	rendered, err := r.deps.Templates.GettingStarted(model)
	if err != nil {
		r.metrics.failed.WithLabelValues(mail.ReasonPermanent).Inc()
		return events.Permanent(fmt.Errorf("getting started mail for event %s: render: %w", e.ID, err))
	}
	msg := mail.Message{
		To: d.Email, ToName: strings.TrimSpace(d.FirstName + " " + d.LastName),
		Subject: rendered.Subject, HTML: rendered.HTML, Text: rendered.Text,
		// Stable across re-deliveries, and distinct from the notifier's
		// "<event id>.verified" mail for the same event.
		ID: e.ID + "." + MailKind,
	}
	if err := r.deps.Sender.Send(ctx, msg); err != nil {
		r.metrics.failed.WithLabelValues(mail.FailureReason(err)).Inc()
		return mail.HandlerError(err)
	}
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

func (r *Recommender) onResult(res kafka.Result) {
	if res.Outcome == kafka.OutcomeDeadLettered {
		r.metrics.deadLettered.Inc()
	}
}

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
	for _, r := range []string{mail.ReasonTemporary, mail.ReasonPermanent} {
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

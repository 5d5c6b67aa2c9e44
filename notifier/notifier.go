package notifier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/countersign/countersign/mail"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/templates"
)

// DefaultGroupID is the notifier's consumer group. Renaming it would make the
// notifier read the retained history again and mail everyone twice.
const DefaultGroupID = "notification-service"

// Prefix starts the names of the notifier's worker variables:
// NOTIFIER_GROUP_ID, NOTIFIER_COMMIT_EVERY, … (see kafka.WorkerConfig).
const Prefix = "NOTIFIER_"

// Config configures the notifier: its consumer group, commits, retries and
// dedupe window (kafka.WorkerConfig, read from the NOTIFIER_ variables;
// the group defaults to "notification-service"). Zero values mean the
// defaults. When the SMTP server itself is down (mail.Error's
// ServiceUnavailable) a mail is not dead-lettered once MaxAttempts are
// spent: it is held back and tried every 5 s (kafka.DefaultProbeInterval) until the server
// answers.
type Config struct {
	kafka.WorkerConfig

	// PublicURL is where the user API serves its pages (PUBLIC_URL). When
	// set, a verification mail whose event carries a link token links to
	// PublicURL + events.ConfirmPath + token; when empty, mails carry the
	// code only.
	PublicURL string
}

// WithDefaults returns c with its zero-valued fields set to their defaults.
func (c Config) WithDefaults() Config {
	c.WorkerConfig = c.WorkerConfig.Of(Prefix, DefaultGroupID)
	return c
}

// Deps are the notifier's collaborators.
type Deps struct {
	Kafka     kafka.Config
	Keyring   *events.Keyring // opens the sealed codes; required
	Templates *templates.Set  // required
	Sender    mail.Sender     // required; the notifier does not close it
	Logger    *slog.Logger
	// Registerer receives the notifier's metrics; nil registers nowhere.
	Registerer prometheus.Registerer
}

// check reports a missing collaborator and fills in the logger.
func (d *Deps) check() error {
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	var missing []string
	if d.Keyring == nil {
		missing = append(missing, "code encryption keys: set CODE_ENCRYPTION_KEYS (the user API's keys; `countersign keygen` prints one)")
	}
	if d.Templates == nil {
		missing = append(missing, "templates")
	}
	if d.Sender == nil {
		missing = append(missing, "mail sender")
	}
	if len(missing) > 0 {
		return fmt.Errorf("notifier: no %s", strings.Join(missing, ", no "))
	}
	return nil
}

// Notifier mails a verification code for every user_account_created event,
// a confirmation for every user_account_verified event, and a "you already
// have an account" notice for every user_account_exists event.
type Notifier struct {
	*kafka.Worker
	deps      Deps
	logger    *slog.Logger
	metrics   *metrics
	publicURL string
}

// Mail kinds, the "kind" label of the metrics.
const (
	KindVerification  = "verification"
	KindVerified      = "verified"
	KindAccountExists = "account_exists"
)

// Topics are the topics the notifier reads, under its group.
var Topics = []string{events.TopicUserAccountCreated, events.TopicUserAccountVerified, events.TopicUserAccountExists}

// New checks the configuration and builds a notifier; Run starts it.
// Replay, Ready and DeadLetterTopic come from the kit (kafka.Worker).
func New(cfg Config, deps Deps, opts ...kafka.WorkerOption) (*Notifier, error) {
	cfg = cfg.WithDefaults()
	if err := errors.Join(cfg.Validate(), deps.check()); err != nil {
		return nil, err
	}
	n := &Notifier{
		deps:    deps,
		logger:  deps.Logger.With("component", "notifier"),
		metrics: newMetrics(deps.Registerer),
	}
	n.publicURL = strings.TrimRight(cfg.PublicURL, "/")
	w, err := kafka.NewWorker(deps.Kafka, cfg.WorkerConfig,
		Topics, n.Handle,
		append([]kafka.WorkerOption{kafka.OnResult(n.onResult), kafka.OnDuplicate(n.onDuplicate), kafka.WithRegisterer(deps.Registerer)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("notifier: %w", err)
	}
	n.Worker = w
	return n, nil
}

// Handle sends the mail one event asks for. The worker runs it behind its
// dedupe window (kafka.Dedupe), so a redelivered event sends one mail.
// Errors follow events.Handler, through mail.HandlerError: temporary SMTP
// failures are retried, a mail service that is down holds the event back,
// and permanent refusals are dead-lettered.
func (n *Notifier) Handle(ctx context.Context, e events.Event) error {
	var (
		kind string
		msg  mail.Message
		err  error
	)
	switch e.Type {
	case events.TopicUserAccountCreated:
		kind = KindVerification
		msg, err = n.verificationMail(e)
	case events.TopicUserAccountVerified:
		kind = KindVerified
		msg, err = n.verifiedMail(e)
	case events.TopicUserAccountExists:
		kind = KindAccountExists
		msg, err = n.accountExistsMail(e)
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
		n.metrics.failed.WithLabelValues(kind, mail.ReasonPermanent).Inc()
		return events.Permanent(fmt.Errorf("%s mail for event %s: %w", kind, e.ID, err))
	}
	if err := n.deps.Sender.Send(ctx, msg); err != nil {
		n.metrics.failed.WithLabelValues(kind, mail.FailureReason(err)).Inc()
		if errors.Is(err, mail.ErrSMTPUTF8Required) {
			n.metrics.undeliverable.WithLabelValues(mail.ReasonSMTPUTF8).Inc()
			n.logger.Warn("mail not sent: the address has non-ASCII characters before the @ and the SMTP server lacks SMTPUTF8; the event is dead-lettered (ALLOW_UTF8_LOCAL_PART=false refuses such addresses at registration)",
				"event_id", e.ID, "kind", kind)
		}
		return mail.HandlerError(err)
	}
	n.metrics.sent.WithLabelValues(kind).Inc()
	n.metrics.latency.WithLabelValues(kind).Observe(time.Since(e.Time).Seconds())
	return nil
}

// Run consumes until ctx ends (kafka.Worker.Run). When the mail sender
// keeps a connection (mail.SMTPSender), Run opens it at once, beside the
// consumer, so that the SMTP server's EHLO is read at start and a relay
// without SMTPUTF8 is warned about then (see mail.SMTPConfig's
// ASCIILocalPartOnly), not only at the first mail. A server that is down
// delays nothing: mails are held back until it answers.
func (n *Notifier) Run(ctx context.Context) error {
	if c, ok := n.deps.Sender.(interface{ Connect(context.Context) error }); ok {
		cctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Connect(cctx); err != nil && cctx.Err() == nil {
				n.logger.Warn("SMTP server not reachable at start; mails are held back until it is", "err", err)
			}
		}()
		// Cancel, then wait: nothing is logged after Run returned.
		defer wg.Wait()
		defer cancel()
	}
	return n.Worker.Run(ctx)
}

var errExpired = errors.New("code expired")

func (n *Notifier) verificationMail(e events.Event) (mail.Message, error) {
	d, err := e.UserAccountCreated()
	if err != nil {
		return mail.Message{}, err
	}
	if !d.ExpiresAt.After(time.Now()) {
		return mail.Message{}, errExpired
	}
	code, err := n.deps.Keyring.Open(d)
	if err != nil {
		return mail.Message{}, err
	}
	var link string
	if d.EncryptedLinkToken != nil && n.publicURL != "" {
		token, err := n.deps.Keyring.OpenLinkToken(*d.EncryptedLinkToken, d.UserID, d.Email)
		if err != nil {
			return mail.Message{}, err
		}
		link = n.publicURL + events.ConfirmPath + token
	}
	r, err := n.deps.Templates.Verification(templates.Verification{
		FirstName: d.FirstName, LastName: d.LastName, Email: d.Email, Code: code, ExpiresAt: d.ExpiresAt,
		Link: link, Locale: d.Locale,
	})
	if err != nil {
		return mail.Message{}, fmt.Errorf("render: %w", err)
	}
	return mail.Message{To: d.Email, ToName: fullName(d.FirstName, d.LastName), Subject: r.Subject, HTML: r.HTML, Text: r.Text,
		ID: e.ID + "." + KindVerification}, nil
}

func (n *Notifier) verifiedMail(e events.Event) (mail.Message, error) {
	d, err := e.UserAccountVerified()
	if err != nil {
		return mail.Message{}, err
	}
	r, err := n.deps.Templates.Verified(templates.Verified{
		FirstName: d.FirstName, LastName: d.LastName, Email: d.Email, VerifiedAt: d.VerifiedAt, Locale: d.Locale,
	})
	if err != nil {
		return mail.Message{}, fmt.Errorf("render: %w", err)
	}
	return mail.Message{To: d.Email, ToName: fullName(d.FirstName, d.LastName), Subject: r.Subject, HTML: r.HTML, Text: r.Text,
		ID: e.ID + "." + KindVerified}, nil
}

// accountExistsMail is the notice to the owner of an account that someone
// tried to register it again. It greets nobody by name and is addressed to
// the bare address: the event carries no names, as the attempt's were
// whoever tried's text.
func (n *Notifier) accountExistsMail(e events.Event) (mail.Message, error) {
	d, err := e.UserAccountExists()
	if err != nil {
		return mail.Message{}, err
	}
	r, err := n.deps.Templates.AccountExists(templates.AccountExists{Email: d.Email, AttemptedAt: d.AttemptedAt, Locale: d.Locale})
	if err != nil {
		return mail.Message{}, fmt.Errorf("render: %w", err)
	}
	return mail.Message{To: d.Email, Subject: r.Subject, HTML: r.HTML, Text: r.Text,
		ID: e.ID + "." + KindAccountExists}, nil
}

func fullName(first, last string) string { return strings.TrimSpace(first + " " + last) }

func (n *Notifier) onDuplicate(e events.Event) {
	n.metrics.duplicates.Inc()
	n.logger.Info("duplicate event: mail already sent", "event_id", e.ID, "type", e.Type)
}

func (n *Notifier) onResult(r kafka.Result) {
	if r.Outcome == kafka.OutcomeDeadLettered {
		n.metrics.deadLettered.WithLabelValues(r.Topic).Inc()
	}
}

type metrics struct {
	sent, failed, deadLettered *prometheus.CounterVec
	undeliverable              *prometheus.CounterVec
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
		undeliverable: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "countersign_notifier_undeliverable_total",
			Help: "Mails that cannot be delivered through this SMTP server and were dead-lettered without being sent, by reason (smtputf8: the address has non-ASCII characters before the @ and the server lacks SMTPUTF8).",
		}, []string{"reason"}),
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
	// Present from the start, at 0, so that an alert or a rate works before
	// the first such mail.
	m.undeliverable.WithLabelValues(mail.ReasonSMTPUTF8)
	for _, kind := range []string{KindVerification, KindVerified, KindAccountExists} {
		m.sent.WithLabelValues(kind)
	}
	if reg != nil {
		reg.MustRegister(m.sent, m.failed, m.deadLettered, m.undeliverable, m.duplicates, m.expired, m.latency)
	}
	return m
}

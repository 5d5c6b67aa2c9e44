package platform

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/mail"
	"github.com/countersign/countersign/notifier"
	"github.com/countersign/countersign/recommender"
	"github.com/countersign/countersign/templates"
)

// Mail is what the mail-sending services share: the templates, parsed and
// checked once, and a sender. Close it after the services stopped.
type Mail struct {
	Templates *templates.Set
	Sender    mail.Sender
}

// NewMail loads the templates (TemplatesDir over the embedded ones) and
// builds the sender: SMTP when cfg.SMTP.Host is set, the outbox otherwise.
func NewMail(cfg Config) (*Mail, error) {
	tpl, err := templates.Load(cfg.TemplatesDir)
	if err != nil {
		return nil, err
	}
	sender, err := mail.NewSender(cfg.SMTP, cfg.OutboxDir, cfg.logger())
	if err != nil {
		return nil, err
	}
	return &Mail{Templates: tpl, Sender: sender}, nil
}

// Close closes the sender.
func (m *Mail) Close() error { return m.Sender.Close() }

// NewNotifier builds the notifier of cfg over m, registering its metrics
// with reg (nil: nowhere). Run runs it; Replay re-processes its dead letters.
func NewNotifier(cfg Config, m *Mail, reg prometheus.Registerer, opts ...kafka.WorkerOption) (*notifier.Notifier, error) {
	return notifier.New(cfg.Notifier, notifier.Deps{
		Kafka: cfg.Kafka, Keyring: cfg.Keys, Templates: m.Templates, Sender: m.Sender, Logger: cfg.logger(), Registerer: reg,
	}, opts...)
}

// NewRecommender builds the recommender of cfg over m, as NewNotifier does.
func NewRecommender(cfg Config, m *Mail, reg prometheus.Registerer, opts ...kafka.WorkerOption) (*recommender.Recommender, error) {
	return recommender.New(cfg.Recommender, recommender.Deps{
		Kafka: cfg.Kafka, Templates: m.Templates, Sender: m.Sender, Logger: cfg.logger(), Registerer: reg,
	}, opts...)
}

package notifier

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Environment variables of the notifier.
const (
	EnvGroupID         = "NOTIFIER_GROUP_ID"
	EnvCommitEvery     = "NOTIFIER_COMMIT_EVERY"
	EnvMaxAttempts     = "NOTIFIER_MAX_ATTEMPTS"
	EnvRetryBackoff    = "NOTIFIER_RETRY_BACKOFF"
	EnvRetryMaxBackoff = "NOTIFIER_RETRY_MAX_BACKOFF"
	EnvDedupeWindow    = "NOTIFIER_DEDUPE_WINDOW"
)

// Environment variables of the mail layer, shared by every service that
// sends mail (the notifier and the recommender).
const (
	EnvSMTPHost     = "SMTP_HOST"
	EnvSMTPPort     = "SMTP_PORT"
	EnvSMTPUsername = "SMTP_USERNAME"
	EnvSMTPPassword = "SMTP_PASSWORD"
	EnvSMTPTLS      = "SMTP_TLS"
	EnvSMTPTimeout  = "SMTP_TIMEOUT"
	EnvMailFrom     = "MAIL_FROM"
	EnvOutboxDir    = "MAIL_OUTBOX_DIR"
)

// EnvReader reads settings through getenv and collects every error, each
// naming its variable and what it accepts. Services share it so that their
// messages read alike.
type EnvReader struct {
	Getenv func(string) string
	errs   []error
}

// Err returns every error met so far, joined.
func (r *EnvReader) Err() error { return errors.Join(r.errs...) }

// String returns the trimmed value of name ("" when unset).
func (r *EnvReader) String(name string) string { return strings.TrimSpace(r.Getenv(name)) }

// Int reads a whole number ≥ min into dst when name is set.
func (r *EnvReader) Int(name string, dst *int, min int) {
	if v := r.String(name); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < min {
			r.errs = append(r.errs, fmt.Errorf("%s=%q: want a whole number ≥ %d", name, v, min))
			return
		}
		*dst = n
	}
}

// Duration reads a positive Go duration into dst when name is set.
func (r *EnvReader) Duration(name string, dst *time.Duration, example string) {
	if v := r.String(name); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			r.errs = append(r.errs, fmt.Errorf("%s=%q: want a duration such as %s", name, v, example))
			return
		}
		*dst = d
	}
}

// Fail records an error for name.
func (r *EnvReader) Fail(err error) { r.errs = append(r.errs, err) }

// ConfigFromEnv reads the notifier's settings; unset variables keep their
// defaults. New validates the result.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	r := EnvReader{Getenv: getenv}
	var c Config
	c.GroupID = r.String(EnvGroupID)
	r.Int(EnvCommitEvery, &c.CommitEvery, 1)
	r.Int(EnvMaxAttempts, &c.MaxAttempts, 1)
	r.Duration(EnvRetryBackoff, &c.InitialBackoff, "500ms")
	r.Duration(EnvRetryMaxBackoff, &c.MaxBackoff, "30s")
	r.Duration(EnvDedupeWindow, &c.DedupeWindow, "15m")
	return c, r.Err()
}

// SMTPConfigFromEnv reads the mail settings and the outbox directory used
// when SMTP_HOST is empty. The result is validated.
func SMTPConfigFromEnv(getenv func(string) string) (SMTPConfig, string, error) {
	r := EnvReader{Getenv: getenv}
	c := SMTPConfig{
		Host:     r.String(EnvSMTPHost),
		Username: r.String(EnvSMTPUsername),
		// Not trimmed: a password may end in a space.
		Password: getenv(EnvSMTPPassword),
		TLS:      strings.ToLower(r.String(EnvSMTPTLS)),
		From:     r.String(EnvMailFrom),
	}
	r.Int(EnvSMTPPort, &c.Port, 1)
	if c.Port > 65535 {
		r.Fail(fmt.Errorf("%s=%d: want a port from 1 to 65535", EnvSMTPPort, c.Port))
	}
	r.Duration(EnvSMTPTimeout, &c.Timeout, "15s")
	outbox := r.String(EnvOutboxDir)
	if outbox == "" {
		outbox = DefaultOutboxDir
	}
	if err := r.Err(); err != nil {
		return c, outbox, err
	}
	return c, outbox, c.Validate()
}

package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/mail"
	"github.com/countersign/countersign/notifier"
	"github.com/countersign/countersign/recommender"
	"github.com/countersign/countersign/userapi"
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

// envReader reads settings through getenv and collects every error, each
// naming its variable and what it accepts. Services share it so that their
// messages read alike.
type envReader struct {
	Getenv func(string) string
	errs   []error
}

// Err returns every error met so far, joined.
func (r *envReader) Err() error { return errors.Join(r.errs...) }

// String returns the trimmed value of name ("" when unset).
func (r *envReader) String(name string) string { return strings.TrimSpace(r.Getenv(name)) }

// Int reads a whole number ≥ min into dst when name is set.
func (r *envReader) Int(name string, dst *int, min int) {
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
func (r *envReader) Duration(name string, dst *time.Duration, example string) {
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
func (r *envReader) Fail(err error) { r.errs = append(r.errs, err) }

// workerConfigFromEnv reads a kit worker's settings from the variables
// <prefix>GROUP_ID, <prefix>COMMIT_EVERY, … (kafka.WorkerConfig); unset
// variables keep their defaults, and the service's New validates.
func workerConfigFromEnv(r *envReader, prefix string) kafka.WorkerConfig {
	c := kafka.WorkerConfig{Prefix: prefix, GroupID: r.String(prefix + "GROUP_ID")}
	r.Int(prefix+"COMMIT_EVERY", &c.CommitEvery, 1)
	r.Int(prefix+"MAX_ATTEMPTS", &c.MaxAttempts, 1)
	r.Duration(prefix+"RETRY_BACKOFF", &c.InitialBackoff, "500ms")
	r.Duration(prefix+"RETRY_MAX_BACKOFF", &c.MaxBackoff, "30s")
	r.Duration(prefix+"DEDUPE_WINDOW", &c.DedupeWindow, "15m")
	return c
}

func notifierConfigFromEnv(getenv func(string) string) (notifier.Config, error) {
	r := envReader{Getenv: getenv}
	c := notifier.Config{WorkerConfig: workerConfigFromEnv(&r, notifier.Prefix)}
	if err := r.Err(); err != nil {
		return c, err
	}
	return c, c.WithDefaults().Validate()
}

func recommenderConfigFromEnv(getenv func(string) string) (recommender.Config, error) {
	r := envReader{Getenv: getenv}
	c := recommender.Config{WorkerConfig: workerConfigFromEnv(&r, recommender.Prefix), CatalogFile: r.String(recommender.EnvCatalog)}
	if err := r.Err(); err != nil {
		return c, err
	}
	return c, c.WithDefaults().Validate()
}

// smtpConfigFromEnv reads the mail settings and the outbox directory used
// when SMTP_HOST is empty. The result is validated.
func smtpConfigFromEnv(getenv func(string) string) (mail.SMTPConfig, string, error) {
	r := envReader{Getenv: getenv}
	c := mail.SMTPConfig{
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
	// The user API's setting: while it accepts non-ASCII local parts, a
	// relay without SMTPUTF8 is worth a warning.
	c.WarnWithoutSMTPUTF8 = true
	if v := r.String(userapi.EnvAllowUTF8LocalPart); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			r.Fail(fmt.Errorf("%s=%q: want true or false", userapi.EnvAllowUTF8LocalPart, v))
		}
		c.WarnWithoutSMTPUTF8 = err != nil || b
	}
	outbox := r.String(EnvOutboxDir)
	if outbox == "" {
		outbox = mail.DefaultOutboxDir
	}
	if err := r.Err(); err != nil {
		return c, outbox, err
	}
	return c, outbox, c.Validate()
}

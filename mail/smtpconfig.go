package mail

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/mail"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// Defaults of SMTPConfig.
const (
	DefaultSMTPPort    = 587
	DefaultSMTPTimeout = 15 * time.Second
	DefaultFrom        = "Countersign <no-reply@localhost>"
)

// Values of SMTPConfig.TLS (SMTP_TLS).
const (
	// TLSMandatory upgrades the connection with STARTTLS and verifies the
	// server certificate; a server without STARTTLS fails every send.
	TLSMandatory = "mandatory"
	// TLSOpportunistic uses STARTTLS when the server offers it and sends in
	// clear text otherwise, so an active attacker can strip the encryption.
	TLSOpportunistic = "opportunistic"
	// TLSNone never encrypts.
	TLSNone = "none"
)

// SMTPConfig configures the SMTP sender. cmd fills it from the environment
// variables named on each field; the zero value of a field means its default.
// Call Validate before use (NewSMTPSender and NewSender do).
type SMTPConfig struct {
	// Host is the SMTP server, without port (SMTP_HOST). Empty means no SMTP
	// server: NewSender then writes every mail to the outbox directory.
	Host string
	// Port is the SMTP port (SMTP_PORT); default 587, the submission port,
	// whatever TLS says. Implicit TLS ("SMTPS", port 465) is not supported.
	Port int
	// Username enables SMTP AUTH (SMTP_USERNAME); empty means no AUTH. The
	// strongest mechanism the server offers is used; PLAIN and LOGIN only over
	// TLS, so a server that offers nothing else needs TLS mandatory or
	// opportunistic (with STARTTLS on the server).
	Username string
	// Password for SMTP AUTH (SMTP_PASSWORD). It never appears in errors or
	// logs: SMTPConfig's LogValue redacts it.
	Password string
	// TLS is the STARTTLS policy (SMTP_TLS): "mandatory", "opportunistic" or
	// "none". Default "mandatory", except for a loopback Host (localhost,
	// 127.0.0.0/8, ::1), where it is "opportunistic" so that a local mail
	// catcher without TLS works as is; nothing leaves the machine there.
	TLS string
	// From is the sender of every mail (MAIL_FROM), an RFC 5322 address such
	// as "Countersign <no-reply@example.com>"; default DefaultFrom. Its domain
	// is also the right-hand side of every Message-ID.
	From string
	// Timeout bounds the connection set-up and then each SMTP command
	// (SMTP_TIMEOUT, a Go duration such as "15s"); default 15s. A server that
	// stops answering fails a Send with a temporary error after about this
	// long per command, rather than blocking the consumer.
	Timeout time.Duration
	// ASCIILocalPartOnly says that the user API refuses addresses with
	// non-ASCII characters before the @ (ALLOW_UTF8_LOCAL_PART=false; the
	// default, true, leaves it false). While it is false, the SMTP sender
	// logs a warning, once per connection, when the server does not announce
	// SMTPUTF8: mail to such addresses cannot go through it and is
	// dead-lettered. It changes nothing else: such a mail is refused the
	// same way either way.
	ASCIILocalPartOnly bool
	// TLSConfig replaces the TLS client configuration; it has no environment
	// variable. Nil verifies the server against the system roots with Host as
	// the server name; set it for a private CA (tests use it to trust
	// smtptest's certificate). An empty ServerName is filled with Host.
	TLSConfig *tls.Config
	// TracerProvider makes the "smtp send" span of each mail; it has no
	// environment variable. Nil means OpenTelemetry's global provider, which
	// does nothing unless the process installed one (cmd does, from the
	// OTEL_* variables).
	TracerProvider trace.TracerProvider
}

// WithDefaults returns c with every unset field at its default, as NewSender
// and Validate apply them.
func (c SMTPConfig) WithDefaults() SMTPConfig {
	if c.Port == 0 {
		c.Port = DefaultSMTPPort
	}
	if c.TLS == "" {
		c.TLS = TLSMandatory
		if isLoopback(c.Host) {
			c.TLS = TLSOpportunistic
		}
	}
	if c.From == "" {
		c.From = DefaultFrom
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultSMTPTimeout
	}
	return c
}

// Validate reports every invalid setting at once, naming its environment
// variable. It checks the configuration with its defaults applied. An empty
// Host is valid: it selects the outbox.
func (c SMTPConfig) Validate() error {
	c = c.WithDefaults()
	var errs []error
	if c.Host != "" {
		if strings.ContainsAny(c.Host, " /:") && net.ParseIP(c.Host) == nil {
			errs = append(errs, fmt.Errorf("SMTP_HOST %q must be a host name or IP address without scheme or port (set the port in SMTP_PORT)", c.Host))
		}
	}
	if c.Port < 1 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("SMTP_PORT must be between 1 and 65535, got %d", c.Port))
	}
	switch c.TLS {
	case TLSMandatory, TLSOpportunistic, TLSNone:
	default:
		errs = append(errs, fmt.Errorf("SMTP_TLS must be one of mandatory, opportunistic, none; got %q", c.TLS))
	}
	if c.Username == "" && c.Password != "" {
		errs = append(errs, errors.New("SMTP_PASSWORD is set but SMTP_USERNAME is empty"))
	}
	if c.Username != "" && c.Password == "" {
		errs = append(errs, errors.New("SMTP_USERNAME is set but SMTP_PASSWORD is empty"))
	}
	if c.Username != "" && c.TLS == TLSNone && !isLoopback(c.Host) {
		errs = append(errs, errors.New("SMTP_TLS=none with SMTP_USERNAME would send the credentials unencrypted to a remote host; use SMTP_TLS=mandatory"))
	}
	if _, err := mail.ParseAddress(c.From); err != nil {
		errs = append(errs, fmt.Errorf("MAIL_FROM %q is not a valid address such as \"Countersign <no-reply@example.com>\": %w", c.From, err))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("SMTP_TIMEOUT must be positive, got %v", c.Timeout))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("smtp config: %w", err)
	}
	return nil
}

// LogValue logs the configuration with the password redacted.
func (c SMTPConfig) LogValue() slog.Value {
	password := ""
	if c.Password != "" {
		password = "[redacted]"
	}
	return slog.GroupValue(
		slog.String("host", c.Host),
		slog.Int("port", c.Port),
		slog.String("tls", c.TLS),
		slog.String("username", c.Username),
		slog.String("password", password),
		slog.String("from", c.From),
		slog.Duration("timeout", c.Timeout),
	)
}

// String is LogValue for fmt, so that printing a config with %v or %+v does
// not print the password either.
func (c SMTPConfig) String() string { return c.LogValue().String() }

// isLoopback reports whether host names this machine.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

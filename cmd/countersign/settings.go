package main

import (
	"errors"
	"fmt"
	"log/slog"
	netmail "net/mail"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/countersign/countersign/cmd/internal/platform"
	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/templates"
	"github.com/countersign/countersign/userapi"
)

// config is everything a command reads from its settings: the services'
// plain configuration (platform.Config, which the packages take as it is)
// and what only cmd uses. Zero values mean the packages' defaults.
type config struct {
	platform.Config
	LogLevel  slog.Level
	LogFormat string // "text" or "json"
	// MetricsAddr is a worker's operations endpoint; "" is the worker's
	// default, "off" none.
	MetricsAddr string
	// EmbeddedKafkaAddr is where dev's embedded broker listens.
	EmbeddedKafkaAddr string
	// PagesOff is PAGES=false: the binary serves the pages unless told not
	// to (the package's zero Config does not, see parseConfig).
	PagesOff bool
	// DevInboxAddr is where dev serves the outbox as a web inbox.
	DevInboxAddr string
	// Tracing is read from the OTEL_* settings (tracing.go).
	Tracing tracingConfig
}

// DefaultEmbeddedKafkaAddr is EMBEDDED_KAFKA_ADDR's default.
const DefaultEmbeddedKafkaAddr = "127.0.0.1:9092"

// Setting is one environment variable the binary reads. The table drives
// everything about settings: parsing (apply), the defaults shown by `-h`,
// and the tests that hold .env.example, the README's configuration table,
// docker-compose.yml and the packages' own defaults against it.
type Setting struct {
	Name string
	// Default is the value an unset variable stands for, as the packages'
	// WithDefaults apply it (a test parses it and compares).
	Default string
	Help    string
	// apply parses a set, non-empty value into c; its error names the
	// variable. Values are trimmed unless raw.
	apply func(c *config, name, v string) error
	raw   bool
}

var settingsTable = []Setting{
	// Logging.
	{Name: "LOG_LEVEL", Default: "info", Help: "debug, info, warn or error", apply: func(c *config, name, v string) error {
		if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
			return fmt.Errorf("%s=%q: want debug, info, warn or error", name, v)
		}
		return nil
	}},
	{Name: "LOG_FORMAT", Default: "text", Help: "text or json (one JSON object per line)", apply: func(c *config, name, v string) error {
		switch v = strings.ToLower(v); v {
		case "text", "json":
			c.LogFormat = v
			return nil
		}
		return fmt.Errorf("%s=%q: want text or json", name, v)
	}},

	// Kafka (package events/kafka).
	{Name: "KAFKA_BROKERS", Help: "bootstrap servers, host:port,...; required, except for dev, which then starts an embedded broker",
		apply: text(func(c *config) *string { return &c.Kafka.Brokers })},
	{Name: "KAFKA_TOPIC_PARTITIONS", Default: "3", Help: "partitions of topics created when missing; bounds how many consumers of one group share the work",
		apply: whole(func(c *config) *int { return &c.Kafka.Partitions }, 1)},
	{Name: "KAFKA_TOPIC_REPLICATION_FACTOR", Default: "-1", Help: "replicas of topics created when missing; -1 is the broker's default",
		apply: func(c *config, name, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || (n < 1 && n != -1) {
				return fmt.Errorf("%s=%q: want a whole number ≥ 1, or -1 for the broker's default", name, v)
			}
			c.Kafka.ReplicationFactor = n
			return nil
		}},
	{Name: "KAFKA_SECURITY_PROTOCOL", Default: "plaintext", Help: "librdkafka security.protocol: plaintext, ssl, sasl_plaintext, sasl_ssl (every KAFKA_A_B is passed to librdkafka as a.b)", apply: passThrough, raw: true},
	{Name: "KAFKA_SASL_MECHANISMS", Help: "librdkafka sasl.mechanisms: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, ...", apply: passThrough, raw: true},
	{Name: "KAFKA_SASL_USERNAME", Help: "librdkafka sasl.username", apply: passThrough, raw: true},
	{Name: "KAFKA_SASL_PASSWORD", Help: "librdkafka sasl.password (never logged)", apply: passThrough, raw: true},
	{Name: "KAFKA_SSL_CA_LOCATION", Help: "librdkafka ssl.ca.location: CA bundle to verify the brokers", apply: passThrough, raw: true},

	// Code encryption (user API and notifier).
	{Name: "CODE_ENCRYPTION_KEYS", Help: "id:base64key,... AES-256 keys sealing codes in events; the first seals, all open; `countersign keygen` prints one; required (dev makes a random one when unset)",
		apply: func(c *config, _, v string) (err error) {
			c.Keys, err = events.ParseKeyring(v)
			return err
		}},

	// User API.
	{Name: "HTTP_ADDR", Default: "127.0.0.1:8080", Help: "listen address of the user API",
		apply: text(func(c *config) *string { return &c.UserAPI.HTTPAddr })},
	{Name: "CODE_TTL", Default: "15m", Help: "how long a code and its pending registration stay valid",
		apply: duration(func(c *config) *time.Duration { return &c.UserAPI.CodeTTL }, "15m")},
	{Name: "CODE_MAX_ATTEMPTS", Default: "5", Help: "verify attempts per code; then 429 until a new code",
		apply: whole(func(c *config) *int { return &c.UserAPI.CodeMaxAttempts }, 1)},
	{Name: "CODE_DIGITS", Default: "6", Help: "length of a code in digits, from 6 to 10 (uniform, from crypto/rand)",
		apply: whole(func(c *config) *int { return &c.UserAPI.CodeDigits }, userapi.MinCodeDigits)},
	{Name: "VERIFY_MAX_FAILURES_PER_DAY", Default: "10", Help: "wrong codes checked per address in any 24 hours, across its codes; past it every verify of the address is refused and no code is sent (docs/security.md)",
		apply: whole(func(c *config) *int { return &c.UserAPI.VerifyMaxFailuresPerDay }, 1)},
	{Name: "RESEND_INTERVAL", Default: "60s", Help: "least time between two mails of a code to one address; register and resend send the same code while it lives",
		apply: duration(func(c *config) *time.Duration { return &c.UserAPI.ResendInterval }, "60s")},
	{Name: "RATE_LIMIT_PER_IP", Default: "60", Help: "requests per minute per client IP on /api/, shared by the replicas with a Redis PENDING_STORE; 0 switches the limit off",
		apply: func(c *config, name, v string) error {
			n, err := strconv.Atoi(v)
			switch {
			case err != nil || n < 0:
				return fmt.Errorf("%s=%q: want requests per minute, a whole number ≥ 0 (0 switches the limit off)", name, v)
			case n == 0:
				c.UserAPI.RateLimitPerIP = userapi.RateLimitOff
			default:
				c.UserAPI.RateLimitPerIP = n
			}
			return nil
		}},
	{Name: "RATE_LIMIT_BURST", Default: "20", Help: "requests a client IP may make at once before the rate applies",
		apply: whole(func(c *config) *int { return &c.UserAPI.RateLimitBurst }, 1)},
	{Name: "PUBLISH_TIMEOUT", Default: "10s", Help: "wait for the broker's acknowledgement before answering 503",
		apply: duration(func(c *config) *time.Duration { return &c.UserAPI.PublishTimeout }, "10s")},
	{Name: "TRUST_PROXY_HEADERS", Default: "false", Help: "refused when true since issue 14 (any client could pick its IP): set TRUSTED_PROXIES",
		apply: func(c *config, name, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("%s=%q: want true or false", name, v)
			}
			c.UserAPI.TrustProxyHeaders = b
			return nil
		}},
	{Name: "TRUSTED_PROXIES", Help: "reverse proxies (CIDRs or IPs, comma-separated) whose X-Forwarded-For is read, from the right, skipping trusted hops; empty: the header is ignored",
		apply: func(c *config, _, v string) (err error) {
			c.UserAPI.TrustedProxies, err = userapi.ParseTrustedProxies(v)
			return err
		}},
	{Name: "CODE_MAX_SENDS_PER_DAY", Default: "10", Help: "code mails one mailbox (address without +tag; gmail dots ignored) may get in 24 h; past it register/resend answer 202 and send nothing; shared by the replicas with a Redis PENDING_STORE",
		apply: whole(func(c *config) *int { return &c.UserAPI.CodeMaxSendsPerDay }, 1)},
	{Name: "CODE_MAX_SENDS_PER_HOUR", Default: "0", Help: "code mails the whole platform may send in an hour; 0 means no limit",
		apply: whole(func(c *config) *int { return &c.UserAPI.CodeMaxSendsPerHour }, 0)},
	{Name: "PENDING_MAX", Default: "1000000", Help: "pending registrations held at most; past it register answers 503 with Retry-After",
		apply: whole(func(c *config) *int { return &c.UserAPI.PendingMax }, 1)},
	{Name: "ALLOW_UTF8_LOCAL_PART", Default: "true", Help: "accept addresses with non-ASCII characters before the @ (josé@example.com); false answers 400 at register. Such addresses need a relay with SMTPUTF8: without it their mail is dead-lettered, and while this is true each SMTP connection to such a relay logs a warning. Give the user API and the mail senders (notifier, recommender) the same value",
		apply: func(c *config, name, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("%s=%q: want true or false", name, v)
			}
			// The user API refuses such addresses; the mail senders then
			// have no reason to warn about a relay without SMTPUTF8.
			c.UserAPI.ASCIILocalPartOnly = !b
			c.SMTP.ASCIILocalPartOnly = !b
			return nil
		}},
	{Name: "PAGES", Default: "true", Help: "serve the hosted pages (register, enter the code, confirm a link) and put a verification link in every code mail; needs PUBLIC_URL",
		apply: func(c *config, name, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("%s=%q: want true or false", name, v)
			}
			c.PagesOff = !b
			return nil
		}},
	{Name: "PUBLIC_URL", Help: "where people open the pages, e.g. https://accounts.example.com (dev: http:// + HTTP_ADDR); links in mails are built on it; required by userapi when PAGES is on",
		apply: func(c *config, _, v string) error {
			if err := userapi.ValidatePublicURL(v); err != nil {
				return err
			}
			c.setPublicURL(strings.TrimRight(v, "/"))
			return nil
		}},
	{Name: "PENDING_STORE", Default: "memory", Help: "where pending registrations live: memory (one replica only) or redis://[:password@]host:port/db (rediss:// for TLS), shared by every replica (password never logged)",
		apply: func(c *config, _, v string) error {
			c.PendingStore = v
			return platform.CheckPendingStore(v)
		}},

	// Notifier.
	{Name: "NOTIFIER_GROUP_ID", Default: "notification-service", Help: "consumer group of the notifier (never rename: a new group re-reads history)",
		apply: text(func(c *config) *string { return &c.Notifier.GroupID })},
	{Name: "NOTIFIER_COMMIT_EVERY", Default: "5", Help: "commit offsets every N handled events (in the background); a crash re-sends fewer than 2N mails",
		apply: whole(func(c *config) *int { return &c.Notifier.CommitEvery }, 1)},
	{Name: "NOTIFIER_MAX_ATTEMPTS", Default: "12", Help: "tries of one mail on temporary SMTP failures before it is dead-lettered; while the SMTP server is down it is held back instead",
		apply: whole(func(c *config) *int { return &c.Notifier.MaxAttempts }, 1)},
	{Name: "NOTIFIER_RETRY_BACKOFF", Default: "500ms", Help: "first wait between tries; doubles each time",
		apply: duration(func(c *config) *time.Duration { return &c.Notifier.InitialBackoff }, "500ms")},
	{Name: "NOTIFIER_RETRY_MAX_BACKOFF", Default: "30s", Help: "longest wait between tries",
		apply: duration(func(c *config) *time.Duration { return &c.Notifier.MaxBackoff }, "30s")},
	{Name: "NOTIFIER_DEDUPE_WINDOW", Default: "15m", Help: "how long a sent event id is remembered so a redelivered event sends no second mail",
		apply: duration(func(c *config) *time.Duration { return &c.Notifier.DedupeWindow }, "15m")},

	// Recommender.
	{Name: "RECOMMENDER_GROUP_ID", Default: "recommendation-service", Help: "consumer group of the recommender",
		apply: text(func(c *config) *string { return &c.Recommender.GroupID })},
	{Name: "RECOMMENDER_COMMIT_EVERY", Default: "5", Help: "commit offsets every N handled events",
		apply: whole(func(c *config) *int { return &c.Recommender.CommitEvery }, 1)},
	{Name: "RECOMMENDER_MAX_ATTEMPTS", Default: "12", Help: "tries of one mail on temporary SMTP failures before it is dead-lettered; while the SMTP server is down it is held back instead",
		apply: whole(func(c *config) *int { return &c.Recommender.MaxAttempts }, 1)},
	{Name: "RECOMMENDER_RETRY_BACKOFF", Default: "500ms", Help: "first wait between tries; doubles each time",
		apply: duration(func(c *config) *time.Duration { return &c.Recommender.InitialBackoff }, "500ms")},
	{Name: "RECOMMENDER_RETRY_MAX_BACKOFF", Default: "30s", Help: "longest wait between tries",
		apply: duration(func(c *config) *time.Duration { return &c.Recommender.MaxBackoff }, "30s")},
	{Name: "RECOMMENDER_DEDUPE_WINDOW", Default: "15m", Help: "how long a sent event id is remembered so a redelivered event sends no second mail",
		apply: duration(func(c *config) *time.Duration { return &c.Recommender.DedupeWindow }, "15m")},
	{Name: "RECOMMENDER_CATALOG", Help: "path of a JSON catalogue replacing the embedded one",
		apply: text(func(c *config) *string { return &c.Recommender.CatalogFile })},

	// Audit.
	{Name: "AUDIT_GROUP_ID", Default: "audit-service", Help: "consumer group of the audit; its offsets are kept in the database, by group",
		apply: text(func(c *config) *string { return &c.Audit.GroupID })},
	{Name: "AUDIT_DATABASE_URL", Default: "sqlite://./countersign-audit.db", Help: "where the audit writes: sqlite://PATH (embedded, pure Go) or postgres://USER:PASSWORD@HOST:PORT/DB (password never logged)",
		apply: text(func(c *config) *string { return &c.Audit.DatabaseURL })},
	{Name: "AUDIT_BATCH_SIZE", Default: "500", Help: "events per batch (one transaction with the offsets after it)",
		apply: whole(func(c *config) *int { return &c.Audit.BatchSize }, 1)},
	{Name: "AUDIT_BATCH_INTERVAL", Default: "1s", Help: "write the open batch this long after its first event when it did not fill up",
		apply: duration(func(c *config) *time.Duration { return &c.Audit.BatchInterval }, "1s")},

	// Mail (notifier and recommender).
	{Name: "SMTP_HOST", Help: "SMTP server; empty writes each mail as an .eml file to MAIL_OUTBOX_DIR instead",
		apply: text(func(c *config) *string { return &c.SMTP.Host })},
	{Name: "SMTP_PORT", Default: "587", Help: "SMTP port (submission; STARTTLS per SMTP_TLS)",
		apply: func(c *config, name, v string) error {
			if err := whole(func(c *config) *int { return &c.SMTP.Port }, 1)(c, name, v); err != nil {
				return err
			}
			if c.SMTP.Port > 65535 {
				return fmt.Errorf("%s=%d: want a port from 1 to 65535", name, c.SMTP.Port)
			}
			return nil
		}},
	{Name: "SMTP_USERNAME", Help: "SMTP AUTH user; empty means no AUTH",
		apply: text(func(c *config) *string { return &c.SMTP.Username })},
	// Not trimmed: a password may end in a space.
	{Name: "SMTP_PASSWORD", Help: "SMTP AUTH password (never logged)", raw: true,
		apply: text(func(c *config) *string { return &c.SMTP.Password })},
	{Name: "SMTP_TLS", Default: "mandatory", Help: "mandatory, opportunistic or none; the default is opportunistic for a loopback SMTP_HOST",
		apply: func(c *config, _, v string) error { c.SMTP.TLS = strings.ToLower(v); return nil }},
	{Name: "SMTP_TIMEOUT", Default: "15s", Help: "bound on connecting and on each SMTP command",
		apply: duration(func(c *config) *time.Duration { return &c.SMTP.Timeout }, "15s")},
	{Name: "MAIL_FROM", Default: "Countersign <no-reply@localhost>", Help: "sender of every mail",
		apply: text(func(c *config) *string { return &c.SMTP.From })},
	{Name: "MAIL_OUTBOX_DIR", Default: "./outbox", Help: "where mails are written when SMTP_HOST is empty",
		apply: text(func(c *config) *string { return &c.OutboxDir })},
	{Name: "TEMPLATES_DIR", Help: "directory whose email/<name>/*.gotmpl (mails) and pages/<name>.html.gotmpl (pages) files replace the embedded templates",
		apply: text(func(c *config) *string { return &c.TemplatesDir })},

	// Branding (pages and mails).
	{Name: "PRODUCT_NAME", Default: templates.DefaultProductName, Help: "the product's name in every page and mail",
		apply: func(c *config, name, v string) error {
			if strings.ContainsFunc(v, func(r rune) bool { return r < ' ' }) || len(v) > 100 {
				return fmt.Errorf("%s: want one line of at most 100 characters", name)
			}
			c.Brand.ProductName = v
			return nil
		}},
	{Name: "SUPPORT_EMAIL", Help: "contact address shown in pages and mails; empty shows none",
		apply: func(c *config, name, v string) error {
			if a, err := netmail.ParseAddress(v); err != nil || a.Name != "" || a.Address != v {
				return fmt.Errorf("%s=%q: want a bare address such as help@example.com", name, v)
			}
			c.Brand.SupportEmail = v
			return nil
		}},

	// Operations endpoint of every service.
	{Name: "METRICS_ADDR", Default: userAPIOpsAddr + " (userapi, dev), " + notifierOpsAddr + " (notifier), " + recommenderOpsAddr + " (recommender), " + auditOpsAddr + " (audit)", Help: "listen address of /metrics, /healthz and /readyz; never the public HTTP_ADDR (metrics tell which addresses are pending); off disables it",
		apply: text(func(c *config) *string { return &c.MetricsAddr })},

	// Tracing (OpenTelemetry's standard variables; off when no endpoint is set).
	{Name: "OTEL_EXPORTER_OTLP_ENDPOINT", Help: "OTLP/HTTP collector base URL, e.g. http://localhost:4318 (spans go to /v1/traces); with OTEL_EXPORTER_OTLP_TRACES_ENDPOINT also empty, tracing is off at no cost",
		apply: otlpURL(func(c *config) **url.URL { return &c.Tracing.Endpoint })},
	{Name: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", Help: "full OTLP/HTTP traces URL, e.g. http://localhost:4318/v1/traces; wins over OTEL_EXPORTER_OTLP_ENDPOINT",
		apply: otlpURL(func(c *config) **url.URL { return &c.Tracing.TracesEndpoint })},
	{Name: "OTEL_SERVICE_NAME", Default: "countersign-<command>", Help: "service.name of the spans",
		apply: text(func(c *config) *string { return &c.Tracing.ServiceName })},
	{Name: "OTEL_SDK_DISABLED", Default: "false", Help: "true switches tracing off whatever the endpoint (the SDK reads the other OTEL_* variables, such as OTEL_EXPORTER_OTLP_HEADERS and OTEL_TRACES_SAMPLER, from the process environment as usual)",
		apply: func(c *config, name, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("%s=%q: want true or false", name, v)
			}
			c.Tracing.Disabled = b
			return nil
		}},

	// Dev mode.
	{Name: "EMBEDDED_KAFKA_ADDR", Default: DefaultEmbeddedKafkaAddr, Help: "where dev's embedded broker listens when KAFKA_BROKERS is empty",
		apply: text(func(c *config) *string { return &c.EmbeddedKafkaAddr })},
	{Name: "DEV_INBOX_ADDR", Default: DefaultDevInboxAddr, Help: "where dev serves the outbox as a web inbox (when SMTP_HOST is empty); off disables it",
		apply: text(func(c *config) *string { return &c.DevInboxAddr })},
}

// Default operations addresses (METRICS_ADDR).
const (
	userAPIOpsAddr     = "127.0.0.1:9100"
	notifierOpsAddr    = "127.0.0.1:9101"
	recommenderOpsAddr = "127.0.0.1:9102"
)

var settingsByName = func() map[string]Setting {
	m := make(map[string]Setting, len(settingsTable))
	for _, s := range settingsTable {
		m[s.Name] = s
	}
	return m
}()

var (
	logSettings         = []string{"LOG_LEVEL", "LOG_FORMAT"}
	kafkaSettings       = []string{"KAFKA_BROKERS", "KAFKA_TOPIC_PARTITIONS", "KAFKA_TOPIC_REPLICATION_FACTOR", "KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISMS", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "KAFKA_SSL_CA_LOCATION"}
	keySettings         = []string{"CODE_ENCRYPTION_KEYS"}
	userapiSettings     = []string{"HTTP_ADDR", "CODE_TTL", "CODE_MAX_ATTEMPTS", "CODE_DIGITS", "VERIFY_MAX_FAILURES_PER_DAY", "RESEND_INTERVAL", "RATE_LIMIT_PER_IP", "RATE_LIMIT_BURST", "PUBLISH_TIMEOUT", "TRUST_PROXY_HEADERS", "TRUSTED_PROXIES", "CODE_MAX_SENDS_PER_DAY", "CODE_MAX_SENDS_PER_HOUR", "PENDING_MAX", "PENDING_STORE", "ALLOW_UTF8_LOCAL_PART", "PAGES", "PUBLIC_URL"}
	notifierSettings    = []string{"NOTIFIER_GROUP_ID", "NOTIFIER_COMMIT_EVERY", "NOTIFIER_MAX_ATTEMPTS", "NOTIFIER_RETRY_BACKOFF", "NOTIFIER_RETRY_MAX_BACKOFF", "NOTIFIER_DEDUPE_WINDOW"}
	recommenderSettings = []string{"RECOMMENDER_GROUP_ID", "RECOMMENDER_COMMIT_EVERY", "RECOMMENDER_MAX_ATTEMPTS", "RECOMMENDER_RETRY_BACKOFF", "RECOMMENDER_RETRY_MAX_BACKOFF", "RECOMMENDER_DEDUPE_WINDOW", "RECOMMENDER_CATALOG"}
	publicURLSettings   = []string{"PUBLIC_URL"}
	brandSettings       = []string{"PRODUCT_NAME", "SUPPORT_EMAIL"}
	mailSettings        = []string{"SMTP_HOST", "SMTP_PORT", "SMTP_USERNAME", "SMTP_PASSWORD", "SMTP_TLS", "SMTP_TIMEOUT", "MAIL_FROM", "MAIL_OUTBOX_DIR", "TEMPLATES_DIR", "ALLOW_UTF8_LOCAL_PART"}
	auditSettings       = []string{"AUDIT_GROUP_ID", "AUDIT_DATABASE_URL", "AUDIT_BATCH_SIZE", "AUDIT_BATCH_INTERVAL"}
	opsSettings         = []string{"METRICS_ADDR"}
	devSettings         = []string{"EMBEDDED_KAFKA_ADDR", "DEV_INBOX_ADDR"}
)

// text sets a string field.
func text(field func(*config) *string) func(*config, string, string) error {
	return func(c *config, _, v string) error { *field(c) = v; return nil }
}

// whole reads a whole number ≥ min.
func whole(field func(*config) *int, min int) func(*config, string, string) error {
	return func(c *config, name, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < min {
			return fmt.Errorf("%s=%q: want a whole number ≥ %d", name, v, min)
		}
		*field(c) = n
		return nil
	}
}

// duration reads a positive Go duration.
func duration(field func(*config) *time.Duration, example string) func(*config, string, string) error {
	return func(c *config, name, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("%s=%q: want a duration such as %s", name, v, example)
		}
		*field(c) = d
		return nil
	}
}

// passThrough hands KAFKA_A_B to librdkafka as the property a.b, unchanged.
func passThrough(c *config, name, v string) error {
	if c.Kafka.Client == nil {
		c.Kafka.Client = map[string]string{}
	}
	c.Kafka.Client[strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(name, "KAFKA_")), "_", ".")] = v
	return nil
}

// notPassedThrough are KAFKA_* variables that are not librdkafka properties
// and not settings of the binary: the tests' broker list.
var notPassedThrough = map[string]bool{"KAFKA_TEST_BROKERS": true}

// parseConfig reads the settings names (a command's) from env and validates
// the result: it reports every malformed value at once, else what validate
// finds.
func parseConfig(names []string, env map[string]string) (config, error) {
	c, err := parseSettings(names, env)
	if err != nil {
		return c, err
	}
	c.pageDefaults(names)
	return c, c.validate(names)
}

// parseSettings reads the settings names from env, unset and empty ones
// keeping their defaults, and, when names reach Kafka, passes every other
// KAFKA_* variable through to librdkafka (KAFKA_A_B as a.b). It reports
// every malformed value at once.
func parseSettings(names []string, env map[string]string) (config, error) {
	var c config
	var errs []error
	set := func(s Setting, v string) {
		if !s.raw {
			v = strings.TrimSpace(v)
		}
		if v == "" {
			return
		}
		if err := s.apply(&c, s.Name, v); err != nil {
			errs = append(errs, err)
		}
	}
	for _, n := range names {
		set(settingsByName[n], env[n])
	}
	if slices.Contains(names, "KAFKA_BROKERS") {
		for k, v := range env {
			if _, known := settingsByName[k]; strings.HasPrefix(k, "KAFKA_") && !known && !notPassedThrough[k] {
				set(Setting{Name: k, apply: passThrough, raw: true}, v)
			}
		}
	}
	return c, errors.Join(errs...)
}

// validate checks, with the packages' defaults applied, every part of c
// the command uses (it reads the part's settings), so that a wrong setting
// stops the start with a message naming it, before anything waits for Kafka
// or Redis.
func (c *config) validate(names []string) error {
	uses := func(name string) bool { return slices.Contains(names, name) }
	var errs []error
	check := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	// dev starts a broker of its own and a random key when these are unset.
	dev := uses("EMBEDDED_KAFKA_ADDR")
	if uses("KAFKA_BROKERS") {
		k := c.Kafka
		if dev && k.Brokers == "" {
			k.Brokers = "embedded"
		}
		check(k.Validate())
	}
	if uses("CODE_ENCRYPTION_KEYS") && c.Keys == nil && !dev {
		_, err := events.ParseKeyring("")
		check(err)
	}
	if uses("HTTP_ADDR") {
		check(c.UserAPI.WithDefaults().Validate())
	}
	if uses("NOTIFIER_GROUP_ID") {
		check(c.Notifier.WithDefaults().Validate())
	}
	if uses("RECOMMENDER_GROUP_ID") {
		check(c.Recommender.WithDefaults().Validate())
	}
	if uses("AUDIT_GROUP_ID") {
		check(c.Audit.WithDefaults().Validate())
	}
	if uses("SMTP_HOST") {
		check(c.SMTP.Validate())
	}
	return errors.Join(errs...)
}

package main

// Setting is one environment variable the binary reads. This table is what
// `-h` prints, and the test over .env.example and docker-compose.yml checks
// every variable they name against it.
type Setting struct {
	Name    string
	Default string
	Help    string
}

var settingsTable = []Setting{
	// Logging.
	{"LOG_LEVEL", "info", "debug, info, warn or error"},
	{"LOG_FORMAT", "text", "text or json (one JSON object per line)"},

	// Kafka (package events).
	{"KAFKA_BROKERS", "", "bootstrap servers, host:port,...; required, except for dev, which then starts an embedded broker"},
	{"KAFKA_TOPIC_PARTITIONS", "3", "partitions of topics created when missing; bounds how many consumers of one group share the work"},
	{"KAFKA_TOPIC_REPLICATION_FACTOR", "-1", "replicas of topics created when missing; -1 is the broker's default"},
	{"KAFKA_SECURITY_PROTOCOL", "plaintext", "librdkafka security.protocol: plaintext, ssl, sasl_plaintext, sasl_ssl (every KAFKA_A_B is passed to librdkafka as a.b)"},
	{"KAFKA_SASL_MECHANISMS", "", "librdkafka sasl.mechanisms: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, ..."},
	{"KAFKA_SASL_USERNAME", "", "librdkafka sasl.username"},
	{"KAFKA_SASL_PASSWORD", "", "librdkafka sasl.password (never logged)"},
	{"KAFKA_SSL_CA_LOCATION", "", "librdkafka ssl.ca.location: CA bundle to verify the brokers"},

	// Code encryption (user API and notifier).
	{"CODE_ENCRYPTION_KEYS", "", "id:base64key,... AES-256 keys sealing codes in events; the first seals, all open; `countersign keygen` prints one; required (dev makes a random one when unset)"},

	// User API.
	{"HTTP_ADDR", "127.0.0.1:8080", "listen address of the user API"},
	{"CODE_TTL", "15m", "how long a code and its pending registration stay valid"},
	{"CODE_MAX_ATTEMPTS", "5", "verify attempts per code; then 429 until a new code"},
	{"RESEND_INTERVAL", "60s", "least time between two codes sent to one address"},
	{"RATE_LIMIT_PER_IP", "60", "requests per minute per client IP on /api/, shared by the replicas with a Redis PENDING_STORE; 0 switches the limit off"},
	{"RATE_LIMIT_BURST", "20", "requests a client IP may make at once before the rate applies"},
	{"PUBLISH_TIMEOUT", "10s", "wait for the broker's acknowledgement before answering 503"},
	{"TRUST_PROXY_HEADERS", "false", "refused when true since issue 14 (any client could pick its IP): set TRUSTED_PROXIES"},
	{"TRUSTED_PROXIES", "", "reverse proxies (CIDRs or IPs, comma-separated) whose X-Forwarded-For is read, from the right, skipping trusted hops; empty: the header is ignored"},
	{"CODE_MAX_SENDS_PER_DAY", "10", "code mails one mailbox (address without +tag; gmail dots ignored) may get in 24 h; past it register/resend answer 202 and send nothing; shared by the replicas with a Redis PENDING_STORE"},
	{"CODE_MAX_SENDS_PER_HOUR", "0", "code mails the whole platform may send in an hour; 0 means no limit"},
	{"PENDING_MAX", "1000000", "pending registrations held at most; past it register answers 503 with Retry-After"},
	{"PENDING_STORE", "memory", "where pending registrations live: memory (one replica only) or redis://[:password@]host:port/db (rediss:// for TLS), shared by every replica (password never logged)"},

	// Notifier.
	{"NOTIFIER_GROUP_ID", "notification-service", "consumer group of the notifier (never rename: a new group re-reads history)"},
	{"NOTIFIER_COMMIT_EVERY", "5", "commit offsets every N handled events (in the background); a crash re-sends fewer than 2N mails"},
	{"NOTIFIER_MAX_ATTEMPTS", "12", "tries of one mail on temporary SMTP failures before it is dead-lettered; while the SMTP server is down it is held back instead"},
	{"NOTIFIER_RETRY_BACKOFF", "500ms", "first wait between tries; doubles each time"},
	{"NOTIFIER_RETRY_MAX_BACKOFF", "30s", "longest wait between tries"},
	{"NOTIFIER_DEDUPE_WINDOW", "15m", "how long a sent event id is remembered so a redelivered event sends no second mail"},

	// Recommender.
	{"RECOMMENDER_GROUP_ID", "recommendation-service", "consumer group of the recommender"},
	{"RECOMMENDER_COMMIT_EVERY", "5", "commit offsets every N handled events"},
	{"RECOMMENDER_MAX_ATTEMPTS", "12", "tries of one mail on temporary SMTP failures before it is dead-lettered; while the SMTP server is down it is held back instead"},
	{"RECOMMENDER_RETRY_BACKOFF", "500ms", "first wait between tries; doubles each time"},
	{"RECOMMENDER_RETRY_MAX_BACKOFF", "30s", "longest wait between tries"},
	{"RECOMMENDER_DEDUPE_WINDOW", "15m", "how long a sent event id is remembered so a redelivered event sends no second mail"},
	{"RECOMMENDER_CATALOG", "", "path of a JSON catalogue replacing the embedded one"},

	// Mail (notifier and recommender).
	{"SMTP_HOST", "", "SMTP server; empty writes each mail as an .eml file to MAIL_OUTBOX_DIR instead"},
	{"SMTP_PORT", "587", "SMTP port (submission; STARTTLS per SMTP_TLS)"},
	{"SMTP_USERNAME", "", "SMTP AUTH user; empty means no AUTH"},
	{"SMTP_PASSWORD", "", "SMTP AUTH password (never logged)"},
	{"SMTP_TLS", "mandatory", "mandatory, opportunistic or none; the default is opportunistic for a loopback SMTP_HOST"},
	{"SMTP_TIMEOUT", "15s", "bound on connecting and on each SMTP command"},
	{"MAIL_FROM", "Countersign <no-reply@localhost>", "sender of every mail"},
	{"MAIL_OUTBOX_DIR", "./outbox", "where mails are written when SMTP_HOST is empty"},
	{"TEMPLATES_DIR", "", "directory whose email/<name>/*.gotmpl files replace the embedded templates"},

	// Operations endpoint of the workers.
	{"METRICS_ADDR", "127.0.0.1:9100 (userapi, dev), 127.0.0.1:9101 (notifier), 127.0.0.1:9102 (recommender)", "listen address of /metrics, /healthz and /readyz; never the public HTTP_ADDR; off disables it"},

	// Dev mode.
	{"EMBEDDED_KAFKA_ADDR", "127.0.0.1:9092", "where dev's embedded broker listens when KAFKA_BROKERS is empty"},
}

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
	userapiSettings     = []string{"HTTP_ADDR", "CODE_TTL", "CODE_MAX_ATTEMPTS", "RESEND_INTERVAL", "RATE_LIMIT_PER_IP", "RATE_LIMIT_BURST", "PUBLISH_TIMEOUT", "TRUST_PROXY_HEADERS", "TRUSTED_PROXIES", "CODE_MAX_SENDS_PER_DAY", "CODE_MAX_SENDS_PER_HOUR", "PENDING_MAX", "PENDING_STORE"}
	notifierSettings    = []string{"NOTIFIER_GROUP_ID", "NOTIFIER_COMMIT_EVERY", "NOTIFIER_MAX_ATTEMPTS", "NOTIFIER_RETRY_BACKOFF", "NOTIFIER_RETRY_MAX_BACKOFF", "NOTIFIER_DEDUPE_WINDOW"}
	recommenderSettings = []string{"RECOMMENDER_GROUP_ID", "RECOMMENDER_COMMIT_EVERY", "RECOMMENDER_MAX_ATTEMPTS", "RECOMMENDER_RETRY_BACKOFF", "RECOMMENDER_RETRY_MAX_BACKOFF", "RECOMMENDER_DEDUPE_WINDOW", "RECOMMENDER_CATALOG"}
	mailSettings        = []string{"SMTP_HOST", "SMTP_PORT", "SMTP_USERNAME", "SMTP_PASSWORD", "SMTP_TLS", "SMTP_TIMEOUT", "MAIL_FROM", "MAIL_OUTBOX_DIR", "TEMPLATES_DIR"}
	opsSettings         = []string{"METRICS_ADDR"}
	devSettings         = []string{"EMBEDDED_KAFKA_ADDR"}
)

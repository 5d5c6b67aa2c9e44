package main

import (
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/mail"
	"github.com/countersign/countersign/notifier"
	"github.com/countersign/countersign/recommender"
	"github.com/countersign/countersign/userapi"
)

// TestSettingDefaultsMatchThePackages: the default each row documents (in
// -h, .env.example and the README) is what the package applies to an unset
// value. Parsing every row's Default must give the package's WithDefaults.
func TestSettingDefaultsMatchThePackages(t *testing.T) {
	var c config
	for _, s := range settingsTable {
		if s.Default == "" || s.Name == "METRICS_ADDR" {
			continue
		}
		if err := s.apply(&c, s.Name, s.Default); err != nil {
			t.Errorf("%s: its default %q does not parse: %v", s.Name, s.Default, err)
		}
	}
	if want := (userapi.Config{}).WithDefaults(); !reflect.DeepEqual(c.UserAPI, want) {
		t.Errorf("user API defaults in the table:\n%+v\nthe package's:\n%+v", c.UserAPI, want)
	}
	got := c.Notifier
	got.Prefix = notifier.Prefix
	if want := (notifier.Config{}).WithDefaults(); got != want {
		t.Errorf("notifier defaults in the table:\n%+v\nthe package's:\n%+v", got, want)
	}
	if want := (kafka.WorkerConfig{Prefix: notifier.Prefix}).WithDefaults(notifier.DefaultGroupID); got.WorkerConfig != want {
		t.Errorf("notifier worker defaults in the table:\n%+v\nthe kit's:\n%+v", got.WorkerConfig, want)
	}
	gotR := c.Recommender
	gotR.Prefix = recommender.Prefix
	if want := (recommender.Config{}).WithDefaults(); gotR != want {
		t.Errorf("recommender defaults in the table:\n%+v\nthe package's:\n%+v", gotR, want)
	}
	if want := (audit.Config{}).WithDefaults(); c.Audit != want {
		t.Errorf("audit defaults in the table:\n%+v\nthe package's:\n%+v", c.Audit, want)
	}
	if want := (mail.SMTPConfig{}).WithDefaults(); c.SMTP != want {
		t.Errorf("mail defaults in the table:\n%+v\nthe package's:\n%+v", c.SMTP, want)
	}
	if filepath.Clean(c.OutboxDir) != filepath.Clean(mail.DefaultOutboxDir) {
		t.Errorf("MAIL_OUTBOX_DIR default %q, the package's %q", c.OutboxDir, mail.DefaultOutboxDir)
	}
	k := (kafka.Config{}).WithDefaults()
	if c.Kafka.Partitions != k.Partitions || c.Kafka.ReplicationFactor != k.ReplicationFactor {
		t.Errorf("Kafka defaults in the table: %d partitions, replication %d; the package's %d, %d",
			c.Kafka.Partitions, c.Kafka.ReplicationFactor, k.Partitions, k.ReplicationFactor)
	}
	if c.LogLevel != 0 || c.LogFormat != "text" || c.PendingStore != "memory" || c.EmbeddedKafkaAddr != DefaultEmbeddedKafkaAddr {
		t.Errorf("cmd's own defaults: %+v", c)
	}
	// METRICS_ADDR's default depends on the worker.
	for _, a := range []string{userAPIOpsAddr, notifierOpsAddr, recommenderOpsAddr, auditOpsAddr} {
		if !strings.Contains(settingsByName["METRICS_ADDR"].Default, a) {
			t.Errorf("METRICS_ADDR's default does not show %s", a)
		}
	}
	// And parsing nothing leaves every field to the packages.
	empty, err := parseSettings(settingNames(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(empty.UserAPI, userapi.Config{}) || empty.Notifier != (notifier.Config{}) || empty.SMTP != (mail.SMTPConfig{}) {
		t.Errorf("an empty environment set %+v", empty)
	}
}

func settingNames() []string {
	var names []string
	for _, s := range settingsTable {
		names = append(names, s.Name)
	}
	return names
}

// TestEverySettingIsRead: each row parses itself, and some command reads
// it; every setting a command lists is in the table.
func TestEverySettingIsRead(t *testing.T) {
	listed := map[string]bool{}
	for name, cmd := range commands {
		for _, n := range cmd.settings {
			if _, ok := settingsByName[n]; !ok {
				t.Errorf("%s lists %s, which is not in the settings table", name, n)
			}
			listed[n] = true
		}
	}
	for _, s := range settingsTable {
		if s.apply == nil {
			t.Errorf("setting %s has no apply: nothing parses it", s.Name)
		}
		if !listed[s.Name] {
			t.Errorf("setting %s is documented but no command reads it", s.Name)
		}
	}
}

var (
	backticked     = regexp.MustCompile("`([^`]*)`")
	variableInCell = regexp.MustCompile("`([A-Z][A-Z0-9_]+)`")
)

// TestReadmeConfigurationTable: the README's table lists every setting with
// the table's default. A row may name several variables; its default cell
// then gives one default for all, or one each, comma-separated. A default
// is the cell's first `value`; a cell without one (—, embedded) means "".
func TestReadmeConfigurationTable(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(raw), "\n## Configuration\n")
	section, _, _ = strings.Cut(section, "\n## ")
	seen := map[string]bool{}
	for line := range strings.Lines(section) {
		m := strings.Split(strings.TrimSpace(line), " | ")
		if len(m) < 3 || !strings.HasPrefix(m[0], "| `") {
			continue
		}
		var names []string
		for _, v := range variableInCell.FindAllStringSubmatch(m[0], -1) {
			if v[1] == "KAFKA_A_B" {
				continue // the pass-through, not a setting
			}
			names = append(names, v[1])
		}
		defaults := strings.Split(m[1], ", ")
		if len(defaults) != len(names) {
			defaults = slices.Repeat([]string{m[1]}, len(names))
		}
		for i, name := range names {
			s, ok := settingsByName[name]
			if !ok {
				t.Errorf("README lists %s, which countersign does not read", name)
				continue
			}
			seen[name] = true
			shown := ""
			if d := backticked.FindStringSubmatch(defaults[i]); d != nil {
				shown = d[1]
			}
			want, _, _ := strings.Cut(s.Default, " (")
			if shown != want {
				t.Errorf("README shows %s's default as %q, the settings table %q", name, defaults[i], s.Default)
			}
		}
	}
	for _, s := range settingsTable {
		if !seen[s.Name] {
			t.Errorf("README's configuration table does not list %s", s.Name)
		}
	}
}

// The user API's settings, as userapi.ConfigFromEnv read them before cmd
// took over.
func TestUserAPISettings(t *testing.T) {
	c, err := parseConfig(userapiSettings, map[string]string{
		"HTTP_ADDR":           ":9090",
		"CODE_TTL":            " 10m ",
		"CODE_MAX_ATTEMPTS":   "3",
		"RESEND_INTERVAL":     "30s",
		"RATE_LIMIT_PER_IP":   "120",
		"RATE_LIMIT_BURST":    "5",
		"PUBLISH_TIMEOUT":     "2s",
		"TRUST_PROXY_HEADERS": "false",
		"PUBLIC_URL":          "https://accounts.example.com/",
		// Issue 14.
		"TRUSTED_PROXIES":         " 10.0.0.0/8, 192.0.2.7",
		"CODE_MAX_SENDS_PER_DAY":  "3",
		"CODE_MAX_SENDS_PER_HOUR": "1000",
		"PENDING_MAX":             "5000",
	})
	if err != nil {
		t.Fatal(err)
	}
	// The pages are on unless PAGES=false.
	want := userapi.Config{HTTPAddr: ":9090", CodeTTL: 10 * time.Minute, CodeMaxAttempts: 3, ResendInterval: 30 * time.Second,
		RateLimitPerIP: 120, RateLimitBurst: 5, PublishTimeout: 2 * time.Second,
		Pages: true, PublicURL: "https://accounts.example.com",
		TrustedProxies:     []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32")},
		CodeMaxSendsPerDay: 3, CodeMaxSendsPerHour: 1000, PendingMax: 5000}
	if !reflect.DeepEqual(c.UserAPI, want) {
		t.Errorf("got %+v, want %+v", c.UserAPI, want)
	}
	if c, err := parseConfig(userapiSettings, map[string]string{"PAGES": "false"}); err != nil || c.UserAPI.Pages {
		t.Errorf("PAGES=false: pages %v, %v", c.UserAPI.Pages, err)
	}
	if _, err := parseConfig(userapiSettings, nil); err == nil || !strings.Contains(err.Error(), "PUBLIC_URL") {
		t.Errorf("no PUBLIC_URL with the pages on: %v, want an error naming PUBLIC_URL", err)
	}
	if c, err := parseConfig(concat(devSettings, userapiSettings), map[string]string{"HTTP_ADDR": "0.0.0.0:8081"}); err != nil ||
		c.UserAPI.PublicURL != "http://127.0.0.1:8081" || c.Notifier.PublicURL != c.UserAPI.PublicURL || c.Brand.PublicURL != c.UserAPI.PublicURL {
		t.Errorf("dev's PUBLIC_URL: %q %q %q, %v", c.UserAPI.PublicURL, c.Notifier.PublicURL, c.Brand.PublicURL, err)
	}

	c, err = parseConfig(userapiSettings, map[string]string{"RATE_LIMIT_PER_IP": "0", "PAGES": "false"})
	if err != nil {
		t.Fatal(err)
	}
	if d := c.UserAPI.WithDefaults(); d.RateLimitPerIP != userapi.RateLimitOff || d.Validate() != nil {
		t.Errorf("RATE_LIMIT_PER_IP=0 gave %d (%v), want RateLimitOff", d.RateLimitPerIP, d.Validate())
	}

	for k, v := range map[string]string{
		"CODE_TTL":                `CODE_TTL="abc": want a duration such as 15m`,
		"CODE_MAX_ATTEMPTS":       `CODE_MAX_ATTEMPTS="abc": want a whole number ≥ 1`,
		"RESEND_INTERVAL":         `RESEND_INTERVAL="abc": want a duration such as 60s`,
		"RATE_LIMIT_PER_IP":       `RATE_LIMIT_PER_IP="abc": want requests per minute`,
		"RATE_LIMIT_BURST":        `RATE_LIMIT_BURST="abc": want a whole number ≥ 1`,
		"PUBLISH_TIMEOUT":         `PUBLISH_TIMEOUT="abc": want a duration such as 10s`,
		"TRUST_PROXY_HEADERS":     `TRUST_PROXY_HEADERS="abc": want true or false`,
		"CODE_MAX_SENDS_PER_DAY":  `CODE_MAX_SENDS_PER_DAY="abc": want a whole number ≥ 1`,
		"CODE_MAX_SENDS_PER_HOUR": `CODE_MAX_SENDS_PER_HOUR="abc": want a whole number ≥ 0`,
		"PENDING_MAX":             `PENDING_MAX="abc": want a whole number ≥ 1`,
		"TRUSTED_PROXIES":         `TRUSTED_PROXIES entry 1 ("abc"): want a CIDR`,
	} {
		_, err := parseConfig(userapiSettings, map[string]string{k: "abc", "PAGES": "false"})
		if err == nil || !strings.Contains(err.Error(), v) {
			t.Errorf("%s=abc: error %v, want it to contain %q", k, err, v)
		}
	}
	// Every bad variable is reported, not only the first.
	_, err = parseConfig(userapiSettings, map[string]string{"CODE_TTL": "-1m", "CODE_MAX_ATTEMPTS": "0", "RATE_LIMIT_PER_IP": "-5"})
	for _, name := range []string{"CODE_TTL", "CODE_MAX_ATTEMPTS", "RATE_LIMIT_PER_IP"} {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("error %v does not name %s", err, name)
		}
	}
	// Values that parse but cannot work are refused by validate.
	_, err = parseConfig(userapiSettings, map[string]string{"CODE_TTL": "48h", "PAGES": "false"})
	if err == nil || !strings.Contains(err.Error(), "CODE_TTL") {
		t.Errorf("CODE_TTL=48h: %v", err)
	}
	// Issue 14: the old switch is refused, naming what replaces it.
	_, err = parseConfig(userapiSettings, map[string]string{"TRUST_PROXY_HEADERS": "true"})
	if err == nil || !strings.Contains(err.Error(), "TRUST_PROXY_HEADERS") || !strings.Contains(err.Error(), "TRUSTED_PROXIES") {
		t.Errorf("TRUST_PROXY_HEADERS=true: %v, want a refusal naming TRUSTED_PROXIES", err)
	}
}

// The Kafka settings and the librdkafka pass-through, as
// kafka.ConfigFromEnv read them before cmd took over.
func TestKafkaSettings(t *testing.T) {
	cfg, err := parseConfig(kafkaSettings, environMap([]string{
		"PATH=/usr/bin",
		"KAFKA_BROKERS= kafka-1:9093,kafka-2:9093 ",
		"KAFKA_SECURITY_PROTOCOL=SASL_SSL",
		"KAFKA_SASL_MECHANISMS=SCRAM-SHA-512",
		"KAFKA_SASL_USERNAME=countersign",
		"KAFKA_SASL_PASSWORD=p=ss:w0rd,with=equals",
		"KAFKA_SSL_CA_LOCATION=/etc/ssl/kafka-ca.pem",
		"KAFKA_LINGER_MS=5",
		"KAFKA_TOPIC_PARTITIONS=6",
		"KAFKA_TOPIC_REPLICATION_FACTOR=3",
		"KAFKA_TEST_BROKERS=127.0.0.1:1",
		"KAFKA_CLIENT_ID=",
		"KAFKA_NO_EQUALS_SIGN",
		"NOT_KAFKA_BROKERS=ignored:1",
	}))
	if err != nil {
		t.Fatal(err)
	}
	k := cfg.Kafka
	if k.Brokers != "kafka-1:9093,kafka-2:9093" {
		t.Errorf("Brokers = %q", k.Brokers)
	}
	if k.Partitions != 6 || k.ReplicationFactor != 3 {
		t.Errorf("Partitions, ReplicationFactor = %d, %d; want 6, 3", k.Partitions, k.ReplicationFactor)
	}
	want := map[string]string{
		"security.protocol": "SASL_SSL",
		"sasl.mechanisms":   "SCRAM-SHA-512",
		"sasl.username":     "countersign",
		"sasl.password":     "p=ss:w0rd,with=equals",
		"ssl.ca.location":   "/etc/ssl/kafka-ca.pem",
		"linger.ms":         "5",
	}
	if !maps.Equal(k.Client, want) {
		t.Errorf("Client =\n%v\nwant\n%v", k.Client, want)
	}

	// Nothing set: nothing parsed, and validate asks for the brokers.
	c, err := parseSettings(kafkaSettings, nil)
	if err != nil || c.Kafka.Brokers != "" || c.Kafka.Partitions != 0 || len(c.Kafka.Client) != 0 {
		t.Errorf("empty environment gave %+v, %v", c.Kafka, err)
	}
	if _, err := parseConfig(kafkaSettings, nil); err == nil || !strings.Contains(err.Error(), "missing brokers") || !strings.Contains(err.Error(), "KAFKA_BROKERS") {
		t.Errorf("no KAFKA_BROKERS: %v, want a missing-brokers error naming it", err)
	}
	// The pass-through belongs to commands that reach Kafka.
	if c, _ := parseSettings(logSettings, map[string]string{"KAFKA_LINGER_MS": "5"}); len(c.Kafka.Client) != 0 {
		t.Errorf("keygen-like command passed %v through", c.Kafka.Client)
	}

	for _, v := range []string{"1", " 12 "} {
		if _, err := parseSettings(kafkaSettings, map[string]string{"KAFKA_TOPIC_PARTITIONS": v}); err != nil {
			t.Errorf("KAFKA_TOPIC_PARTITIONS=%q: %v", v, err)
		}
	}
	for _, v := range []string{"three", "0", "-1", "2.5", "1e3", "9999999999999999999999"} {
		_, err := parseConfig(kafkaSettings, map[string]string{"KAFKA_BROKERS": "b:9092", "KAFKA_TOPIC_PARTITIONS": v})
		if err == nil {
			t.Errorf("KAFKA_TOPIC_PARTITIONS=%q accepted", v)
			continue
		}
		if !strings.Contains(err.Error(), "KAFKA_TOPIC_PARTITIONS") {
			t.Errorf("KAFKA_TOPIC_PARTITIONS=%q: error %q does not name the variable", v, err)
		}
	}
	c, err = parseSettings(kafkaSettings, map[string]string{"KAFKA_TOPIC_REPLICATION_FACTOR": "-1"})
	if err != nil || c.Kafka.ReplicationFactor != -1 {
		t.Errorf("KAFKA_TOPIC_REPLICATION_FACTOR=-1: %d, %v", c.Kafka.ReplicationFactor, err)
	}
	for _, v := range []string{"0", "-2", "x"} {
		_, err := parseSettings(kafkaSettings, map[string]string{"KAFKA_TOPIC_REPLICATION_FACTOR": v})
		if err == nil || !strings.Contains(err.Error(), "KAFKA_TOPIC_REPLICATION_FACTOR") {
			t.Errorf("KAFKA_TOPIC_REPLICATION_FACTOR=%q: %v", v, err)
		}
	}

	// The pass-through cannot weaken the delivery guarantees: refused at
	// start, naming the variable.
	for _, env := range []string{
		"KAFKA_ENABLE_IDEMPOTENCE=false",
		"KAFKA_ACKS=1",
		"KAFKA_REQUEST_REQUIRED_ACKS=0",
		"KAFKA_ENABLE_AUTO_COMMIT=true",
		"KAFKA_ENABLE_AUTO_OFFSET_STORE=true",
		"KAFKA_GROUP_ID=someone-else",
		"KAFKA_BOOTSTRAP_SERVERS=elsewhere:9092",
	} {
		name, _, _ := strings.Cut(env, "=")
		_, err := parseConfig(kafkaSettings, environMap([]string{"KAFKA_BROKERS=b:9092", env}))
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: error %v, want one naming the variable", env, err)
		}
	}
}

// The worker and mail settings, as cmd's env readers read them.
func TestWorkerAndMailSettings(t *testing.T) {
	c, err := parseConfig(concat(notifierSettings, recommenderSettings, mailSettings), map[string]string{
		"NOTIFIER_GROUP_ID": " n-group ", "NOTIFIER_COMMIT_EVERY": "7", "NOTIFIER_MAX_ATTEMPTS": "3",
		"NOTIFIER_RETRY_BACKOFF": "1s", "NOTIFIER_RETRY_MAX_BACKOFF": "2s", "NOTIFIER_DEDUPE_WINDOW": "1h",
		"RECOMMENDER_GROUP_ID": "r-group", "RECOMMENDER_CATALOG": "/etc/catalog.json",
		"SMTP_HOST": "mail.example.com", "SMTP_PORT": "2525", "SMTP_USERNAME": "u", "SMTP_PASSWORD": " pass ",
		"SMTP_TLS": "Opportunistic", "SMTP_TIMEOUT": "5s", "MAIL_FROM": "X <x@example.com>", "MAIL_OUTBOX_DIR": "/tmp/out",
	})
	if err != nil {
		t.Fatal(err)
	}
	wantN := kafka.WorkerConfig{GroupID: "n-group", CommitEvery: 7, MaxAttempts: 3, InitialBackoff: time.Second, MaxBackoff: 2 * time.Second, DedupeWindow: time.Hour}
	if c.Notifier.WorkerConfig != wantN {
		t.Errorf("notifier %+v, want %+v", c.Notifier.WorkerConfig, wantN)
	}
	if c.Recommender.GroupID != "r-group" || c.Recommender.CatalogFile != "/etc/catalog.json" {
		t.Errorf("recommender %+v", c.Recommender)
	}
	wantM := mail.SMTPConfig{Host: "mail.example.com", Port: 2525, Username: "u", Password: " pass ", TLS: "opportunistic", Timeout: 5 * time.Second, From: "X <x@example.com>"}
	if c.SMTP != wantM || c.OutboxDir != "/tmp/out" {
		t.Errorf("mail %+v %q, want %+v", c.SMTP, c.OutboxDir, wantM)
	}
	for env, want := range map[string]string{
		"NOTIFIER_COMMIT_EVERY=0":    `NOTIFIER_COMMIT_EVERY="0": want a whole number ≥ 1`,
		"RECOMMENDER_MAX_ATTEMPTS=x": `RECOMMENDER_MAX_ATTEMPTS="x": want a whole number ≥ 1`,
		"NOTIFIER_RETRY_BACKOFF=-1s": `NOTIFIER_RETRY_BACKOFF="-1s": want a duration such as 500ms`,
		"NOTIFIER_GROUP_ID=a b":      `NOTIFIER_GROUP_ID="a b": want 1 to 245 letters`,
		"RECOMMENDER_GROUP_ID=a/b":   `RECOMMENDER_GROUP_ID="a/b": want 1 to 245 letters`,
		"SMTP_PORT=70000":            `SMTP_PORT=70000: want a port from 1 to 65535`,
		"SMTP_TLS=sometimes":         `SMTP_TLS must be one of mandatory, opportunistic, none`,
		"SMTP_TIMEOUT=soon":          `SMTP_TIMEOUT="soon": want a duration such as 15s`,
	} {
		_, err := parseConfig(concat(notifierSettings, recommenderSettings, mailSettings), environMap([]string{env}))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want it to contain %q", env, err, want)
		}
	}
}

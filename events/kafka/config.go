package kafka

import (
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"go.opentelemetry.io/otel/trace"
)

// Config is how every Countersign process reaches Kafka.
type Config struct {
	// Brokers is the bootstrap server list, comma-separated (KAFKA_BROKERS).
	// Required.
	Brokers string

	// Partitions is the partition count of topics created when missing
	// (KAFKA_TOPIC_PARTITIONS, default 3). It bounds how many consumers of
	// one group can share the work; existing topics are never changed.
	Partitions int

	// ReplicationFactor of topics created when missing
	// (KAFKA_TOPIC_REPLICATION_FACTOR, default -1: the broker's
	// default.replication.factor).
	ReplicationFactor int

	// Client holds librdkafka properties passed through unchanged, for
	// security and tuning: KAFKA_SECURITY_PROTOCOL becomes security.protocol,
	// KAFKA_SASL_MECHANISMS sasl.mechanisms, KAFKA_SASL_USERNAME
	// sasl.username, KAFKA_SASL_PASSWORD sasl.password, KAFKA_SSL_CA_LOCATION
	// ssl.ca.location, and in general KAFKA_A_B_C becomes a.b.c. They are
	// applied after Countersign's own settings, so an operator can override a
	// tuning default (never the delivery guarantees: see guardedProperties).
	Client map[string]string

	// Logger receives librdkafka's own log lines and client errors.
	// Default slog.Default().
	Logger *slog.Logger

	// TracerProvider makes the spans of publishing ("send <topic>") and of
	// handling records ("process <topic>"). Nil means OpenTelemetry's global
	// provider, which does nothing unless the process installed one.
	TracerProvider trace.TracerProvider
}

// Names of the settings that are Countersign's own rather than librdkafka
// properties, used in errors. cmd reads them, and passes every other
// KAFKA_A_B through as the property a.b (see Client).
const (
	EnvBrokers           = "KAFKA_BROKERS"
	EnvPartitions        = "KAFKA_TOPIC_PARTITIONS"
	EnvReplicationFactor = "KAFKA_TOPIC_REPLICATION_FACTOR"
)

// guardedProperties carry the delivery guarantees the rest of the platform
// relies on; the pass-through may not change them.
var guardedProperties = map[string]bool{
	"enable.idempotence": true, "acks": true, "request.required.acks": true,
	"enable.auto.commit": true, "enable.auto.offset.store": true,
	"group.id": true, "bootstrap.servers": true,
	"go.logs.channel.enable": true, "go.delivery.reports": true,
}

// secretSuffixes mark properties whose values are never logged.
var secretSuffixes = []string{"password", "secret", ".key.pem", "sasl.oauthbearer.config"}

// Defaults applied to zero-valued fields.
const (
	DefaultPartitions        = 3
	DefaultReplicationFactor = -1
)

// WithDefaults returns c with its zero-valued fields set to their defaults,
// as every constructor of this package sets them.
func (c Config) WithDefaults() Config {
	c.setDefaults()
	return c
}

func (c *Config) setDefaults() {
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = DefaultReplicationFactor
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	if strings.TrimSpace(c.Brokers) == "" {
		return errors.New("missing brokers: set " + EnvBrokers + " (host:port,...)")
	}
	if c.Partitions < 0 {
		return fmt.Errorf("%s: want ≥ 1", EnvPartitions)
	}
	for k := range c.Client {
		if guardedProperties[k] {
			return fmt.Errorf("KAFKA_%s: %q is set by Countersign and cannot be overridden", strings.ToUpper(strings.ReplaceAll(k, ".", "_")), k)
		}
	}
	return nil
}

// LogValue shows the configuration with secrets redacted.
func (c Config) LogValue() slog.Value {
	keys := make([]string, 0, len(c.Client))
	for k := range c.Client {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	attrs := []slog.Attr{slog.String("brokers", c.Brokers)}
	for _, k := range keys {
		v := c.Client[k]
		if isSecret(k) {
			v = "[redacted]"
		}
		attrs = append(attrs, slog.String(k, v))
	}
	return slog.GroupValue(attrs...)
}

func isSecret(property string) bool {
	for _, s := range secretSuffixes {
		if strings.HasSuffix(property, s) {
			return true
		}
	}
	return false
}

// configMap builds a librdkafka configuration: base settings, then the
// operator's pass-through, then the guarded settings.
func (c Config) configMap(base, guarded ckafka.ConfigMap) ckafka.ConfigMap {
	m := ckafka.ConfigMap{
		"bootstrap.servers":      c.Brokers,
		"go.logs.channel.enable": true,
		// librdkafka logs connection teardown of idle brokers at error level;
		// it is routine, not an error.
		"log.connection.close": false,
		// librdkafka doubles the wait between reconnection attempts up to
		// this (its default is 10 s): a broker that comes back is used
		// within a second, not up to ten, by every client (issue 17: the
		// first 202 came 16 s after a broker restart, and the notifier's
		// consumer, still on the default, mailed 10.8 s after it).
		"reconnect.backoff.max.ms": 1000,
	}
	for k, v := range base {
		m[k] = v
	}
	for k, v := range c.Client {
		m[k] = v
	}
	for k, v := range guarded {
		m[k] = v
	}
	return m
}

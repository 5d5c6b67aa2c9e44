package kafka_test

import (
	"bytes"
	"log/slog"
	"maps"
	"strings"
	"testing"

	"github.com/countersign/countersign/events/kafka"
)

func TestConfigFromEnvMapsVariables(t *testing.T) {
	cfg, err := kafka.ConfigFromEnv([]string{
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
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Brokers != "kafka-1:9093,kafka-2:9093" {
		t.Errorf("Brokers = %q", cfg.Brokers)
	}
	if cfg.Partitions != 6 || cfg.ReplicationFactor != 3 {
		t.Errorf("Partitions, ReplicationFactor = %d, %d; want 6, 3", cfg.Partitions, cfg.ReplicationFactor)
	}
	want := map[string]string{
		"security.protocol": "SASL_SSL",
		"sasl.mechanisms":   "SCRAM-SHA-512",
		"sasl.username":     "countersign",
		"sasl.password":     "p=ss:w0rd,with=equals",
		"ssl.ca.location":   "/etc/ssl/kafka-ca.pem",
		"linger.ms":         "5",
	}
	if !maps.Equal(cfg.Client, want) {
		t.Errorf("Client =\n%v\nwant\n%v", cfg.Client, want)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestConfigFromEnvEmpty(t *testing.T) {
	cfg, err := kafka.ConfigFromEnv(nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Brokers != "" || cfg.Partitions != 0 || len(cfg.Client) != 0 {
		t.Errorf("empty environment gave %+v", cfg)
	}
}

func TestConfigFromEnvPartitions(t *testing.T) {
	for _, v := range []string{"1", " 12 "} {
		if _, err := kafka.ConfigFromEnv([]string{"KAFKA_TOPIC_PARTITIONS=" + v}); err != nil {
			t.Errorf("KAFKA_TOPIC_PARTITIONS=%q: %v", v, err)
		}
	}
	for _, v := range []string{"three", "0", "-1", "2.5", "1e3", "9999999999999999999999"} {
		_, err := kafka.ConfigFromEnv([]string{"KAFKA_BROKERS=b:9092", "KAFKA_TOPIC_PARTITIONS=" + v})
		if err == nil {
			t.Errorf("KAFKA_TOPIC_PARTITIONS=%q accepted", v)
			continue
		}
		if !strings.Contains(err.Error(), "KAFKA_TOPIC_PARTITIONS") {
			t.Errorf("KAFKA_TOPIC_PARTITIONS=%q: error %q does not name the variable", v, err)
		}
	}
	cfg, err := kafka.ConfigFromEnv([]string{"KAFKA_TOPIC_REPLICATION_FACTOR=-1"})
	if err != nil || cfg.ReplicationFactor != -1 {
		t.Errorf("KAFKA_TOPIC_REPLICATION_FACTOR=-1: %d, %v", cfg.ReplicationFactor, err)
	}
	for _, v := range []string{"0", "-2", "x"} {
		_, err := kafka.ConfigFromEnv([]string{"KAFKA_TOPIC_REPLICATION_FACTOR=" + v})
		if err == nil || !strings.Contains(err.Error(), "KAFKA_TOPIC_REPLICATION_FACTOR") {
			t.Errorf("KAFKA_TOPIC_REPLICATION_FACTOR=%q: %v", v, err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, brokers := range []string{"", "  "} {
		err := kafka.Config{Brokers: brokers}.Validate()
		if err == nil || !strings.Contains(err.Error(), "missing brokers") || !strings.Contains(err.Error(), "KAFKA_BROKERS") {
			t.Errorf("brokers %q: Validate = %v, want a missing-brokers error naming KAFKA_BROKERS", brokers, err)
		}
	}
	if err := (kafka.Config{Brokers: "b:9092", Partitions: -1}).Validate(); err == nil {
		t.Error("negative partitions accepted")
	}

	// The pass-through cannot weaken the delivery guarantees.
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
		cfg, err := kafka.ConfigFromEnv([]string{"KAFKA_BROKERS=b:9092", env})
		if err != nil {
			t.Fatal(err)
		}
		err = cfg.Validate()
		if err == nil {
			t.Errorf("%s accepted by Validate", env)
			continue
		}
		if !strings.Contains(err.Error(), name) {
			t.Errorf("%s: error %q does not name the variable", env, err)
		}
		// And a producer is refused with it, not built with weaker settings.
		if p, err := kafka.NewProducer(cfg); err == nil {
			t.Errorf("%s: NewProducer succeeded", env)
			_ = p.Close(t.Context())
		}
	}
}

func TestConfigLogValueRedactsSecrets(t *testing.T) {
	const (
		password    = "hunter2-kafka-sasl-secret"
		keyPassword = "ssl-key-pass-0xC0FFEE"
		oauthSecret = "oauth-client-secret-42"
		pem         = "-----BEGIN PRIVATE KEY-----MIIEvQ"
	)
	cfg, err := kafka.ConfigFromEnv([]string{
		"KAFKA_BROKERS=kafka-1:9093",
		"KAFKA_SASL_USERNAME=countersign",
		"KAFKA_SASL_PASSWORD=" + password,
		"KAFKA_SSL_KEY_PASSWORD=" + keyPassword,
		"KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET=" + oauthSecret,
		"KAFKA_SSL_KEY_PEM=" + pem,
		"KAFKA_SECURITY_PROTOCOL=SASL_SSL",
	})
	if err != nil {
		t.Fatal(err)
	}
	var text, js bytes.Buffer
	slog.New(slog.NewTextHandler(&text, nil)).Info("kafka config", "kafka", cfg)
	slog.New(slog.NewJSONHandler(&js, nil)).Info("kafka config", "kafka", cfg)
	for name, out := range map[string]string{"text": text.String(), "json": js.String()} {
		for _, secret := range []string{password, keyPassword, oauthSecret, pem, "hunter2"} {
			if strings.Contains(out, secret) {
				t.Errorf("%s log output contains a secret: %s", name, out)
			}
		}
		for _, shown := range []string{"kafka-1:9093", "countersign", "SASL_SSL", "[redacted]"} {
			if !strings.Contains(out, shown) {
				t.Errorf("%s log output lacks %q: %s", name, shown, out)
			}
		}
	}
	if !strings.Contains(text.String(), "kafka.sasl.password=[redacted]") {
		t.Errorf("text output does not show sasl.password as redacted: %s", text.String())
	}
	// LogValue does not redact by changing the configuration itself.
	if cfg.Client["sasl.password"] != password {
		t.Error("LogValue modified the configuration")
	}
}

package kafka_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/countersign/countersign/events/kafka"
)

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
	// (cmd maps KAFKA_A_B to a.b; its tests check the variables.)
	for _, env := range []string{
		"KAFKA_ENABLE_IDEMPOTENCE=false",
		"KAFKA_ACKS=1",
		"KAFKA_REQUEST_REQUIRED_ACKS=0",
		"KAFKA_ENABLE_AUTO_COMMIT=true",
		"KAFKA_ENABLE_AUTO_OFFSET_STORE=true",
		"KAFKA_GROUP_ID=someone-else",
		"KAFKA_BOOTSTRAP_SERVERS=elsewhere:9092",
	} {
		name, value, _ := strings.Cut(env, "=")
		property := strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(name, "KAFKA_")), "_", ".")
		cfg := kafka.Config{Brokers: "b:9092", Client: map[string]string{property: value}}
		err := cfg.Validate()
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
	cfg := kafka.Config{Brokers: "kafka-1:9093", Client: map[string]string{
		"sasl.username":                  "countersign",
		"sasl.password":                  password,
		"ssl.key.password":               keyPassword,
		"sasl.oauthbearer.client.secret": oauthSecret,
		"ssl.key.pem":                    pem,
		"security.protocol":              "SASL_SSL",
	}}
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

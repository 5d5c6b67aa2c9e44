package userapi

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestConfigDefaults(t *testing.T) {
	c, err := ConfigFromEnv(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	c.setDefaults()
	want := Config{
		HTTPAddr:        "127.0.0.1:8080",
		CodeTTL:         15 * time.Minute,
		CodeMaxAttempts: 5,
		ResendInterval:  60 * time.Second,
		RateLimitPerIP:  60,
		RateLimitBurst:  20,
		PublishTimeout:  10 * time.Second,

		CodeMaxSendsPerDay: 10,
		PendingMax:         1_000_000,
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("defaults %+v, want %+v", c, want)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
}

func TestConfigFromEnv(t *testing.T) {
	c, err := ConfigFromEnv(env(map[string]string{
		"HTTP_ADDR":               ":9090",
		"CODE_TTL":                " 10m ",
		"CODE_MAX_ATTEMPTS":       "3",
		"RESEND_INTERVAL":         "30s",
		"RATE_LIMIT_PER_IP":       "120",
		"RATE_LIMIT_BURST":        "5",
		"PUBLISH_TIMEOUT":         "2s",
		"TRUST_PROXY_HEADERS":     "true",
		"CODE_MAX_SENDS_PER_DAY":  "3",
		"CODE_MAX_SENDS_PER_HOUR": "1000",
		"TRUSTED_PROXIES":         " 10.0.0.0/8, 192.0.2.7 ,fd00::/8",
		"PENDING_MAX":             "5000",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{":9090", 10 * time.Minute, 3, 30 * time.Second, 120, 5, 2 * time.Second, true,
		3, 1000, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"), netip.MustParsePrefix("fd00::/8")}, 5000}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got %+v, want %+v", c, want)
	}

	c, err = ConfigFromEnv(env(map[string]string{"RATE_LIMIT_PER_IP": "0"}))
	if err != nil {
		t.Fatal(err)
	}
	c.setDefaults()
	if c.RateLimitPerIP != RateLimitOff || c.Validate() != nil {
		t.Errorf("RATE_LIMIT_PER_IP=0 gave %d (%v), want RateLimitOff", c.RateLimitPerIP, c.Validate())
	}
}

func TestConfigFromEnvErrors(t *testing.T) {
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
		_, err := ConfigFromEnv(env(map[string]string{k: "abc"}))
		if err == nil || !strings.Contains(err.Error(), v) {
			t.Errorf("%s=abc: error %v, want it to contain %q", k, err, v)
		}
	}
	// Every bad variable is reported, not only the first.
	_, err := ConfigFromEnv(env(map[string]string{"CODE_TTL": "-1m", "CODE_MAX_ATTEMPTS": "0", "RATE_LIMIT_PER_IP": "-5"}))
	for _, name := range []string{"CODE_TTL", "CODE_MAX_ATTEMPTS", "RATE_LIMIT_PER_IP"} {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("error %v does not name %s", err, name)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		change func(*Config)
		want   string
	}{
		{func(c *Config) { c.HTTPAddr = "localhost" }, "HTTP_ADDR"},
		{func(c *Config) { c.CodeTTL = 500 * time.Millisecond }, "CODE_TTL"},
		{func(c *Config) { c.CodeTTL = 25 * time.Hour }, "CODE_TTL"},
		{func(c *Config) { c.CodeMaxAttempts = 101 }, "CODE_MAX_ATTEMPTS"},
		{func(c *Config) { c.CodeMaxAttempts = -1 }, "CODE_MAX_ATTEMPTS"},
		{func(c *Config) { c.ResendInterval = time.Millisecond }, "RESEND_INTERVAL"},
		{func(c *Config) { c.RateLimitPerIP = -7 }, "RATE_LIMIT_PER_IP"},
		{func(c *Config) { c.RateLimitBurst = -1 }, "RATE_LIMIT_BURST"},
		{func(c *Config) { c.PublishTimeout = time.Millisecond }, "PUBLISH_TIMEOUT"},
		{func(c *Config) { c.CodeMaxSendsPerDay = -1 }, "CODE_MAX_SENDS_PER_DAY"},
		{func(c *Config) { c.CodeMaxSendsPerHour = -1 }, "CODE_MAX_SENDS_PER_HOUR"},
		{func(c *Config) { c.PendingMax = -1 }, "PENDING_MAX"},
		{func(c *Config) { c.TrustProxyHeaders = true }, "TRUST_PROXY_HEADERS"},
	} {
		var c Config
		c.setDefaults()
		tc.change(&c)
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), tc.want+"=") {
			t.Errorf("%+v: error %v, want one naming %s", c, err, tc.want)
		}
	}
}

// TestTrustProxyHeadersIsRefused: the old switch let any client pick its
// own IP; it is refused with a message that says what to use instead.
func TestTrustProxyHeadersIsRefused(t *testing.T) {
	c, err := ConfigFromEnv(env(map[string]string{"TRUST_PROXY_HEADERS": "true"}))
	if err != nil {
		t.Fatal(err)
	}
	err = c.WithDefaults().Validate()
	if err == nil || !strings.Contains(err.Error(), "TRUSTED_PROXIES") {
		t.Fatalf("TRUST_PROXY_HEADERS=true: %v, want a refusal naming TRUSTED_PROXIES", err)
	}
	c, _ = ConfigFromEnv(env(map[string]string{"TRUST_PROXY_HEADERS": "false"}))
	if err := c.WithDefaults().Validate(); err != nil {
		t.Errorf("TRUST_PROXY_HEADERS=false: %v", err)
	}
}

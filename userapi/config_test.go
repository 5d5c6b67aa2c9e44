package userapi

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestConfigDefaults(t *testing.T) {
	var c Config
	c.setDefaults()
	want := Config{
		HTTPAddr:        "127.0.0.1:8080",
		CodeTTL:         15 * time.Minute,
		CodeMaxAttempts: 5,
		ResendInterval:  60 * time.Second,
		RateLimitPerIP:  60,
		RateLimitBurst:  20,
		PublishTimeout:  10 * time.Second,

		CodeDigits:              6,
		VerifyMaxFailuresPerDay: 10,
		CodeMaxSendsPerDay:      10,
		PendingMax:              1_000_000,
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("defaults %+v, want %+v", c, want)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
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
		{func(c *Config) { c.CodeDigits = 5 }, "CODE_DIGITS"},
		{func(c *Config) { c.CodeDigits = 11 }, "CODE_DIGITS"},
		{func(c *Config) { c.VerifyMaxFailuresPerDay = -1 }, "VERIFY_MAX_FAILURES_PER_DAY"},
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
	c := Config{TrustProxyHeaders: true}.WithDefaults()
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "TRUSTED_PROXIES") {
		t.Fatalf("TRUST_PROXY_HEADERS=true: %v, want a refusal naming TRUSTED_PROXIES", err)
	}
}

func TestParseTrustedProxies(t *testing.T) {
	got, err := ParseTrustedProxies(" 10.0.0.0/8, 192.0.2.7 ,,fd00::/8, 10.1.2.3/16")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"),
		netip.MustParsePrefix("fd00::/8"), netip.MustParsePrefix("10.1.0.0/16")}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for _, bad := range []string{"abc", "10.0.0.0/33", "10.0.0.0/8,nope"} {
		if _, err := ParseTrustedProxies(bad); err == nil || !strings.Contains(err.Error(), "TRUSTED_PROXIES") {
			t.Errorf("%q: error %v, want one naming TRUSTED_PROXIES", bad, err)
		}
	}
}

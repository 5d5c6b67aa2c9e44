package userapi

import (
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
	}
	if c != want {
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
	} {
		var c Config
		c.setDefaults()
		tc.change(&c)
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), tc.want+"=") {
			t.Errorf("%+v: error %v, want one naming %s", c, err, tc.want)
		}
	}
}

package userapi

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// Environment variables of the settings, named in errors (cmd/countersign
// reads them). The names are a contract with operators and never change.
const (
	EnvHTTPAddr          = "HTTP_ADDR"
	EnvCodeTTL           = "CODE_TTL"
	EnvCodeMaxAttempts   = "CODE_MAX_ATTEMPTS"
	EnvResendInterval    = "RESEND_INTERVAL"
	EnvRateLimitPerIP    = "RATE_LIMIT_PER_IP"
	EnvRateLimitBurst    = "RATE_LIMIT_BURST"
	EnvPublishTimeout    = "PUBLISH_TIMEOUT"
	EnvTrustProxyHeaders = "TRUST_PROXY_HEADERS"
	EnvPages             = "PAGES"
	EnvPublicURL         = "PUBLIC_URL"

	EnvCodeDigits              = "CODE_DIGITS"
	EnvVerifyMaxFailuresPerDay = "VERIFY_MAX_FAILURES_PER_DAY"

	// Issue 14.
	EnvCodeMaxSendsPerDay  = "CODE_MAX_SENDS_PER_DAY"
	EnvCodeMaxSendsPerHour = "CODE_MAX_SENDS_PER_HOUR"
	EnvTrustedProxies      = "TRUSTED_PROXIES"
	EnvPendingMax          = "PENDING_MAX"
)

// Defaults applied by setDefaults to zero-valued fields.
const (
	DefaultHTTPAddr        = "127.0.0.1:8080"
	DefaultCodeTTL         = 15 * time.Minute
	DefaultCodeMaxAttempts = 5
	DefaultResendInterval  = 60 * time.Second
	DefaultRateLimitPerIP  = 60
	DefaultRateLimitBurst  = 20
	DefaultPublishTimeout  = 10 * time.Second

	DefaultVerifyMaxFailuresPerDay = 10
	DefaultCodeMaxSendsPerDay      = 10
	DefaultPendingMax              = 1_000_000
)

// RateLimitOff as Config.RateLimitPerIP switches the per-IP limit off
// (RATE_LIMIT_PER_IP=0). A zero RateLimitPerIP means "use the default", so
// the off switch needs its own value.
const RateLimitOff = -1

// Config is the user API's configuration. The zero value of every field means
// its default; cmd/countersign fills it from the environment.
type Config struct {
	// HTTPAddr is the listen address (HTTP_ADDR, default 127.0.0.1:8080).
	// Loopback by default: exposing the API is a deliberate act, usually
	// behind a reverse proxy. Port 0 picks a free port (see Server.Addr).
	HTTPAddr string

	// CodeTTL is how long a code, and its pending registration, stays valid
	// (CODE_TTL, default 15m, from 1s to 24h). An unverified registration
	// vanishes with its code; the person registers again.
	CodeTTL time.Duration

	// CodeMaxAttempts is how many verification attempts one code allows
	// (CODE_MAX_ATTEMPTS, default 5, from 1 to 100). Every attempt counts,
	// the successful one included; once they are used up the registration is
	// void until it expires or a new code is requested, and every verify
	// answers 429. The limit is what makes a 6-digit code safe: an attacker
	// gets CodeMaxAttempts guesses in 10^6 per code sent.
	CodeMaxAttempts int

	// ResendInterval is the least time between two codes sent to one address
	// (RESEND_INTERVAL, default 60s, at least 1s). It limits both resend and
	// re-register, which bounds the mail an attacker can trigger to one
	// address and, with CodeMaxAttempts, the guesses per unit of time.
	ResendInterval time.Duration

	// RateLimitPerIP is the sustained rate of /api/ requests allowed per
	// client IP, in requests per minute (RATE_LIMIT_PER_IP, default 60;
	// 0 in the environment, RateLimitOff here, switches it off, as
	// benchmarks need). IPv6 clients are limited per /64, the block one
	// subscriber usually holds. Limiters live in process memory: with N
	// replicas behind a balancer a client gets up to N times the rate.
	RateLimitPerIP int

	// RateLimitBurst is how many requests a client IP may make at once
	// before the per-minute rate applies (RATE_LIMIT_BURST, default 20).
	RateLimitBurst int

	// PublishTimeout bounds the wait for the broker's acknowledgement of one
	// event (PUBLISH_TIMEOUT, default 10s, from 100ms to 5m). When it passes
	// the request fails with 503 and its store change is undone; the event
	// may still reach the broker later (see kafka.Producer.Publish).
	PublishTimeout time.Duration

	// TrustProxyHeaders makes the rate limiter take the client IP from the
	// last X-Forwarded-For entry, the one a reverse proxy appended
	// (TRUST_PROXY_HEADERS, default false). Turn it on only behind exactly
	// one proxy that sets the header: otherwise any client can pick its own
	// IP and escape the limit.
	//
	// Refused since issue 14: a single trusted hop cannot be told from a
	// client that sends the header itself. Set TrustedProxies instead.
	TrustProxyHeaders bool

	// Pages serves the hosted pages (pages.go) besides the JSON API, and
	// puts a verification link in every code's event (PAGES; off in a zero
	// Config, on by default in the binary). PublicURL is then required.
	Pages bool

	// PublicURL is where people reach the pages, an absolute http(s) URL
	// without query or fragment (PUBLIC_URL, e.g. https://accounts.example.com;
	// the binary's dev defaults it to http:// + HTTP_ADDR). Links in mails
	// are built on it, and cross-site form posts are judged against it.
	PublicURL string

	// CodeMaxSendsPerDay is how many code mails one mailbox may be sent in
	// 24 hours (CODE_MAX_SENDS_PER_DAY, default 10, at least 1). A mailbox
	// is the address without its +tag and, for gmail.com and
	// googlemail.com, without the dots of its local part (see Mailbox).
	// Past it, register and resend answer 202 and send nothing, counted in
	// countersign_code_mails_held_back_total{budget="mailbox"}.
	CodeMaxSendsPerDay int

	// CodeMaxSendsPerHour is how many code mails the whole platform may send
	// in an hour (CODE_MAX_SENDS_PER_HOUR, default 0: no limit). Past it,
	// as above, with budget="platform". It bounds what a botnet, which the
	// per-client limit does not stop, can make the platform send.
	CodeMaxSendsPerHour int

	// TrustedProxies are the reverse proxies whose X-Forwarded-For is read
	// (TRUSTED_PROXIES, comma-separated CIDRs or addresses; empty: the
	// header is ignored and the peer address is the client). Only when the
	// connection comes from one of them is the header read, from the right,
	// skipping addresses in these prefixes; the first other address is the
	// client. A client cannot pick its own IP: whatever it writes into the
	// header lies left of what the trusted proxies appended.
	TrustedProxies []netip.Prefix

	// PendingMax is how many pending registrations the store may hold
	// (PENDING_MAX, default 1,000,000). Past it register answers 503 with
	// Retry-After, counted in countersign_pending_refused_total, instead of
	// growing the store until it runs out of memory. With typical fields a
	// registration takes about 320 B in the memory store, at most about
	// 1.4 KB.
	PendingMax int

	// ASCIILocalPartOnly refuses, with 400 at register, addresses with a
	// non-ASCII character before the "@" (ALLOW_UTF8_LOCAL_PART=false; the
	// default, true, leaves this false). Such an address can receive mail
	// only through a relay that announces SMTPUTF8; through one that does
	// not, the notifier dead-letters its mail. Set it when the relay lacks
	// SMTPUTF8, so that people learn at once instead of waiting for a mail
	// that never comes. Domains are not concerned: a non-ASCII domain goes
	// through any relay in its A-label form.
	ASCIILocalPartOnly bool

	// CodeDigits is the length of a code in decimal digits (CODE_DIGITS,
	// default 6, from 6 to 10). Codes are uniform over all 10^CodeDigits
	// values, from crypto/rand; each digit more divides the guessing bound
	// of docs/security.md by ten.
	CodeDigits int

	// VerifyMaxFailuresPerDay is how many wrong codes are checked for one
	// address in any 24 hours, across all its codes
	// (VERIFY_MAX_FAILURES_PER_DAY, default 10, at least 1). Past it every
	// verify of the address is refused unchecked (400, or 429 when the
	// code's attempts are used up), and register and resend answer as usual
	// but issue and send nothing, until the oldest failure is 24 hours old.
	// With 6 digits and the default, an attacker verifies an address it
	// does not own with a chance of at most 0.37 % a year
	// (docs/security.md). The trade-off: anyone who knows an address can
	// spend its budget and stop code verification for it for a day.
	VerifyMaxFailuresPerDay int
}

// limits are the settings the store applies within its atomic steps.
func (c Config) limits() Limits {
	return Limits{ResendInterval: c.ResendInterval, MaxAttempts: c.CodeMaxAttempts, MaxFailuresPerDay: c.VerifyMaxFailuresPerDay}
}

func (c *Config) setDefaults() {
	if c.HTTPAddr == "" {
		c.HTTPAddr = DefaultHTTPAddr
	}
	if c.CodeTTL == 0 {
		c.CodeTTL = DefaultCodeTTL
	}
	if c.CodeMaxAttempts == 0 {
		c.CodeMaxAttempts = DefaultCodeMaxAttempts
	}
	if c.ResendInterval == 0 {
		c.ResendInterval = DefaultResendInterval
	}
	if c.RateLimitPerIP == 0 {
		c.RateLimitPerIP = DefaultRateLimitPerIP
	}
	if c.RateLimitBurst == 0 {
		c.RateLimitBurst = DefaultRateLimitBurst
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.CodeDigits == 0 {
		c.CodeDigits = DefaultCodeDigits
	}
	if c.VerifyMaxFailuresPerDay == 0 {
		c.VerifyMaxFailuresPerDay = DefaultVerifyMaxFailuresPerDay

	}
	if c.CodeMaxSendsPerDay == 0 {
		c.CodeMaxSendsPerDay = DefaultCodeMaxSendsPerDay
	}
	if c.PendingMax == 0 {
		c.PendingMax = DefaultPendingMax
	}
}

// WithDefaults returns c with its zero-valued fields set to their defaults,
// as NewServer sets them: what to Validate before NewServer is reached.
func (c Config) WithDefaults() Config {
	c.setDefaults()
	return c
}

// Validate reports the first setting that cannot work, naming its
// environment variable. Call it after defaults were applied (NewServer does).

func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		return fmt.Errorf("%s=%q: want host:port, such as 127.0.0.1:8080", EnvHTTPAddr, c.HTTPAddr)
	}
	if c.CodeTTL < time.Second || c.CodeTTL > 24*time.Hour {
		return fmt.Errorf("%s=%s: want a duration from 1s to 24h", EnvCodeTTL, c.CodeTTL)
	}
	if c.CodeMaxAttempts < 1 || c.CodeMaxAttempts > 100 {
		return fmt.Errorf("%s=%d: want a whole number from 1 to 100", EnvCodeMaxAttempts, c.CodeMaxAttempts)
	}
	if c.ResendInterval < time.Second {
		return fmt.Errorf("%s=%s: want a duration of at least 1s", EnvResendInterval, c.ResendInterval)
	}
	if c.RateLimitPerIP < 0 && c.RateLimitPerIP != RateLimitOff {
		return fmt.Errorf("%s=%d: want a whole number ≥ 0 (0 switches the limit off)", EnvRateLimitPerIP, c.RateLimitPerIP)
	}
	if c.RateLimitBurst < 1 {
		return fmt.Errorf("%s=%d: want a whole number ≥ 1", EnvRateLimitBurst, c.RateLimitBurst)
	}
	if c.PublishTimeout < 100*time.Millisecond || c.PublishTimeout > 5*time.Minute {
		return fmt.Errorf("%s=%s: want a duration from 100ms to 5m", EnvPublishTimeout, c.PublishTimeout)
	}
	if c.CodeDigits < MinCodeDigits || c.CodeDigits > MaxCodeDigits {
		return fmt.Errorf("%s=%d: want a whole number from %d to %d", EnvCodeDigits, c.CodeDigits, MinCodeDigits, MaxCodeDigits)
	}
	if c.VerifyMaxFailuresPerDay < 1 {
		return fmt.Errorf("%s=%d: want a whole number ≥ 1", EnvVerifyMaxFailuresPerDay, c.VerifyMaxFailuresPerDay)
	}
	if c.TrustProxyHeaders {
		return fmt.Errorf("%s=true is no longer accepted: it let any client pick its own IP; set %s to your proxies' addresses (CIDRs, comma-separated) instead", EnvTrustProxyHeaders, EnvTrustedProxies)
	}
	if c.CodeMaxSendsPerDay < 1 {
		return fmt.Errorf("%s=%d: want a whole number ≥ 1", EnvCodeMaxSendsPerDay, c.CodeMaxSendsPerDay)
	}
	if c.CodeMaxSendsPerHour < 0 {
		return fmt.Errorf("%s=%d: want a whole number ≥ 0 (0: no limit)", EnvCodeMaxSendsPerHour, c.CodeMaxSendsPerHour)
	}
	if c.PendingMax < 1 {
		return fmt.Errorf("%s=%d: want a whole number ≥ 1", EnvPendingMax, c.PendingMax)
	}
	return c.validatePages()
}

// ParseTrustedProxies parses TRUSTED_PROXIES: CIDRs such as 10.0.0.0/8 or
// fd00::/8, or single addresses, separated by commas.
func ParseTrustedProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil {
				return nil, fmt.Errorf("%s entry %d (%q): want a CIDR such as 10.0.0.0/8 or an IP address", EnvTrustedProxies, i+1, f)
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

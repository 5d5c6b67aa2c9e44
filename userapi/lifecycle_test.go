package userapi_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/userapi"
)

func TestRateLimitPerIP(t *testing.T) {
	h := newHarness(t, func(c *userapi.Config) { c.RateLimitPerIP = 60; c.RateLimitBurst = 2 })
	bad := `{"email":"x"}` // limited before decoding: any body spends a token
	for i := 0; i < 2; i++ {
		wantProblem(t, h.do(http.MethodPost, "/api/resend", "application/json", bad), 400, userapi.CodeInvalidRequest)
	}
	r := h.do(http.MethodPost, "/api/verify", "application/json", bad)
	wantProblem(t, r, http.StatusTooManyRequests, userapi.CodeRateLimited)
	if got := r.header.Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After %q, want 1 at 60 per minute", got)
	}
	// Health, readiness and metrics are not limited.
	h.mustStatus(h.do(http.MethodGet, "/healthz", "", ""), http.StatusOK)
	// Without TRUST_PROXY_HEADERS a client cannot pick its IP.
	req, _ := http.NewRequest(http.MethodPost, h.base+"/api/resend", strings.NewReader(bad))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Forwarded-For", "203.0.113.50")
	wantProblem(t, h.send(req), http.StatusTooManyRequests, userapi.CodeRateLimited)
}

// TestRateLimitBehindProxy: the test's client connects from 127.0.0.1,
// which plays the trusted proxies (TRUSTED_PROXIES=127.0.0.0/8).
func TestRateLimitBehindProxy(t *testing.T) {
	h := newHarness(t, func(c *userapi.Config) {
		c.RateLimitBurst = 1
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	post := func(xff string) response {
		req, _ := http.NewRequest(http.MethodPost, h.base+"/api/resend", strings.NewReader(`{}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Forwarded-For", xff)
		return h.send(req)
	}
	wantProblem(t, post("198.51.100.1"), 400, userapi.CodeInvalidRequest)
	wantProblem(t, post("198.51.100.1"), 429, userapi.CodeRateLimited)
	// The proxy appends the real client last; what the client claimed
	// before it does not matter.
	wantProblem(t, post("198.51.100.1, 198.51.100.2"), 400, userapi.CodeInvalidRequest)
	wantProblem(t, post("203.0.113.7, 198.51.100.2"), 429, userapi.CodeRateLimited)
	// Behind two proxies the inner one's hop is skipped: clients do not
	// share the inner proxy's bucket.
	wantProblem(t, post("203.0.113.9, 127.0.0.5"), 400, userapi.CodeInvalidRequest)
	wantProblem(t, post("203.0.113.10, 127.0.0.5"), 400, userapi.CodeInvalidRequest)
	wantProblem(t, post("198.51.100.77, 203.0.113.9, 127.0.0.6"), 429, userapi.CodeRateLimited)
}

// TestForgedForwardedForFromAnUntrustedPeer is the abuse review's attack:
// a client that reaches the API directly and rotates X-Forwarded-For. The
// peer (127.0.0.1) is not a trusted proxy, so the header is ignored and
// the client has one bucket: of 40 requests, only the burst gets through.
func TestForgedForwardedForFromAnUntrustedPeer(t *testing.T) {
	h := newHarness(t, func(c *userapi.Config) {
		c.RateLimitBurst = 5
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	})
	accepted := 0
	for i := range 40 {
		req, _ := http.NewRequest(http.MethodPost, h.base+"/api/resend", strings.NewReader(`{}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Forwarded-For", fmt.Sprintf("203.0.113.%d", i+1))
		if h.send(req).status != http.StatusTooManyRequests {
			accepted++
		}
	}
	if accepted > 5 {
		t.Errorf("%d of 40 requests with a rotated X-Forwarded-For got through, want at most the burst (5)", accepted)
	}
}

func TestNewServerChecks(t *testing.T) {
	keyring, _ := events.NewRandomKeyring()
	pub := &switchPublisher{}
	for name, tc := range map[string]struct {
		cfg  userapi.Config
		deps userapi.Deps
		want string
	}{
		"no publisher": {userapi.Config{}, userapi.Deps{Keyring: keyring}, "Publisher"},
		"no keyring":   {userapi.Config{}, userapi.Deps{Publisher: pub}, "Keyring"},
		"bad config":   {userapi.Config{CodeMaxAttempts: 1000}, userapi.Deps{Publisher: pub, Keyring: keyring}, "CODE_MAX_ATTEMPTS"},
	} {
		if _, err := userapi.NewServer(tc.cfg, tc.deps); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one naming %s", name, err, tc.want)
		}
	}
	// Two servers may share a process, each with its own registry...
	for i := 0; i < 2; i++ {
		if _, err := userapi.NewServer(userapi.Config{}, userapi.Deps{Publisher: pub, Keyring: keyring}); err != nil {
			t.Fatal(err)
		}
	}
	// ...but not one registry.
	reg := prometheus.NewRegistry()
	deps := userapi.Deps{Publisher: pub, Keyring: keyring, Registry: reg}
	if _, err := userapi.NewServer(userapi.Config{}, deps); err != nil {
		t.Fatal(err)
	}
	if _, err := userapi.NewServer(userapi.Config{}, deps); err == nil {
		t.Error("a second server registered the same metrics on one registry")
	}
}

func TestOpenBindErrorAtOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	keyring, _ := events.NewRandomKeyring()
	srv, err := userapi.NewServer(userapi.Config{HTTPAddr: ln.Addr().String()}, userapi.Deps{Publisher: &switchPublisher{}, Keyring: keyring, Logger: eventstest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if srv.Addr() != "" {
		t.Errorf("Addr before Open = %q", srv.Addr())
	}
	if err := srv.Open(); err == nil || !strings.Contains(err.Error(), "listen") {
		t.Errorf("Open on a taken port: %v, want a listen error", err)
	}
	if err := srv.Close(context.Background()); err != nil {
		t.Errorf("Close after a failed Open: %v", err)
	}
}

// Close waits for a request in flight, here one waiting for the broker.
func TestCloseDrainsInFlight(t *testing.T) {
	h := newHarness(t, func(c *userapi.Config) { c.PublishTimeout = 2 * time.Second })
	h.pub.mode.Store(publishBlock)
	email := h.email()
	type result struct {
		status int
		err    error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := h.client.Post(h.base+"/api/register", "application/json",
			strings.NewReader(`{"email":"`+email+`","first_name":"Ada","last_name":"Lovelace"}`))
		if err != nil {
			done <- result{err: err}
			return
		}
		resp.Body.Close()
		done <- result{status: resp.StatusCode}
	}()
	for h.pub.calls.Load() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.srv.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// The publish timed out while Close waited, so the client got its
	// answer instead of a dropped connection.
	select {
	case r := <-done:
		if r.err != nil || r.status != http.StatusServiceUnavailable {
			t.Fatalf("request in flight during Close: status %d, err %v; want 503", r.status, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer to the request in flight")
	}
	if _, err := net.DialTimeout("tcp", h.srv.Addr(), time.Second); err == nil {
		t.Error("still accepting connections after Close")
	}
}

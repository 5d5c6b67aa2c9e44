package userapi_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/userapi"
	"github.com/countersign/countersign/userapi/redistest"
)

// Two replicas, each with its own connection, spend from one budget per
// client: a burst of 3 is 3 requests in all, not 3 per replica.
func TestRedisRateLimiterSharedByReplicas(t *testing.T) {
	srv := redistest.Start(t)
	prefix := "rate-" + eventstest.Suffix() + ":"
	const perMinute, burst = 60, 3 // a token a second
	a := userapi.NewRedisStore(newRedisClient(t, srv.URL()), userapi.RedisOptions{Prefix: prefix}).RateLimiter(perMinute, burst)
	b := userapi.NewRedisStore(newRedisClient(t, srv.URL()), userapi.RedisOptions{Prefix: prefix}).RateLimiter(perMinute, burst)
	ctx := context.Background()
	client := netip.MustParsePrefix("192.0.2.10/32")

	allowed := 0
	var lastWait time.Duration
	for i := range 2 * burst {
		l := a
		if i%2 == 1 {
			l = b
		}
		ok, wait, err := l.Allow(ctx, client)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			allowed++
		} else {
			lastWait = wait
		}
	}
	if allowed != burst {
		t.Fatalf("%d of %d requests over two replicas allowed, want the burst of %d", allowed, 2*burst, burst)
	}
	if lastWait <= 0 || lastWait > time.Second {
		t.Errorf("refused with retry-after %v, want up to one token's second", lastWait)
	}
	if ok, _, err := b.Allow(ctx, netip.MustParsePrefix("2001:db8::/64")); err != nil || !ok {
		t.Errorf("another client was limited by the first one's requests: %v %v", ok, err)
	}
	time.Sleep(lastWait + 50*time.Millisecond)
	if ok, _, err := a.Allow(ctx, client); err != nil || !ok {
		t.Errorf("no token after the retry-after passed: %v %v", ok, err)
	}
	// A refused request does not spend a token: one came back, one was taken.
	if ok, _, _ := b.Allow(ctx, client); ok {
		t.Error("more than one token refilled in one interval")
	}
}

// Through the API: two servers, one Redis limiter budget for a client, and
// a 429 with Retry-After once it is spent. When that Redis is unreachable,
// requests are let through rather than refused or failed.
func TestRedisRateLimitAcrossServers(t *testing.T) {
	srv := redistest.Start(t)
	prefix := "rate-" + eventstest.Suffix() + ":"
	keyring, err := events.NewRandomKeyring()
	if err != nil {
		t.Fatal(err)
	}
	store := userapi.NewMemoryStore() // the limit alone is shared here
	var bases []string
	for range 2 {
		limits := userapi.NewRedisStore(newRedisClient(t, srv.URL()), userapi.RedisOptions{Prefix: prefix})
		api, err := userapi.NewServer(userapi.Config{HTTPAddr: "127.0.0.1:0", RateLimitPerIP: 1, RateLimitBurst: 4},
			userapi.Deps{Publisher: okPublisher{}, Keyring: keyring, Store: store, NewRateLimiter: limits.RateLimiter,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		if err := api.Open(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = api.Close(ctx)
		})
		bases = append(bases, "http://"+api.Addr())
	}
	c := &http.Client{Timeout: 10 * time.Second}
	register := func(i int) (int, string) {
		t.Helper()
		body := fmt.Sprintf(`{"email":%q,"first_name":"Ada","last_name":"Lovelace"}`, eventstest.UniqueEmail(t))
		resp, err := c.Post(bases[i%2]+"/api/register", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Retry-After")
	}
	for i := range 4 {
		if status, _ := register(i); status != http.StatusAccepted {
			t.Fatalf("request %d of the burst of 4: %d", i+1, status)
		}
	}
	status, retry := register(4)
	if status != http.StatusTooManyRequests {
		t.Fatalf("5th request over two servers: %d, want 429 (the budget is shared)", status)
	}
	if s, err := strconv.Atoi(retry); err != nil || s < 1 || s > 60 {
		t.Errorf("Retry-After %q, want 1–60 seconds at 1 request a minute", retry)
	}

	srv.Stop()
	start := time.Now()
	if status, _ := register(5); status != http.StatusAccepted {
		t.Errorf("with the limiter's Redis down: %d, want the request let through (202)", status)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("the request took %v with the limiter's Redis down", took)
	}
}

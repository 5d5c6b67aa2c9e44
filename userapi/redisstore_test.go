package userapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/userapi"
	"github.com/countersign/countersign/userapi/redistest"
	"github.com/countersign/countersign/userapi/storetest"
)

// newRedisClient connects to url with the options the binary uses.
func newRedisClient(t testing.TB, url string) *redis.Client {
	t.Helper()
	opt, err := userapi.ParseRedisURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// TestRedisStore runs the Store contract against a real redis-server, each
// subtest on a prefix of its own.
func TestRedisStore(t *testing.T) {
	srv := redistest.Start(t)
	rdb := newRedisClient(t, srv.URL())
	storetest.Run(t, func(t *testing.T) userapi.Store {
		return userapi.NewRedisStore(rdb, userapi.RedisOptions{Prefix: "test-" + eventstest.Suffix() + ":"})
	})
}

// TestRedisStoreSharedByClients: two stores with their own connections, as
// two replicas have, see one record, one attempt count and one winner.
func TestRedisStoreSharedByClients(t *testing.T) {
	srv := redistest.Start(t)
	prefix := "shared-" + eventstest.Suffix() + ":"
	a := userapi.NewRedisStore(newRedisClient(t, srv.URL()), userapi.RedisOptions{Prefix: prefix})
	b := userapi.NewRedisStore(newRedisClient(t, srv.URL()), userapi.RedisOptions{Prefix: prefix})
	ctx := context.Background()
	addr := eventstest.UniqueEmail(t)
	now := time.Now()
	p := userapi.Pending{Email: addr, UserID: "u1", MACKeyID: "k1", MAC: []byte("mac"), ExpiresAt: now.Add(time.Hour), SentAt: now}
	lim := userapi.Limits{ResendInterval: time.Minute, MaxAttempts: 10, MaxFailuresPerDay: 100}
	w, err := a.Register(ctx, p, lim)
	if err != nil {
		t.Fatal(err)
	}
	stored := w.Pending
	if w, err := b.Register(ctx, p, lim); err != nil || w.Outcome != userapi.OutcomeQuiet {
		t.Errorf("register on the other replica within the interval: %v, %v; want quiet", w.Outcome, err)
	}
	// The right code on both replicas at once: one wins, the others find
	// an account.
	var won atomic.Int32
	var wg sync.WaitGroup
	for i := range 200 {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, ok, err := s.Check(ctx, addr, userapi.CodeMACs{"k1": []byte("mac")}, lim)
			switch {
			case ok:
				won.Add(1)
			case !errors.Is(err, userapi.ErrNotFound):
				t.Errorf("right code: ok %v, %v", ok, err)
			}
		}()
	}
	wg.Wait()
	if won.Load() != 1 {
		t.Errorf("%d right codes won, want 1", won.Load())
	}
	if _, err := b.Consume(ctx, userapi.Pending{Email: addr, Version: stored.Version, Attempts: 1}); !errors.Is(err, userapi.ErrNotFound) {
		t.Errorf("consume after the winner: %v", err)
	}
	if ok, err := b.IsAccount(ctx, addr); err != nil || !ok {
		t.Errorf("the other replica sees the account: %v, %v", ok, err)
	}
}

// TestRedisStoreExpiresInRedis: the record's key carries a TTL matching its
// ExpiresAt, so Redis frees it; Len forgets it once it expired.
func TestRedisStoreExpiresInRedis(t *testing.T) {
	srv := redistest.Start(t)
	rdb := newRedisClient(t, srv.URL())
	prefix := "ttl-" + eventstest.Suffix() + ":"
	s := userapi.NewRedisStore(rdb, userapi.RedisOptions{Prefix: prefix})
	ctx := context.Background()
	addr := eventstest.UniqueEmail(t)
	now := time.Now()
	p := userapi.Pending{Email: addr, UserID: "u1", MACKeyID: "k1", MAC: []byte("mac"), ExpiresAt: now.Add(90 * time.Second), SentAt: now}
	lim := userapi.Limits{ResendInterval: time.Minute, MaxAttempts: 5, MaxFailuresPerDay: 10}
	if _, err := s.Register(ctx, p, lim); err != nil {
		t.Fatal(err)
	}
	key := prefix + "a:" + addr
	ttl, err := rdb.PTTL(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	if ttl < 89*time.Second || ttl > 90*time.Second+time.Millisecond {
		t.Errorf("PTTL of %s = %v, want about 90s", key, ttl)
	}
	if n, _ := s.Len(ctx); n != 1 {
		t.Errorf("Len = %d, want 1", n)
	}

	short := p
	short.Email = eventstest.UniqueEmail(t)
	short.ExpiresAt = time.Now().Add(200 * time.Millisecond)
	if _, err := s.Register(ctx, short, lim); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.Len(ctx); n != 2 {
		t.Errorf("Len = %d, want 2", n)
	}
	time.Sleep(400 * time.Millisecond)
	if n, err := rdb.Exists(ctx, prefix+"a:"+short.Email).Result(); err != nil || n != 0 {
		t.Errorf("expired key still in Redis (%d, %v)", n, err)
	}
	if n, _ := s.Len(ctx); n != 1 {
		t.Errorf("Len = %d after one expired, want 1", n)
	}
	// The MAC is stored, never anything else derived from the code.
	if h, err := rdb.HGetAll(ctx, key).Result(); err != nil || h["m"] != "mac" {
		t.Errorf("stored hash %v, %v", h, err)
	}
}

// TestRedisStoreUnavailable: with Redis gone every call fails fast, with an
// error that is none of the Store errors (the handlers answer 503) and that
// names no address.
func TestRedisStoreUnavailable(t *testing.T) {
	srv := redistest.Start(t)
	s := userapi.NewRedisStore(newRedisClient(t, srv.URL()), userapi.RedisOptions{})
	ctx := context.Background()
	addr := eventstest.UniqueEmail(t)
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	now := time.Now()
	lim := userapi.Limits{ResendInterval: time.Minute, MaxAttempts: 5, MaxFailuresPerDay: 10}
	calls := map[string]func() error{
		"Register": func() error {
			_, err := s.Register(ctx, userapi.Pending{Email: addr, ExpiresAt: now.Add(time.Hour), SentAt: now}, lim)
			return err
		},
		"Check":         func() error { _, _, err := s.Check(ctx, addr, userapi.CodeMACs{"k": nil}, lim); return err },
		"Consume":       func() error { _, err := s.Consume(ctx, userapi.Pending{Email: addr, Version: 1}); return err },
		"ApplyAccounts": func() error { return s.ApplyAccounts(ctx, []userapi.AccountChange{{Email: addr}}) },
		"IsAccount":     func() error { _, err := s.IsAccount(ctx, addr); return err },
		"Len":           func() error { _, err := s.Len(ctx); return err },
		"Ping":          func() error { return s.Ping(ctx) },
	}
	for name, call := range calls {
		start := time.Now()
		err := call()
		took := time.Since(start)
		switch {
		case err == nil:
			t.Errorf("%s succeeded with Redis down", name)
		case errors.Is(err, userapi.ErrNotFound), errors.Is(err, userapi.ErrTooManyAttempts), errors.Is(err, userapi.ErrTooSoon), errors.Is(err, userapi.ErrLocked):
			t.Errorf("%s: %v is a Store error, would not be a 503", name, err)
		case strings.Contains(err.Error(), addr):
			t.Errorf("%s: error names the address: %v", name, err)
		}
		if took > 3*time.Second {
			t.Errorf("%s took %v to fail", name, took)
		}
	}
}

// TestRedisOutageAnswers503: the user API on a Redis store answers 503
// problem+json within a few seconds when Redis goes away, and works again
// when it is back.
func TestRedisOutageAnswers503(t *testing.T) {
	srv := redistest.Start(t)
	store := userapi.NewRedisStore(newRedisClient(t, srv.URL()), userapi.RedisOptions{})
	keyring, err := events.NewRandomKeyring()
	if err != nil {
		t.Fatal(err)
	}
	api, err := userapi.NewServer(userapi.Config{HTTPAddr: "127.0.0.1:0", RateLimitPerIP: userapi.RateLimitOff},
		userapi.Deps{Publisher: okPublisher{}, Keyring: keyring, Store: store, Ready: store.Ping,
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
	base := "http://" + api.Addr()
	client := &http.Client{Timeout: 10 * time.Second}
	addr := eventstest.UniqueEmail(t)
	register := fmt.Sprintf(`{"email":%q,"first_name":"Ada","last_name":"Lovelace"}`, addr)
	if status, _ := post(t, client, base+"/api/register", register); status != http.StatusAccepted {
		t.Fatalf("register with Redis up: %d", status)
	}
	srv.Stop()
	for _, req := range []struct{ path, body string }{
		{"/api/register", register},
		{"/api/verify", fmt.Sprintf(`{"email":%q,"code":"123456"}`, addr)},
		{"/api/resend", fmt.Sprintf(`{"email":%q}`, addr)},
	} {
		start := time.Now()
		status, resp := post(t, client, base+req.path, req.body)
		took := time.Since(start)
		if status != http.StatusServiceUnavailable || resp.contentType != userapi.ContentTypeProblem {
			t.Errorf("%s with Redis down: %d %s %s, want 503 problem+json", req.path, status, resp.contentType, resp.body)
		}
		var p userapi.Problem
		if err := json.Unmarshal([]byte(resp.body), &p); err != nil || p.Type != userapi.CodeUnavailable.Type() {
			t.Errorf("%s: problem %+v (%v)", req.path, p, err)
		}
		if strings.Contains(resp.body, "redis") || strings.Contains(resp.body, "127.0.0.1") {
			t.Errorf("%s: the answer tells the client about the store: %s", req.path, resp.body)
		}
		if took > 3*time.Second {
			t.Errorf("%s took %v with Redis down", req.path, took)
		}
	}
	if status, _ := get(t, client, base+"/readyz"); status != http.StatusServiceUnavailable {
		t.Errorf("/readyz with Redis down: %d, want 503", status)
	}
}

type okPublisher struct{}

func (okPublisher) Publish(context.Context, events.Event) error { return nil }

type answer struct{ contentType, body string }

func post(t *testing.T, c *http.Client, url, body string) (int, answer) {
	t.Helper()
	resp, err := c.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, answer{resp.Header.Get("Content-Type"), string(b)}
}

func get(t *testing.T, c *http.Client, url string) (int, answer) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, answer{resp.Header.Get("Content-Type"), string(b)}
}

func TestParseRedisURL(t *testing.T) {
	opt, err := userapi.ParseRedisURL("redis://:s3cret@10.0.0.5:6380/2")
	if err != nil {
		t.Fatal(err)
	}
	if opt.Addr != "10.0.0.5:6380" || opt.DB != 2 || opt.Password != "s3cret" {
		t.Errorf("parsed %s db %d", opt.Addr, opt.DB)
	}
	if opt.DialTimeout != time.Second || opt.ReadTimeout != time.Second || opt.WriteTimeout != time.Second ||
		opt.PoolTimeout != time.Second || opt.MaxRetries != -1 || !opt.ContextTimeoutEnabled {
		t.Errorf("timeouts %v/%v/%v pool %v retries %d ctx %v: want 1s each, no retries, context deadlines honoured",
			opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.PoolTimeout, opt.MaxRetries, opt.ContextTimeoutEnabled)
	}
	opt, err = userapi.ParseRedisURL("rediss://redis.example:6379/0?dial_timeout=3s&max_retries=5")
	if err != nil {
		t.Fatal(err)
	}
	if opt.TLSConfig == nil || opt.DialTimeout != 3*time.Second || opt.MaxRetries != -1 {
		t.Errorf("rediss: TLS %v, dial timeout %v (URL wins), retries %d (always off)", opt.TLSConfig != nil, opt.DialTimeout, opt.MaxRetries)
	}
	for _, bad := range []string{"http://:s3cret@host:6379", "redis://:s3cret@host:port/0", "redis://:s3cret%zz@host/0", "redis://:s3cret@host/db"} {
		_, err := userapi.ParseRedisURL(bad)
		if err == nil {
			t.Errorf("%s accepted", bad)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error shows the password: %v", err)
		}
	}
}

// BenchmarkRedisStoreRegisterVerify is one registration and its verify
// (Register, Check) against a local redis-server, in parallel.
func BenchmarkRedisStoreRegisterVerify(b *testing.B) {
	srv := redistest.Start(b)
	s := userapi.NewRedisStore(newRedisClient(b, srv.URL()), userapi.RedisOptions{})
	ctx := context.Background()
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			addr := fmt.Sprintf("bench%d@example.com", n.Add(1))
			now := time.Now()
			_, err := s.Register(ctx, userapi.Pending{Email: addr, UserID: "u", MACKeyID: "k", MAC: make([]byte, 32), ExpiresAt: now.Add(time.Minute), SentAt: now}, benchLimits)
			ok := false
			if err == nil {
				_, ok, err = s.Check(ctx, addr, userapi.CodeMACs{"k": make([]byte, 32)}, benchLimits)
			}
			if err != nil || !ok {
				b.Fatal(ok, err)
			}
		}
	})
}

// TestRedisStoreWithPassword: a password-protected Redis works with the
// password in the URL and refuses without it.
func TestRedisStoreWithPassword(t *testing.T) {
	srv := redistest.Start(t, redistest.WithPassword("s3cret/+x"))
	ctx := context.Background()
	if err := userapi.NewRedisStore(newRedisClient(t, srv.URL()), userapi.RedisOptions{}).Ping(ctx); err != nil {
		t.Fatalf("with the password: %v", err)
	}
	err := userapi.NewRedisStore(newRedisClient(t, "redis://"+srv.Addr()+"/0"), userapi.RedisOptions{}).Ping(ctx)
	if err == nil {
		t.Fatal("without the password: no error")
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error shows the password: %v", err)
	}
}

// BenchmarkRedisStoreBytesPerPending measures the Redis memory one pending
// registration costs (used_memory before and after, record and index entry
// together), with the field sizes of BenchmarkMemoryStoreBytesPerPending.
// It stores max(b.N, 100000) registrations once, so any -benchtime gives a
// figure over at least 100k records in a few seconds:
//
//	go test -run '^$' -bench RedisStoreBytesPerPending ./userapi/
func BenchmarkRedisStoreBytesPerPending(b *testing.B) {
	n := int64(max(b.N, 100_000))
	srv := redistest.Start(b)
	rdb := newRedisClient(b, srv.URL())
	ctx := context.Background()
	usedMemory := func() int64 {
		info, err := rdb.InfoMap(ctx, "memory").Result()
		if err != nil {
			b.Fatal(err)
		}
		v, _ := strconv.ParseInt(info["Memory"]["used_memory"], 10, 64)
		return v
	}
	s := userapi.NewRedisStore(rdb, userapi.RedisOptions{})
	before := usedMemory()
	now := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := next.Add(1); j <= n; j = next.Add(1) {
				_, err := s.Register(ctx, userapi.Pending{
					Email:     fmt.Sprintf("user%07d@example.com", j),
					UserID:    uuid.NewString(),
					FirstName: "Ada",
					LastName:  "Lovelace",
					MACKeyID:  "k20260101-abcdef",
					MAC:       make([]byte, 32),
					ExpiresAt: now.Add(time.Hour),
					SentAt:    now,
				}, benchLimits)
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if l, _ := s.Len(ctx); int64(l) != n {
		b.Fatalf("Len = %d, want %d", l, n)
	}
	b.ReportMetric(float64(usedMemory()-before)/float64(n), "B/pending")
}

// TestRedisStoreLeastPrivilege: the store works as a Redis ACL user allowed
// only the scripts, PING and its own keys, the user docs/scaling.md
// recommends.
func TestRedisStoreLeastPrivilege(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	admin := newRedisClient(t, srv.URL())
	// The line docs/scaling.md gives: connection, scripts, and the commands
	// the scripts run.
	acl := strings.Fields("on >s3cret resetkeys ~countersign:pending:* resetchannels -@all " +
		"+hello +auth +select +ping +evalsha +eval " +
		"+hget +hmget +hset +hincrby +del +pexpire +incr +zadd +zrem +zremrangebyscore +zcard " +
		"+sismember +sadd +srem " +
		"+get +set")
	if err := admin.Do(ctx, append([]any{"ACL", "SETUSER", "countersign"}, toAny(acl)...)...).Err(); err != nil {
		t.Fatal(err)
	}
	rdb := newRedisClient(t, "redis://countersign:s3cret@"+srv.Addr()+"/0")
	// Each subtest gets its own keys below the default prefix, which the ACL
	// line grants: sharing one prefix, a subtest's records expiring made
	// another's Len count go down.
	storetest.Run(t, func(*testing.T) userapi.Store {
		return userapi.NewRedisStore(rdb, userapi.RedisOptions{Prefix: userapi.DefaultRedisPrefix + eventstest.Suffix() + ":"})
	})
	// The rate limit, under the same prefix.
	limiter := userapi.NewRedisStore(rdb, userapi.RedisOptions{}).RateLimiter(60, 1)
	for i, want := range []bool{true, false} {
		if ok, _, err := limiter.Allow(ctx, netip.MustParsePrefix("192.0.2.99/32")); err != nil || ok != want {
			t.Errorf("rate limit request %d as the store's user: allowed %v, err %v; want %v", i+1, ok, err, want)
		}
	}
	// And nothing else: the user cannot read other keys.
	if err := rdb.Get(ctx, "other").Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Errorf("GET of another key as the store's user: %v, want NOPERM", err)
	}
}

var benchLimits = userapi.Limits{ResendInterval: time.Minute, MaxAttempts: 5, MaxFailuresPerDay: 10}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

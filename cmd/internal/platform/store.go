package platform

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/countersign/countersign/userapi"
)

// pendingStore is the user API's store as PENDING_STORE chooses it.
type pendingStore struct {
	userapi.Store
	// ping checks the store for /readyz; nil for the memory store.
	ping func(context.Context) error
	// newRateLimiter keeps the per-client rate limit beside the records, so
	// that replicas share it; nil (in-process) for the memory store.
	newRateLimiter func(perMinute, burst int) userapi.RateLimiter
	// newMailBudget keeps the mail budgets beside the records, so that
	// replicas share them; nil (in-process) for the memory store.
	newMailBudget func(perDay, perHour int) userapi.MailBudget
	// desc names the store for the start-up log line, password redacted.
	desc  string
	close func()
}

// openPendingStore opens the store PENDING_STORE names: "memory" (the
// default) or a redis:// or rediss:// URL. A Redis store waits up to
// StartTimeout for Redis to answer, as EnsureTopics does for Kafka: under
// docker compose the services may start first. The URL, which may hold a
// password, is never in an error or a log line.
func openPendingStore(ctx context.Context, raw string, logger *slog.Logger) (*pendingStore, error) {
	raw = strings.TrimSpace(raw)
	opt, err := parsePendingStore(raw)
	if err != nil {
		return nil, err
	}
	if opt == nil {
		return &pendingStore{Store: userapi.NewMemoryStore(), desc: "memory (this process only)", close: func() {}}, nil
	}
	redis.SetLogger(redisLogger{logger.With("component", "redis")})
	rdb := redis.NewClient(opt)
	s := userapi.NewRedisStore(rdb, userapi.RedisOptions{})
	if err := WaitFor(ctx, StartTimeout, time.Second, s.Ping); err != nil {
		err = fmt.Errorf("PENDING_STORE: redis not reachable: %w", err)
		_ = rdb.Close()
		return nil, err
	}
	return &pendingStore{Store: s, ping: s.Ping, newRateLimiter: s.RateLimiter, newMailBudget: s.MailBudget, desc: redactURL(raw), close: func() { _ = rdb.Close() }}, nil
}

// CheckPendingStore reports whether PENDING_STORE's value can work, without
// connecting; the error names the setting and never shows the password.
func CheckPendingStore(raw string) error {
	_, err := parsePendingStore(raw)
	return err
}

// parsePendingStore checks PENDING_STORE's value without connecting: nil
// options for the memory store, or the Redis client's options.
func parsePendingStore(raw string) (*redis.Options, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" || raw == "memory" {
		return nil, nil
	}
	scheme, _, _ := strings.Cut(raw, "://")
	if scheme != "redis" && scheme != "rediss" {
		return nil, errors.New("PENDING_STORE: want memory, redis://[:password@]host:port/db or rediss://...")
	}
	opt, err := userapi.ParseRedisURL(raw)
	if err != nil {
		return nil, fmt.Errorf("PENDING_STORE: %w", err)
	}
	return opt, nil
}

// redactURL shows host, port and database, never the user or password.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "redis"
	}
	u.User = nil
	u.RawQuery = ""
	return u.String()
}

// ready combines the broker's readiness with the store's.
func (p *pendingStore) ready(broker func(context.Context) error) func(context.Context) error {
	if p.ping == nil {
		return broker
	}
	return func(ctx context.Context) error {
		if err := broker(ctx); err != nil {
			return err
		}
		return p.ping(ctx)
	}
}

// redisLogger sends go-redis's own messages (pool trouble, mostly) to slog
// as warnings. They carry addresses of Redis at most, never a password.
type redisLogger struct{ l *slog.Logger }

func (r redisLogger) Printf(ctx context.Context, format string, v ...any) {
	r.l.WarnContext(ctx, fmt.Sprintf(format, v...))
}

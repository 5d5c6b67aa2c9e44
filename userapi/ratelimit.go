package userapi

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// RateLimiter decides whether a client (an IP address, or an IPv6 /64; see
// clientKey) may make one more request to /api/. When it may not, it says how
// long until it may. An error means the limiter could not decide (its Redis
// is unreachable): the request is let through and the error logged, since
// the store behind the handlers answers 503 by itself if it shares that
// Redis, and a limiter alone must not take the API down.
type RateLimiter interface {
	Allow(ctx context.Context, client netip.Prefix) (ok bool, retryAfter time.Duration, err error)
}

// maxLimiters bounds the limiter map. Past it, idle limiters are swept and,
// if that is not enough, arbitrary ones dropped: a flood of distinct
// addresses costs bounded memory, at the price of forgetting some clients'
// spent budget.
const maxLimiters = 100_000

// ipLimiter is a token bucket per client IP (golang.org/x/time/rate).
type ipLimiter struct {
	limit rate.Limit
	burst int
	// idle is how long an untouched limiter takes to refill completely;
	// after that it equals a fresh one and can be dropped.
	idle time.Duration

	mu        sync.Mutex
	limiters  map[netip.Prefix]*limiterEntry
	lastSweep time.Time
}

type limiterEntry struct {
	lim  *rate.Limiter
	seen time.Time
}

func newIPLimiter(perMinute, burst int) *ipLimiter {
	limit := rate.Limit(float64(perMinute) / 60)
	return &ipLimiter{
		limit:    limit,
		burst:    burst,
		idle:     time.Duration(float64(burst)/float64(limit)*float64(time.Second)) + time.Second,
		limiters: map[netip.Prefix]*limiterEntry{},
	}
}

// allow takes one token for client; when there is none it returns how long
// until there will be.
func (l *ipLimiter) allow(client netip.Prefix, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.limiters[client]
	if !ok {
		if len(l.limiters) >= maxLimiters || now.Sub(l.lastSweep) > l.idle {
			l.sweep(now)
		}
		e = &limiterEntry{lim: rate.NewLimiter(l.limit, l.burst)}
		l.limiters[client] = e
	}
	e.seen = now
	res := e.lim.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return false, d
	}
	return true, 0
}

// Allow is allow at the current time: the in-process RateLimiter, which
// never fails.
func (l *ipLimiter) Allow(_ context.Context, client netip.Prefix) (bool, time.Duration, error) {
	ok, wait := l.allow(client, time.Now())
	return ok, wait, nil
}

// sweep drops limiters that have refilled; the caller holds mu.
func (l *ipLimiter) sweep(now time.Time) {
	l.lastSweep = now
	for k, e := range l.limiters {
		if now.Sub(e.seen) > l.idle {
			delete(l.limiters, k)
		}
	}
	for k := range l.limiters {
		if len(l.limiters) < maxLimiters {
			break
		}
		delete(l.limiters, k)
	}
}

func (l *ipLimiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.limiters)
}

// rateLimit answers 429 with Retry-After when the client's budget is spent.
func rateLimit(l RateLimiter, trustProxy bool, logger *slog.Logger, fail func(http.ResponseWriter, *http.Request, error)) func(http.Handler) http.Handler {
	var lastWarn atomic.Int64
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ok, wait, err := l.Allow(r.Context(), clientKey(r, trustProxy))
			if err != nil {
				// Let it through; one warning a minute, not one per request.
				if now := time.Now().UnixNano(); now-lastWarn.Load() > int64(time.Minute) {
					lastWarn.Store(now)
					logger.Warn("rate limiter unavailable: requests are not limited", "err", err)
				}
				ok = true
			}
			if !ok {
				fail(w, r, &Error{Code: CodeRateLimited, Detail: "Too many requests from this address; retry later.", RetryAfter: wait})
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// clientKey is the rate-limit key of a request: the client IP, or its /64
// for IPv6, since one subscriber usually holds a whole /64 and could rotate
// through it. With trustProxy the last X-Forwarded-For entry is used, the
// one the (single, trusted) proxy appended; earlier entries are the client's
// own claims.
func clientKey(r *http.Request, trustProxy bool) netip.Prefix {
	var addr netip.Addr
	if trustProxy {
		if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 {
			last := xff[len(xff)-1]
			if i := strings.LastIndexByte(last, ','); i >= 0 {
				last = last[i+1:]
			}
			addr, _ = netip.ParseAddr(strings.TrimSpace(last))
		}
	}
	if !addr.IsValid() {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			host = r.RemoteAddr
		}
		addr, _ = netip.ParseAddr(host)
	}
	addr = addr.Unmap().WithZone("")
	bits := 32
	if addr.Is6() {
		bits = 64
	}
	if !addr.IsValid() {
		// No usable address (a unix socket, a test): one shared bucket.
		return netip.Prefix{}
	}
	p, _ := addr.Prefix(bits)
	return p
}

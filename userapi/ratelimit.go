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

// maxLimiters bounds the limiter map. Past it, the client seen least
// recently is forgotten first: a flood of distinct addresses costs bounded
// memory, at the price of forgetting the spent budget of clients idle
// longest (those nearest to a full bucket anyway).
const maxLimiters = 100_000

// ipLimiter is a token bucket per client IP (golang.org/x/time/rate).
//
// Every step is O(1): the limiters are also kept in the order they were
// last used (an intrusive list), so forgetting the idle ones and, past the
// bound, the least recently seen, takes them off its front rather than
// scanning the map, which at the bound would have run on every new client.
type ipLimiter struct {
	limit rate.Limit
	burst int
	// idle is how long an untouched limiter takes to refill completely;
	// after that it equals a fresh one and can be dropped.
	idle time.Duration
	max  int

	mu       sync.Mutex
	limiters map[netip.Prefix]*limiterEntry
	// lru is the list's sentinel: lru.next is the least recently seen.
	lru limiterEntry
}

type limiterEntry struct {
	key        netip.Prefix
	lim        *rate.Limiter
	seen       time.Time
	prev, next *limiterEntry
}

func newIPLimiter(perMinute, burst int) *ipLimiter {
	limit := rate.Limit(float64(perMinute) / 60)
	l := &ipLimiter{
		limit:    limit,
		burst:    burst,
		idle:     time.Duration(float64(burst)/float64(limit)*float64(time.Second)) + time.Second,
		max:      maxLimiters,
		limiters: map[netip.Prefix]*limiterEntry{},
	}
	l.lru.prev, l.lru.next = &l.lru, &l.lru
	return l
}

// allow takes one token for client; when there is none it returns how long
// until there will be.
func (l *ipLimiter) allow(client netip.Prefix, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.limiters[client]
	if ok {
		l.unlink(e)
	} else {
		for f := l.lru.next; f != &l.lru && (now.Sub(f.seen) > l.idle || len(l.limiters) >= l.max); f = l.lru.next {
			l.unlink(f)
			delete(l.limiters, f.key)
		}
		e = &limiterEntry{key: client, lim: rate.NewLimiter(l.limit, l.burst)}
		l.limiters[client] = e
	}
	// Most recently seen: to the back.
	e.seen = now
	e.prev, e.next = l.lru.prev, &l.lru
	l.lru.prev.next = e
	l.lru.prev = e
	res := e.lim.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return false, d
	}
	return true, 0
}

// unlink takes e out of the list; the caller holds mu.
func (l *ipLimiter) unlink(e *limiterEntry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

// Allow is allow at the current time: the in-process RateLimiter, which
// never fails.
func (l *ipLimiter) Allow(_ context.Context, client netip.Prefix) (bool, time.Duration, error) {
	ok, wait := l.allow(client, time.Now())
	return ok, wait, nil
}

func (l *ipLimiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.limiters)
}

// rateLimit answers 429 with Retry-After when the client's budget is spent.
func rateLimit(l RateLimiter, trusted []netip.Prefix, logger *slog.Logger, fail func(http.ResponseWriter, *http.Request, error)) func(http.Handler) http.Handler {
	var lastWarn atomic.Int64
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ok, wait, err := l.Allow(r.Context(), clientKey(r, trusted))
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
// through it.
func clientKey(r *http.Request, trusted []netip.Prefix) netip.Prefix {
	addr := ClientIP(r.RemoteAddr, r.Header.Values("X-Forwarded-For"), trusted)
	if !addr.IsValid() {
		// No usable address (a unix socket, a test): one shared bucket.
		return netip.Prefix{}
	}
	bits := 32
	if addr.Is6() {
		bits = 64
	}
	p, _ := addr.Prefix(bits)
	return p
}

// ClientIP is the address of the client behind remoteAddr (the peer,
// host:port). When the peer is in trusted, the X-Forwarded-For values are
// read from the right, each hop's entry skipped while it is in trusted too;
// the first address that is not is the client. Whatever a client writes
// into the header itself lies left of that, and is never reached. When
// every entry is trusted, the leftmost is taken; an entry that is not an
// address stops the walk at the last good one. With no trusted prefixes
// the header is ignored. The zero Addr means no usable address.
func ClientIP(remoteAddr string, xff []string, trusted []netip.Prefix) netip.Addr {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	addr = addr.Unmap().WithZone("")
	if !inPrefixes(addr, trusted) {
		return addr
	}
	for i := len(xff) - 1; i >= 0; i-- {
		entries := strings.Split(xff[i], ",")
		for j := len(entries) - 1; j >= 0; j-- {
			hop, err := netip.ParseAddr(strings.TrimSpace(entries[j]))
			if err != nil {
				// Garbage where an address should be: someone we do not
				// trust wrote it. The last trusted hop is what we know.
				return addr
			}
			addr = hop.Unmap().WithZone("")
			if !inPrefixes(addr, trusted) {
				return addr
			}
		}
	}
	return addr
}

func inPrefixes(a netip.Addr, ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

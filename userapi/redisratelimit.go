package userapi

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisLimiter is the per-client rate limit kept in Redis, so that every
// replica of the user API spends from one budget per client: behind a load
// balancer that spreads a client's requests, an in-process limit would let
// it through once per replica.
//
// It is GCRA (the generic cell rate algorithm), the token bucket of the
// memory limiter expressed as one timestamp per client: the theoretical
// arrival time of its next request. One Lua script reads and moves it, so
// concurrent requests on several replicas cannot both take the last token.
// The key expires once the bucket would be full again: an idle client costs
// nothing. Times come from the replica's clock, as for the store (see
// RedisStore).
type redisLimiter struct {
	rdb      *redis.Client
	prefix   string
	timeout  time.Duration
	interval time.Duration // time for one token to refill
	burst    int
}

// RateLimiter returns the per-client limit of perMinute requests with
// bursts of burst, kept in this store's Redis under its prefix: what
// Deps.NewRateLimiter takes, so that replicas share one budget per client.
func (s *RedisStore) RateLimiter(perMinute, burst int) RateLimiter {
	return &redisLimiter{
		rdb:      s.rdb,
		prefix:   s.prefix + "rate:",
		timeout:  s.timeout,
		interval: time.Minute / time.Duration(perMinute),
		burst:    burst,
	}
}

// KEYS[1] = the client's key; ARGV = now, interval, burst (microseconds,
// microseconds, count). Returns {1, 0} when allowed, {0, wait} with the
// microseconds until the next request would be.
var scriptRateLimit = redis.NewScript(`
local now, interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allowAt = tat + interval - burst * interval
if allowAt > now then
  return {0, string.format('%d', allowAt - now)}
end
tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', string.format('%d', math.ceil((tat - now) / 1000)))
return {1, '0'}
`)

func (l *redisLimiter) Allow(ctx context.Context, client netip.Prefix) (bool, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	v, err := scriptRateLimit.Run(ctx, l.rdb, []string{l.prefix + client.String()},
		micros(time.Now()), l.interval.Microseconds(), l.burst).Slice()
	if err != nil {
		return false, 0, fmt.Errorf("redis rate limit: %w", err)
	}
	if len(v) != 2 {
		return false, 0, fmt.Errorf("redis rate limit: unexpected reply %v", v)
	}
	allowed, _ := v[0].(int64)
	waitStr, _ := v[1].(string)
	wait, err := strconv.ParseInt(waitStr, 10, 64)
	if err != nil {
		return false, 0, fmt.Errorf("redis rate limit: unexpected wait %q", waitStr)
	}
	return allowed == 1, time.Duration(wait) * time.Microsecond, nil
}

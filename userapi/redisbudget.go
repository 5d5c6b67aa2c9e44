package userapi

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisBudget is the MailBudget kept in Redis, so that every replica of the
// user API spends from one budget per mailbox and one for the platform.
//
// Each budget is a sorted set of sends, scored by the time they were taken
// (Unix microseconds): a sliding log. One Lua script drops what left the
// window, counts, and adds the send to both sets or to neither, so two
// replicas cannot both take the last send. A mailbox's set expires a day
// after its newest send: a quiet mailbox costs nothing.
//
// Keys, with the store's default prefix:
//
//	countersign:pending:budget:m:<mailbox>  sorted set, sends of one mailbox
//	countersign:pending:budget:platform     sorted set, every send (only when
//	                                        the hourly limit is on)
type redisBudget struct {
	rdb             *redis.Client
	prefix          string
	timeout         time.Duration
	perDay, perHour int
}

// MailBudget returns the mail budget of perDay sends per mailbox in 24
// hours and perHour in an hour in all (0: no platform limit), kept in this
// store's Redis under its prefix: what Deps.NewMailBudget takes, so that
// replicas share the budgets.
func (s *RedisStore) MailBudget(perDay, perHour int) MailBudget {
	return &redisBudget{rdb: s.rdb, prefix: s.prefix + "budget:", timeout: s.timeout, perDay: max(perDay, 1), perHour: max(perHour, 0)}
}

// KEYS = {mailbox set, platform set}; ARGV = now, id, perDay, perHour, day,
// hour (microseconds for times). Returns {1} when taken, {0, budget} when
// held back.
var scriptBudgetSpend = redis.NewScript(`
local now, id = tonumber(ARGV[1]), ARGV[2]
local perDay, perHour = tonumber(ARGV[3]), tonumber(ARGV[4])
local day, hour = tonumber(ARGV[5]), tonumber(ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now - day))
if redis.call('ZCARD', KEYS[1]) >= perDay then return {0, 'mailbox'} end
if perHour > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%d', now - hour))
  if redis.call('ZCARD', KEYS[2]) >= perHour then return {0, 'platform'} end
  redis.call('ZADD', KEYS[2], ARGV[1], id)
  redis.call('PEXPIRE', KEYS[2], string.format('%d', math.ceil(hour / 1000)))
end
redis.call('ZADD', KEYS[1], ARGV[1], id)
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.ceil(day / 1000)))
return {1}
`)

// KEYS = {mailbox set, platform set}; ARGV = id.
var scriptBudgetRefund = redis.NewScript(`
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
`)

func (b *redisBudget) keys(mailbox string) []string {
	return []string{b.prefix + "m:" + mailbox, b.prefix + "platform"}
}

// Spend implements MailBudget.
func (b *redisBudget) Spend(ctx context.Context, mailbox string, now time.Time) (Spent, bool, string, error) {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	id := newSpendID(now)
	v, err := scriptBudgetSpend.Run(ctx, b.rdb, b.keys(mailbox),
		micros(now), id, b.perDay, b.perHour, mailboxWindow.Microseconds(), platformWindow.Microseconds()).Slice()
	if err != nil {
		return Spent{}, false, "", fmt.Errorf("redis mail budget: %w", err)
	}
	if len(v) == 0 {
		return Spent{}, false, "", fmt.Errorf("redis mail budget: unexpected reply %v", v)
	}
	if taken, _ := v[0].(int64); taken == 1 {
		return Spent{Mailbox: mailbox, ID: id, At: now}, true, "", nil
	}
	held, _ := v[1].(string)
	return Spent{}, false, held, nil
}

// Refund implements MailBudget.
func (b *redisBudget) Refund(ctx context.Context, s Spent) error {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	if err := scriptBudgetRefund.Run(ctx, b.rdb, b.keys(s.Mailbox), s.ID).Err(); err != nil {
		return fmt.Errorf("redis mail budget: refund: %w", err)
	}
	return nil
}

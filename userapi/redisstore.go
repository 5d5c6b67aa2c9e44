package userapi

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/countersign/countersign/events"
)

// RedisStore is the Store shared by every replica of the user API: pending
// registrations live in Redis, so a person may register on one replica and
// verify on another, and the attempt count, the resend interval and the
// one-success rule hold across all of them.
//
// Every method is one Lua script run by the Redis server (EVALSHA, loaded on
// first use), so each is atomic however many replicas call at once: Redis
// runs one script at a time, and no other command sees a script half done.
//
// # Keys
//
// With the default prefix "countersign:pending:":
//
//	countersign:pending:a:<address>  hash, one pending registration
//	countersign:pending:f:<address>  sorted set, the address's wrong codes of
//	                                 the last 24 hours (member version:attempt,
//	                                 score time), expiring 24 hours after the last
//	countersign:pending:index        sorted set, address → expiry, for Len
//	countersign:pending:version      counter, source of Pending.Version
//	countersign:pending:n:<address>  string "until:id", the address's last
//	                                 notice to an account (NoticeThrottle),
//	                                 expiring after RESEND_INTERVAL
//	countersign:pending:accounts     set of the verified addresses: kept by
//	                                 Consume and Restore, and by ApplyAccounts
//	                                 from the accounts log (Kafka is the source
//	                                 of truth; Redis keeps a copy every replica
//	                                 shares)
//
// RateLimiter and MailBudget keep their keys under the same prefix
// (rate:<client>, budget:m:<mailbox>, budget:platform), so one Redis ACL
// key pattern covers everything the user API touches.
//
// A record's key expires at its ExpiresAt (PEXPIRE, rounded up to the
// millisecond), so Redis frees it without any sweeper. Times are stored in
// Unix microseconds: exact in Lua's doubles, finer than any interval the
// API uses.
//
// # Clocks
//
// The replicas' clocks decide, as in MemoryStore: each call passes the
// replica's time.Now, and a record whose ExpiresAt has passed by that clock
// is absent even if its key has a moment left to live. Redis's own clock is
// not used. Replicas should therefore keep their clocks in step (NTP); a
// replica whose clock runs d ahead sees codes expire, and allows a new code,
// up to d early.
//
// # Len
//
// Len reads the sorted set, which every write keeps up to date; entries of
// records that expired are dropped by Len and Register (ZREMRANGEBYSCORE),
// so the set never outgrows the live records by more than those expired
// since the last call. Neither SCAN nor KEYS is used: counting costs
// O(log N), whatever else the database holds.
//
// # What Redis must be
//
// One primary (standalone, or with replicas and Sentinel for fail-over):
// the scripts touch five keys that are not in one hash slot, so Redis
// Cluster is not supported. A Redis replica is copied asynchronously: after
// a fail-over the last writes may be lost, so a consumed code can come back
// (a second 200 for it, with the same user_id, which subscribers treat as
// idempotent) or a new registration can vanish (the person registers
// again). Persistence is not needed: a restart that empties Redis only asks
// pending people to register again.
//
// Errors from Redis (down, timed out, out of memory) come back wrapped and
// unmatched by the Store errors, which the handlers answer with 503.
type RedisStore struct {
	rdb      *redis.Client
	prefix   string
	index    string
	version  string
	accounts string
	timeout  time.Duration
}

var _ Store = (*RedisStore)(nil)

// DefaultRedisPrefix starts every key of a RedisStore unless
// RedisOptions.Prefix says otherwise.
const DefaultRedisPrefix = "countersign:pending:"

// DefaultRedisTimeout bounds one store call by default.
const DefaultRedisTimeout = 2 * time.Second

// RedisOptions configures a RedisStore. The zero value is the defaults.
type RedisOptions struct {
	// Prefix starts every key the store reads or writes (default
	// DefaultRedisPrefix). Two deployments sharing one Redis database need
	// different prefixes; the replicas of one deployment need the same.
	Prefix string

	// Timeout bounds each store call, the wait for a pooled connection
	// included (default 2s). When it passes the call fails, and the request
	// with it (503): a slow or unreachable Redis never holds a request
	// longer than this.
	Timeout time.Duration
}

// NewRedisStore returns a store kept in rdb's database. rdb stays the
// caller's to close. Build it from ParseRedisURL's options, whose timeouts
// make an unreachable Redis fail fast, or set timeouts of your own.
func NewRedisStore(rdb *redis.Client, opt RedisOptions) *RedisStore {
	if opt.Prefix == "" {
		opt.Prefix = DefaultRedisPrefix
	}
	if opt.Timeout <= 0 {
		opt.Timeout = DefaultRedisTimeout
	}
	return &RedisStore{
		rdb:      rdb,
		prefix:   opt.Prefix,
		index:    opt.Prefix + "index",
		version:  opt.Prefix + "version",
		accounts: opt.Prefix + "accounts",
		timeout:  opt.Timeout,
	}
}

// Client timeouts set by ParseRedisURL when the URL does not set them.
const (
	redisDialTimeout = time.Second
	redisIOTimeout   = time.Second
	redisPoolTimeout = time.Second
)

// ParseRedisURL turns a redis:// or rediss:// (TLS) URL into client options,
//
//	redis://[[user]:password@]host[:port][/db][?dial_timeout=1s&pool_size=40]
//
// and sets what the URL leaves unset so that an unreachable or stalled
// Redis fails a call within about a second instead of hanging it: dial,
// read, write and connection-pool timeouts of 1s, one dial attempt per
// connection. Retries are always off: the store's scripts are not
// idempotent (a Consume whose reply was lost must not run twice), so a
// failed call is a 503 and the client retries the request.
//
// Errors never contain the URL, which may hold a password.
func ParseRedisURL(rawURL string) (*redis.Options, error) {
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		// url.Parse errors quote the whole URL, password included, and
		// their cause can quote a piece of it.
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			err = errors.New("not a valid URL")
		}
		return nil, fmt.Errorf("redis URL: %w (want redis://[:password@]host:port/db or rediss://...)", err)
	}
	if opt.DialTimeout == 0 {
		opt.DialTimeout = redisDialTimeout
	}
	if opt.ReadTimeout == 0 {
		opt.ReadTimeout = redisIOTimeout
	}
	if opt.WriteTimeout == 0 {
		opt.WriteTimeout = redisIOTimeout
	}
	if opt.PoolTimeout == 0 {
		opt.PoolTimeout = redisPoolTimeout
	}
	if opt.DialerRetries == 0 {
		opt.DialerRetries = 1
	}
	opt.MaxRetries = -1
	opt.ContextTimeoutEnabled = true
	// Neither feature is used; both cost a round trip per new connection,
	// and servers before 7.2 answer them with an error.
	opt.DisableIdentity = true
	opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	return opt, nil
}

// Ping checks that Redis answers, for readiness probes.
func (s *RedisStore) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis store: ping: %w", err)
	}
	return nil
}

// The scripts. Each gets KEYS = {record, index, version, failures, accounts}
// (Len: {index}) and ARGV[1] = now, ARGV[2] = address; times are Unix
// microseconds in decimal. Numbers leave Lua only through
// string.format('%d'): Redis would print a large double in exponent form.
const luaPrelude = `
local rec, idx, seq, fails, accts = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now, addr = tonumber(ARGV[1]), ARGV[2]
local FIELDS = {'u', 'f', 'l', 'k', 'm', 'e', 's', 'a', 'v', 'ck', 'cn', 'cc'}

local function live()
  local e = redis.call('HGET', rec, 'e')
  return e and tonumber(e) > now
end

local function read()
  return redis.call('HMGET', rec, unpack(FIELDS))
end

local function remove()
  redis.call('DEL', rec)
  redis.call('ZREM', idx, addr)
end

-- put stores the record r (values in FIELDS order) until its expiry;
-- false, and nothing stored, when that has passed.
local function put(r)
  local e = tonumber(r[6])
  if e <= now then
    remove()
    return false
  end
  redis.call('HSET', rec, 'u', r[1], 'f', r[2], 'l', r[3], 'k', r[4], 'm', r[5],
    'e', r[6], 's', r[7], 'a', r[8], 'v', r[9], 'ck', r[10], 'cn', r[11], 'cc', r[12])
  redis.call('PEXPIRE', rec, string.format('%d', math.ceil((e - now) / 1000)))
  redis.call('ZADD', idx, r[6], addr)
  return true
end

-- tooSoon returns the wait in microseconds before a mail sent at sentAt is
-- allowed, or nil.
local function tooSoon(interval, sentAt)
  local wait = tonumber(redis.call('HGET', rec, 's')) + tonumber(interval) - tonumber(sentAt)
  if wait > 0 then return string.format('%d', wait) end
  return nil
end

local function nextVersion()
  return string.format('%d', redis.call('INCR', seq))
end

local function isAccount()
  return redis.call('SISMEMBER', accts, addr) == 1
end

-- lockedOut drops failures older than the window (microseconds) and says
-- whether max of them remain.
local function lockedOut(window, max)
  redis.call('ZREMRANGEBYSCORE', fails, '-inf', string.format('%d', now - tonumber(window)))
  return redis.call('ZCARD', fails) >= tonumber(max)
end

local function alive(max)
  return tonumber(redis.call('HGET', rec, 'a')) < tonumber(max)
end
`

var (
	// ARGV: now, addr, interval, max attempts, max failures, window,
	// u, f, l, k, m, e, s, ck, cn, cc
	scriptRegister = redis.NewScript(luaPrelude + `
redis.call('ZREMRANGEBYSCORE', idx, '-inf', ARGV[1])
if isAccount() then return {'account'} end
local isLive = live()
if isLive and tooSoon(ARGV[3], ARGV[13]) then return {'quiet', read()} end
if lockedOut(ARGV[6], ARGV[5]) then
  if isLive then return {'locked', read()} end
  return {'locked'}
end
if isLive and alive(ARGV[4]) then
  local old = read()
  redis.call('HSET', rec, 's', ARGV[13])
  return {'resent', read(), old}
end
local uid, replaced = ARGV[7], nil
if isLive then
  replaced = read()
  uid = replaced[1]
end
if not put({uid, ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13], '0', nextVersion(), ARGV[14], ARGV[15], ARGV[16]}) then
  return {'none'}
end
if replaced then return {'issued', read(), replaced} end
return {'issued', read()}
`)

	// ARGV: now, addr, interval, max attempts, max failures, window,
	// k, m, e, s, ck, cn, cc
	scriptResend = redis.NewScript(luaPrelude + `
if not live() or isAccount() then return {'none'} end
local wait = tooSoon(ARGV[3], ARGV[10])
if wait then return {'soon', wait} end
if lockedOut(ARGV[6], ARGV[5]) then return {'locked', read()} end
local old = read()
if alive(ARGV[4]) then
  redis.call('HSET', rec, 's', ARGV[10])
  return {'resent', read(), old}
end
if not put({old[1], old[2], old[3], ARGV[7], ARGV[8], ARGV[9], ARGV[10], '0', nextVersion(), ARGV[11], ARGV[12], ARGV[13]}) then
  return {'none'}
end
return {'issued', read(), old}
`)

	// ARGV: now, addr, written version, '1' if a replaced record follows, its 12 values
	scriptRollback = redis.NewScript(luaPrelude + `
if not live() or redis.call('HGET', rec, 'v') ~= ARGV[3] then return {'ok'} end
if ARGV[4] ~= '1' then
  remove()
  return {'ok'}
end
if ARGV[13] == ARGV[3] then
  -- The same code was sent again: only its SentAt goes back.
  redis.call('HSET', rec, 's', ARGV[11])
  return {'ok'}
end
put({ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13], ARGV[14], ARGV[15], ARGV[16]})
return {'ok'}
`)

	// ARGV: now, addr, max attempts, max failures, window, then the
	// presented code's key ids and MACs in pairs. Lua compares strings byte
	// by byte, not in constant time: what the timing could tell is how much
	// of a guessed code's MAC matches, which does not help find the code
	// (HMAC outputs of different codes are unrelated).
	scriptCheck = redis.NewScript(luaPrelude + `
if not live() or isAccount() then return {'none'} end
if not alive(ARGV[3]) then return {'void'} end
if lockedOut(ARGV[5], ARGV[4]) then return {'locked'} end
local a = redis.call('HINCRBY', rec, 'a', 1)
local r = read()
for i = 6, #ARGV - 1, 2 do
  if ARGV[i] == r[4] and ARGV[i + 1] == r[5] then
    remove()
    redis.call('SADD', accts, addr)
    return {'right', r}
  end
end
redis.call('ZADD', fails, ARGV[1], r[9] .. ':' .. string.format('%d', a))
redis.call('PEXPIRE', fails, string.format('%d', math.ceil(tonumber(ARGV[5]) / 1000)))
return {'wrong', r}
`)

	// ARGV: now, addr, version
	scriptConsume = redis.NewScript(luaPrelude + `
if not live() or redis.call('HGET', rec, 'v') ~= ARGV[3] or isAccount() then return {'none'} end
local r = read()
remove()
redis.call('SADD', accts, addr)
return {'ok', r}
`)

	// ARGV: now, addr, the record's 12 values
	scriptRestore = redis.NewScript(luaPrelude + `
redis.call('SREM', accts, addr)
if live() then return {'ok'} end
put({ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13], ARGV[14]})
return {'ok'}
`)

	// ARGV: now, addr
	scriptGet = redis.NewScript(luaPrelude + `
if not live() then return {'none'} end
return {'ok', read()}
`)

	// KEYS: index; ARGV: now
	scriptLen = redis.NewScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
return redis.call('ZCARD', KEYS[1])
`)
)

func micros(t time.Time) string { return strconv.FormatInt(t.UnixMicro(), 10) }

func (s *RedisStore) keys(email string) []string {
	return []string{s.prefix + "a:" + email, s.index, s.version, s.prefix + "f:" + email, s.accounts}
}

// run runs one script for email and returns its reply: a status word and
// what follows it.
func (s *RedisStore) run(ctx context.Context, op string, sc *redis.Script, email string, args ...any) (string, []any, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	argv := append([]any{micros(time.Now()), email}, args...)
	v, err := sc.Run(ctx, s.rdb, s.keys(email), argv...).Slice()
	if err != nil {
		return "", nil, fmt.Errorf("redis store: %s: %w", op, err)
	}
	if len(v) == 0 {
		return "", nil, fmt.Errorf("redis store: %s: empty reply", op)
	}
	status, ok := v[0].(string)
	if !ok {
		return "", nil, fmt.Errorf("redis store: %s: unexpected reply %T", op, v[0])
	}
	return status, v[1:], nil
}

// recordArgs are a record's values in the scripts' FIELDS order.
func recordArgs(p Pending) []any {
	return []any{p.UserID, p.FirstName, p.LastName, p.MACKeyID, p.MAC,
		micros(p.ExpiresAt), micros(p.SentAt), strconv.Itoa(p.Attempts), strconv.FormatUint(p.Version, 10),
		p.Sealed.KeyID, p.Sealed.Nonce, p.Sealed.Ciphertext}
}

// limitArgs are Limits as the scripts take them.
func limitArgs(lim Limits) []any {
	return []any{lim.ResendInterval.Microseconds(), lim.MaxAttempts, lim.MaxFailuresPerDay, lim.window().Microseconds()}
}

// parseRecord reads a record as HMGET returned it. The sealed code's three
// fields may be missing (a record written before they existed): a re-send
// of it then fails to open the code.
func parseRecord(email string, v any) (Pending, error) {
	f, ok := v.([]any)
	if !ok || len(f) != 12 {
		return Pending{}, fmt.Errorf("record of %d fields", len(f))
	}
	var str [12]string
	for i, x := range f {
		if str[i], ok = x.(string); !ok && i < 9 {
			return Pending{}, fmt.Errorf("record field %d missing", i)
		}
	}
	exp, err1 := strconv.ParseInt(str[5], 10, 64)
	sent, err2 := strconv.ParseInt(str[6], 10, 64)
	att, err3 := strconv.Atoi(str[7])
	ver, err4 := strconv.ParseUint(str[8], 10, 64)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return Pending{}, fmt.Errorf("record: %w", err)
	}
	return Pending{
		Email:     email,
		UserID:    str[0],
		FirstName: str[1],
		LastName:  str[2],
		MACKeyID:  str[3],
		MAC:       []byte(str[4]),
		Sealed:    events.SealedCode{KeyID: str[9], Nonce: []byte(str[10]), Ciphertext: []byte(str[11])},
		ExpiresAt: time.UnixMicro(exp).UTC(),
		SentAt:    time.UnixMicro(sent).UTC(),
		Attempts:  att,
		Version:   ver,
	}, nil
}

// written reads the reply of Register and Resend: the outcome, then the
// record as it is and the replaced one when there are.
func written(op, email, status string, rest []any) (Written, error) {
	var w Written
	switch status {
	case "none":
		return Written{}, ErrNotFound
	case "soon":
		us, err := strconv.ParseInt(fmt.Sprint(rest[0]), 10, 64)
		if err != nil {
			return Written{}, fmt.Errorf("redis store: %s: %w", op, err)
		}
		return Written{}, &TooSoonError{RetryAfter: time.Duration(us) * time.Microsecond}
	case "issued":
		w.Outcome = OutcomeIssued
	case "resent":
		w.Outcome = OutcomeResent
	case "quiet":
		w.Outcome = OutcomeQuiet
	case "locked":
		w.Outcome = OutcomeLocked
	case "account":
		w.Outcome = OutcomeAccount
	default:
		return Written{}, fmt.Errorf("redis store: %s: unexpected status %q", op, status)
	}
	var err error
	if len(rest) > 0 {
		if w.Pending, err = parseRecord(email, rest[0]); err != nil {
			return Written{}, fmt.Errorf("redis store: %s: %w", op, err)
		}
	}
	if len(rest) > 1 {
		old, err := parseRecord(email, rest[1])
		if err != nil {
			return Written{}, fmt.Errorf("redis store: %s: %w", op, err)
		}
		w.Replaced = &old
	}
	return w, nil
}

// one reads the reply of Check (its misses), Consume and Get: one record or a miss.
func one(op, email, status string, rest []any) (Pending, error) {
	switch status {
	case "none":
		return Pending{}, ErrNotFound
	case "void":
		return Pending{}, ErrTooManyAttempts
	case "locked":
		return Pending{}, ErrLocked
	case "ok":
		p, err := parseRecord(email, rest[0])
		if err != nil {
			return Pending{}, fmt.Errorf("redis store: %s: %w", op, err)
		}
		return p, nil
	}
	return Pending{}, fmt.Errorf("redis store: %s: unexpected status %q", op, status)
}

// Register implements Store.
func (s *RedisStore) Register(ctx context.Context, p Pending, lim Limits) (Written, error) {
	args := append(limitArgs(lim), p.UserID, p.FirstName, p.LastName, p.MACKeyID, p.MAC,
		micros(p.ExpiresAt), micros(p.SentAt), p.Sealed.KeyID, p.Sealed.Nonce, p.Sealed.Ciphertext)
	status, rest, err := s.run(ctx, "register", scriptRegister, p.Email, args...)
	if err != nil {
		return Written{}, err
	}
	return written("register", p.Email, status, rest)
}

// Resend implements Store.
func (s *RedisStore) Resend(ctx context.Context, email string, c NewCode, lim Limits) (Written, error) {
	args := append(limitArgs(lim), c.MACKeyID, c.MAC, micros(c.ExpiresAt), micros(c.SentAt),
		c.Sealed.KeyID, c.Sealed.Nonce, c.Sealed.Ciphertext)
	status, rest, err := s.run(ctx, "resend", scriptResend, email, args...)
	if err != nil {
		return Written{}, err
	}
	return written("resend", email, status, rest)
}

// Rollback implements Store.
func (s *RedisStore) Rollback(ctx context.Context, w Pending, replaced *Pending) error {
	args := []any{strconv.FormatUint(w.Version, 10), "0"}
	if replaced != nil {
		args[1] = "1"
		args = append(args, recordArgs(*replaced)...)
	}
	_, _, err := s.run(ctx, "rollback", scriptRollback, w.Email, args...)
	return err
}

// Check implements Store.
func (s *RedisStore) Check(ctx context.Context, email string, presented CodeMACs, lim Limits) (Pending, bool, error) {
	args := limitArgs(lim)[1:]
	ids := make([]string, 0, len(presented))
	for id := range presented {
		ids = append(ids, id)
	}
	sort.Strings(ids) // the same script arguments for the same code
	for _, id := range ids {
		args = append(args, id, presented[id])
	}
	status, rest, err := s.run(ctx, "check", scriptCheck, email, args...)
	if err != nil {
		return Pending{}, false, err
	}
	switch status {
	case "right", "wrong":
		p, err := parseRecord(email, rest[0])
		if err != nil {
			return Pending{}, false, fmt.Errorf("redis store: check: %w", err)
		}
		return p, status == "right", nil
	}
	p, err := one("check", email, status, rest)
	return p, false, err
}

// Consume implements Store.
func (s *RedisStore) Consume(ctx context.Context, a Pending) (Pending, error) {
	status, rest, err := s.run(ctx, "consume", scriptConsume, a.Email, strconv.FormatUint(a.Version, 10))
	if err != nil {
		return Pending{}, err
	}
	return one("consume", a.Email, status, rest)
}

// applyBatch bounds the commands of one ApplyAccounts pipeline.
const applyBatch = 1000

// ApplyAccounts implements Store: SADD and SREM on the accounts set, in
// order, pipelined (a round trip per thousand changes).
func (s *RedisStore) ApplyAccounts(ctx context.Context, changes []AccountChange) error {
	for len(changes) > 0 {
		n := min(len(changes), applyBatch)
		if err := s.applyAccounts(ctx, changes[:n]); err != nil {
			return err
		}
		changes = changes[n:]
	}
	return nil
}

func (s *RedisStore) applyAccounts(ctx context.Context, changes []AccountChange) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, c := range changes {
			if c.Forgets {
				p.SRem(ctx, s.accounts, c.Email)
			} else {
				p.SAdd(ctx, s.accounts, c.Email)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis store: apply accounts: %w", err)
	}
	return nil
}

// IsAccount implements Store.
func (s *RedisStore) IsAccount(ctx context.Context, email string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	ok, err := s.rdb.SIsMember(ctx, s.accounts, email).Result()
	if err != nil {
		return false, fmt.Errorf("redis store: is account: %w", err)
	}
	return ok, nil
}

// Restore implements Store.
func (s *RedisStore) Restore(ctx context.Context, p Pending) error {
	_, _, err := s.run(ctx, "restore", scriptRestore, p.Email, recordArgs(p)...)
	return err
}

// Get implements Store.
func (s *RedisStore) Get(ctx context.Context, email string) (Pending, error) {
	status, rest, err := s.run(ctx, "get", scriptGet, email)
	if err != nil {
		return Pending{}, err
	}
	return one("get", email, status, rest)
}

// Len implements Store: the records not expired by this replica's clock.
func (s *RedisStore) Len(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	n, err := scriptLen.Run(ctx, s.rdb, []string{s.index}, micros(time.Now())).Int()
	if err != nil {
		return 0, fmt.Errorf("redis store: len: %w", err)
	}
	return n, nil
}

package userapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/countersign/countersign/events"
)

// The "you already have an account" notice (issue 13, point 3). A register
// of an address that is an account answers exactly as for a new address
// and issues no code; a real person who forgot their account would then
// wait for a mail that never comes. So the owner is told, by a
// user_account_exists event the notifier mails:
//
//   - at most one per address per RESEND_INTERVAL (NoticeThrottle, one
//     atomic step in the store, so concurrent registers on any number of
//     replicas send one);
//   - only within the mail budgets of issue 14 (MailBudget: the mailbox's
//     CODE_MAX_SENDS_PER_DAY and the platform's CODE_MAX_SENDS_PER_HOUR),
//     which notices share with code mails, so re-registering someone's
//     address is no way to flood their mailbox;
//   - with nothing the request typed but the address: the names are
//     whoever tried's text.

// NoticeThrottle spaces the notices to the owner of an account.
//
// Every Store implementation of this package implements it; the contract
// is in storetest. All methods must be safe for concurrent use, and each is
// one atomic step. Times come from the caller (the replica's clock), as
// for the Store.
type NoticeThrottle interface {
	// TakeNotice claims the next notice to email at now. It succeeds (ok)
	// when no claim of email is held whose interval has not passed by now;
	// the new claim is then held until now + interval, and of any number of
	// concurrent calls for one address at most one succeeds. A claim that
	// did not succeed changes nothing.
	TakeNotice(ctx context.Context, email string, now time.Time, interval time.Duration) (c NoticeClaim, ok bool, err error)

	// ReleaseNotice gives back a claim whose notice was certainly not sent
	// (the event was not published), so the next register may send it. It
	// does nothing when c is no longer the address's claim (it expired, or
	// another was taken since).
	ReleaseNotice(ctx context.Context, c NoticeClaim) error
}

// NoticeClaim is one notice taken from a NoticeThrottle, for ReleaseNotice.
type NoticeClaim struct {
	Email string
	// ID tells this claim apart from every other of the address.
	ID string
	// Until is when the next notice may go.
	Until time.Time
}

var (
	_ NoticeThrottle = (*MemoryStore)(nil)
	_ NoticeThrottle = (*RedisStore)(nil)
)

func newClaimID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// noticeCache is the MemoryStore's claims, address → NoticeClaim, made on
// first use. Entries leave at their Until (go-cache's janitor), so the
// table holds at most the accounts registered again within one interval.
func (m *MemoryStore) noticeCache() *shardedCache {
	m.noticesOnce.Do(func() { m.notices = newShardedCache(m.seed) })
	return m.notices
}

// TakeNotice implements NoticeThrottle.
func (m *MemoryStore) TakeNotice(_ context.Context, email string, now time.Time, interval time.Duration) (NoticeClaim, bool, error) {
	defer m.lock(email)()
	c := m.noticeCache()
	if v, ok := c.Get(email); ok && v.(NoticeClaim).Until.After(now) {
		return NoticeClaim{}, false, nil
	}
	claim := NoticeClaim{Email: email, ID: newClaimID(), Until: now.Add(interval)}
	// Kept at least as long as the interval by this process's clock; the
	// decision above uses Until, so a later clock (a test's) is honoured.
	c.Set(email, claim, max(time.Until(claim.Until), interval))
	return claim, true, nil
}

// ReleaseNotice implements NoticeThrottle.
func (m *MemoryStore) ReleaseNotice(_ context.Context, claim NoticeClaim) error {
	defer m.lock(claim.Email)()
	c := m.noticeCache()
	if v, ok := c.Get(claim.Email); ok && v.(NoticeClaim).ID == claim.ID {
		c.Delete(claim.Email)
	}
	return nil
}

func (s *RedisStore) noticeKey(email string) string { return s.prefix + "n:" + email }

// The notice scripts are scripts, not SET NX and GET, so the store keeps
// needing only EVAL and EVALSHA (see docs/scaling.md's ACL), and so the
// interval is measured by the replica's clock, as the store's other limits
// are: the key's own expiry only frees Redis's memory.
var (
	// KEYS: claim; ARGV: now, until (Unix microseconds), id, ttl in ms.
	// The value is "until:id".
	scriptTakeNotice = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then
  local u = tonumber(string.match(v, '^(%d+):'))
  if u and u > tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2] .. ':' .. ARGV[3], 'PX', ARGV[4])
return 1
`)
	// KEYS: claim; ARGV: id. Deletes the claim only if it is still id's.
	scriptReleaseNotice = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v and string.match(v, ':(.*)$') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
`)
)

// TakeNotice implements NoticeThrottle: one key per address, prefix + "n:"
// + address, holding "until:id" and expiring after the interval.
func (s *RedisStore) TakeNotice(ctx context.Context, email string, now time.Time, interval time.Duration) (NoticeClaim, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	claim := NoticeClaim{Email: email, ID: newClaimID(), Until: now.Add(interval)}
	ttl := max(time.Until(claim.Until), interval).Milliseconds() + 1
	n, err := scriptTakeNotice.Run(ctx, s.rdb, []string{s.noticeKey(email)},
		micros(now), micros(claim.Until), claim.ID, strconv.FormatInt(ttl, 10)).Int()
	if err != nil {
		return NoticeClaim{}, false, fmt.Errorf("redis store: take notice: %w", err)
	}
	if n != 1 {
		return NoticeClaim{}, false, nil
	}
	return claim, true, nil
}

// ReleaseNotice implements NoticeThrottle.
func (s *RedisStore) ReleaseNotice(ctx context.Context, claim NoticeClaim) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if strings.Contains(claim.ID, ":") {
		return errors.New("redis store: release notice: malformed claim id")
	}
	if err := scriptReleaseNotice.Run(ctx, s.rdb, []string{s.noticeKey(claim.Email)}, claim.ID).Err(); err != nil {
		return fmt.Errorf("redis store: release notice: %w", err)
	}
	return nil
}

// notice answers a register of an address that is an account: it publishes
// user_account_exists when a notice is due (NoticeThrottle) and the mail
// budgets allow it, and otherwise waits about as long as publishing takes
// (maskLatency), so neither the answer nor its timing tells the caller
// whether a notice went out. When publishing fails the answer is the 503
// of a code mail that failed (new addresses get it too while the broker is
// down, so it tells nothing more); a notice certainly not published gives
// its claim and its budget back.
func (s *Server) notice(ctx context.Context, email, locale string) error {
	now := time.Now()
	claim, ok, err := s.store.TakeNotice(ctx, email, now, s.cfg.ResendInterval)
	if err != nil {
		return storeError(err)
	}
	if !ok {
		s.metrics.notices.WithLabelValues(noticeThrottled).Inc()
		s.maskLatency(ctx)
		return nil
	}
	spent, ok, budget, err := s.budget.Spend(ctx, Mailbox(email), now)
	if err != nil {
		s.releaseNotice(ctx, claim)
		return &Error{Code: CodeUnavailable, Detail: "The request could not be completed; retry later.", Err: fmt.Errorf("mail budget: %w", err)}
	}
	if !ok {
		// The claim is kept: no notice is due before the interval anyway,
		// and the budget is not asked again until then.
		s.metrics.notices.WithLabelValues(noticeHeldBack).Inc()
		s.logger.InfoContext(ctx, "account notice held back: budget used up", "budget", budget)
		s.maskLatency(ctx)
		return nil
	}
	e, err := events.NewUserAccountExists(events.UserAccountExists{Email: email, AttemptedAt: now, Locale: locale})
	if err == nil {
		err = s.publishAs(ctx, e, "account notice "+e.ID)
	}
	if err != nil {
		if errors.Is(err, events.ErrNotPublished) || e.ID == "" {
			s.refund(ctx, spent, "event_id", e.ID)
			s.releaseNotice(ctx, claim)
		} else {
			s.logger.WarnContext(ctx, "account notice's fate unknown: its claim and budget stay spent", "event_id", e.ID)
		}
		return err
	}
	s.metrics.notices.WithLabelValues(noticeSent).Inc()
	s.logger.InfoContext(ctx, "account notice sent", "event_id", e.ID)
	return nil
}

func (s *Server) releaseNotice(ctx context.Context, claim NoticeClaim) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	if err := s.store.ReleaseNotice(ctx, claim); err != nil {
		s.logger.ErrorContext(ctx, "release account notice claim after failed publish", "err", err)
	}
}

// refund gives a send back to the mail budgets; who are log attributes
// naming the request (never the address).
func (s *Server) refund(ctx context.Context, spent Spent, who ...any) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	if err := s.budget.Refund(ctx, spent); err != nil {
		s.logger.ErrorContext(ctx, "refund mail budget after failed publish", append(who, "err", err)...)
	}
}

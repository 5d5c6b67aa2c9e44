package userapi

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/patrickmn/go-cache"

	"github.com/countersign/countersign/events"
)

// MemoryStore is the in-process Store: go-cache with a TTL per record, and
// striped mutexes that make each method one atomic step per address.
// Pending registrations and failure counts live only in this process: a
// restart forgets them (people register again), and replicas do not share
// them, so run one replica or use a shared store. The accounts are rebuilt
// from the accounts log at start (ApplyAccounts), so they survive restarts.
type MemoryStore struct {
	c       *shardedCache // address → *record
	fails   *shardedCache // address → *failures
	seed    maphash.Seed
	stripes [256]sync.Mutex
	version atomic.Uint64

	// links is the LinkStore table (linkstore.go).
	linksOnce sync.Once
	links     *shardedCache

	// notices is the NoticeThrottle table (notice.go).
	noticesOnce sync.Once
	notices     *shardedCache

	// accounts holds a digest of each verified address (see accountKey):
	// 16 bytes a key instead of the address, so a million accounts take
	// tens of megabytes (BenchmarkMemoryStoreBytesPerAccount).
	accountsMu sync.RWMutex
	accounts   map[accountKey]struct{}
}

var _ Store = (*MemoryStore)(nil)

// accountKey is the first 128 bits of SHA-256 of the normalized address.
// Two addresses share one only by a collision of a 128-bit hash: with a
// billion accounts, a chance below 10^-20.
type accountKey [16]byte

func accountKeyOf(email string) accountKey {
	sum := sha256.Sum256([]byte(email))
	return accountKey(sum[:16])
}

// record is the stored form of Pending, kept small (see
// BenchmarkMemoryStoreBytesPerPending) and cheap for the garbage collector:
// the address is the cache key and is not repeated, times are Unix
// nanoseconds, and every variable-length field lives in one blob with no
// pointers in it. A record is thus two heap objects rather than eight; with
// hundreds of thousands pending, the collector's mark work per cycle was a
// tenth of the user API's CPU per register (docs/benchmarks.md, issue 18).
type record struct {
	// blob holds userID, firstName, lastName, macKeyID, mac, sealed.KeyID,
	// sealed.Nonce and sealed.Ciphertext in that order, each after its
	// length as a uvarint. It is never written after toRecord: the strings
	// pending returns point into it.
	blob      []byte
	expiresAt int64
	sentAt    int64
	version   uint64
	attempts  int32
}

// failures are the times (Unix nanoseconds) of an address's wrong codes in
// the last Limits.FailureWindow, oldest first, at most MaxFailuresPerDay of
// them.
type failures struct{ list []int64 }

// cacheShards is how many go-caches each of the store's tables is split
// into. go-cache sweeps expired items (every minute) under its one lock,
// scanning all of them: with a million pending in one cache every register
// waited 15.6-16.9 ms once a minute (and, with the pages on, as long again
// for the link table); split, a sweep holds one shard's lock for a
// sixteenth of that, and writers contend on sixteen locks instead of one.
const cacheShards = 16

// shardedCache is a go-cache table split by a hash of the key.
type shardedCache struct {
	seed   maphash.Seed
	shards [cacheShards]*cache.Cache
}

func newShardedCache(seed maphash.Seed) *shardedCache {
	s := &shardedCache{seed: seed}
	for i := range s.shards {
		s.shards[i] = cache.New(cache.NoExpiration, time.Minute)
	}
	return s
}

func (s *shardedCache) of(key string) *cache.Cache {
	return s.shards[maphash.String(s.seed, key)%cacheShards]
}

func (s *shardedCache) Get(key string) (any, bool) { return s.of(key).Get(key) }

func (s *shardedCache) Set(key string, v any, ttl time.Duration) { s.of(key).Set(key, v, ttl) }

func (s *shardedCache) Delete(key string) { s.of(key).Delete(key) }

// ItemCount counts expired items not yet swept too, as go-cache's does.
func (s *shardedCache) ItemCount() int {
	n := 0
	for _, c := range s.shards {
		n += c.ItemCount()
	}
	return n
}

// NewMemoryStore returns an empty store. Expired records are swept every
// minute; until then they take memory but are invisible.
func NewMemoryStore() *MemoryStore {
	seed := maphash.MakeSeed()
	return &MemoryStore{
		c:        newShardedCache(seed),
		fails:    newShardedCache(seed),
		seed:     seed,
		accounts: map[accountKey]struct{}{},
	}
}

func (m *MemoryStore) lock(email string) func() {
	mu := &m.stripes[maphash.String(m.seed, email)%uint64(len(m.stripes))]
	mu.Lock()
	return mu.Unlock
}

// get returns the live record of email; the caller holds its stripe.
func (m *MemoryStore) get(email string, now time.Time) *record {
	v, ok := m.c.Get(email)
	if !ok {
		return nil
	}
	r := v.(*record)
	if now.UnixNano() >= r.expiresAt {
		return nil
	}
	return r
}

// put stores r under email until r.expiresAt; false if that has passed.
func (m *MemoryStore) put(email string, r *record, now time.Time) bool {
	ttl := time.Duration(r.expiresAt - now.UnixNano())
	if ttl <= 0 {
		// go-cache would store a non-positive duration as "never expires".
		m.c.Delete(email)
		return false
	}
	m.c.Set(email, r, ttl)
	return true
}

func (m *MemoryStore) nextVersion() uint64 { return m.version.Add(1) }

func (m *MemoryStore) isAccount(email string) bool {
	m.accountsMu.RLock()
	defer m.accountsMu.RUnlock()
	_, ok := m.accounts[accountKeyOf(email)]
	return ok
}

func (m *MemoryStore) setAccount(email string, on bool) {
	k := accountKeyOf(email)
	m.accountsMu.Lock()
	defer m.accountsMu.Unlock()
	if on {
		m.accounts[k] = struct{}{}
	} else {
		delete(m.accounts, k)
	}
}

// recentFailures returns the failures of email within the window; the
// caller holds its stripe.
func (m *MemoryStore) recentFailures(email string, now time.Time, window time.Duration) *failures {
	v, ok := m.fails.Get(email)
	if !ok {
		return &failures{}
	}
	f := v.(*failures)
	since := now.Add(-window).UnixNano()
	i := 0
	for i < len(f.list) && f.list[i] <= since {
		i++
	}
	f.list = f.list[i:]
	return f
}

func (m *MemoryStore) locked(email string, now time.Time, lim Limits) bool {
	return len(m.recentFailures(email, now, lim.window()).list) >= lim.MaxFailuresPerDay
}

func toRecord(p Pending) *record {
	n := 8*binary.MaxVarintLen16 + len(p.UserID) + len(p.FirstName) + len(p.LastName) + len(p.MACKeyID) +
		len(p.MAC) + len(p.Sealed.KeyID) + len(p.Sealed.Nonce) + len(p.Sealed.Ciphertext)
	blob := make([]byte, 0, n)
	for _, f := range [...]string{p.UserID, p.FirstName, p.LastName, p.MACKeyID} {
		blob = binary.AppendUvarint(blob, uint64(len(f)))
		blob = append(blob, f...)
	}
	blob = binary.AppendUvarint(blob, uint64(len(p.MAC)))
	blob = append(blob, p.MAC...)
	blob = binary.AppendUvarint(blob, uint64(len(p.Sealed.KeyID)))
	blob = append(blob, p.Sealed.KeyID...)
	for _, f := range [...][]byte{p.Sealed.Nonce, p.Sealed.Ciphertext} {
		blob = binary.AppendUvarint(blob, uint64(len(f)))
		blob = append(blob, f...)
	}
	return &record{
		blob:      blob,
		expiresAt: p.ExpiresAt.UnixNano(),
		sentAt:    p.SentAt.UnixNano(),
		version:   p.Version,
		attempts:  int32(p.Attempts),
	}
}

func (r *record) pending(email string) Pending {
	var f [8][]byte
	rest := r.blob
	for i := range f {
		n, k := binary.Uvarint(rest)
		f[i], rest = rest[k:k+int(n):k+int(n)], rest[k+int(n):]
	}
	// The strings share the blob, which is never written again; the
	// byte slices are copies, as callers may change them.
	str := func(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
	return Pending{
		Email:     email,
		UserID:    str(f[0]),
		FirstName: str(f[1]),
		LastName:  str(f[2]),
		MACKeyID:  str(f[3]),
		MAC:       bytes.Clone(f[4]),
		Sealed:    events.SealedCode{KeyID: str(f[5]), Nonce: bytes.Clone(f[6]), Ciphertext: bytes.Clone(f[7])},
		ExpiresAt: time.Unix(0, r.expiresAt).UTC(),
		SentAt:    time.Unix(0, r.sentAt).UTC(),
		Attempts:  int(r.attempts),
		Version:   r.version,
	}
}

func tooSoon(cur *record, sentAt time.Time, interval time.Duration) error {
	next := time.Unix(0, cur.sentAt).Add(interval)
	if wait := next.Sub(sentAt); wait > 0 {
		return &TooSoonError{RetryAfter: wait}
	}
	return nil
}

// sendAgain moves the SentAt of the live code cur: OutcomeResent.
func (m *MemoryStore) sendAgain(email string, cur *record, sentAt time.Time) Written {
	old := cur.pending(email)
	cur.sentAt = sentAt.UnixNano() // in place: the stripe lock is held
	return Written{Outcome: OutcomeResent, Pending: cur.pending(email), Replaced: &old}
}

// issue stores p as a new code: OutcomeIssued.
func (m *MemoryStore) issue(p Pending, cur *record, now time.Time) (Written, error) {
	var replaced *Pending
	if cur != nil {
		old := cur.pending(p.Email)
		replaced = &old
		p.UserID = old.UserID
	}
	p.Attempts = 0
	p.Version = m.nextVersion()
	if !m.put(p.Email, toRecord(p), now) {
		return Written{}, ErrNotFound
	}
	return Written{Outcome: OutcomeIssued, Pending: m.get(p.Email, now).pending(p.Email), Replaced: replaced}, nil
}

// Register implements Store.
func (m *MemoryStore) Register(_ context.Context, p Pending, lim Limits) (Written, error) {
	defer m.lock(p.Email)()
	now := time.Now()
	if m.isAccount(p.Email) {
		return Written{Outcome: OutcomeAccount}, nil
	}
	cur := m.get(p.Email, now)
	switch {
	case cur != nil && tooSoon(cur, p.SentAt, lim.ResendInterval) != nil:
		return Written{Outcome: OutcomeQuiet, Pending: cur.pending(p.Email)}, nil
	case m.locked(p.Email, now, lim):
		w := Written{Outcome: OutcomeLocked}
		if cur != nil {
			w.Pending = cur.pending(p.Email)
		}
		return w, nil
	case cur != nil && int(cur.attempts) < lim.MaxAttempts:
		return m.sendAgain(p.Email, cur, p.SentAt), nil
	}
	return m.issue(p, cur, now)
}

// Resend implements Store.
func (m *MemoryStore) Resend(_ context.Context, email string, c NewCode, lim Limits) (Written, error) {
	defer m.lock(email)()
	now := time.Now()
	cur := m.get(email, now)
	if cur == nil || m.isAccount(email) {
		return Written{}, ErrNotFound
	}
	if err := tooSoon(cur, c.SentAt, lim.ResendInterval); err != nil {
		return Written{}, err
	}
	if m.locked(email, now, lim) {
		return Written{Outcome: OutcomeLocked, Pending: cur.pending(email)}, nil
	}
	if int(cur.attempts) < lim.MaxAttempts {
		return m.sendAgain(email, cur, c.SentAt), nil
	}
	p := cur.pending(email)
	p.MACKeyID, p.MAC, p.Sealed, p.ExpiresAt, p.SentAt = c.MACKeyID, c.MAC, c.Sealed, c.ExpiresAt, c.SentAt
	return m.issue(p, cur, now)
}

// Rollback implements Store.
func (m *MemoryStore) Rollback(_ context.Context, written Pending, replaced *Pending) error {
	defer m.lock(written.Email)()
	now := time.Now()
	cur := m.get(written.Email, now)
	switch {
	case cur == nil || cur.version != written.Version:
	case replaced == nil:
		m.c.Delete(written.Email)
	case replaced.Version == written.Version:
		cur.sentAt = replaced.SentAt.UnixNano()
	default:
		m.put(written.Email, toRecord(*replaced), now)
	}
	return nil
}

// Check implements Store.
func (m *MemoryStore) Check(_ context.Context, email string, presented CodeMACs, lim Limits) (Pending, bool, error) {
	defer m.lock(email)()
	now := time.Now()
	cur := m.get(email, now)
	switch {
	case cur == nil || m.isAccount(email):
		return Pending{}, false, ErrNotFound
	case int(cur.attempts) >= lim.MaxAttempts:
		return Pending{}, false, ErrTooManyAttempts
	}
	f := m.recentFailures(email, now, lim.window())
	if len(f.list) >= lim.MaxFailuresPerDay {
		return Pending{}, false, ErrLocked
	}
	// In place: the stripe lock is held, and every reader takes it.
	cur.attempts++
	p := cur.pending(email)
	if mac, ok := presented[p.MACKeyID]; ok && hmac.Equal(mac, p.MAC) {
		m.c.Delete(email)
		m.setAccount(email, true)
		return p, true, nil
	}
	f.list = append(f.list, now.UnixNano())
	m.fails.Set(email, f, lim.window())
	return p, false, nil
}

// Consume implements Store.
func (m *MemoryStore) Consume(_ context.Context, a Pending) (Pending, error) {
	defer m.lock(a.Email)()
	now := time.Now()
	cur := m.get(a.Email, now)
	if cur == nil || cur.version != a.Version || m.isAccount(a.Email) {
		return Pending{}, ErrNotFound
	}
	m.c.Delete(a.Email)
	m.setAccount(a.Email, true)
	return cur.pending(a.Email), nil
}

// Restore implements Store.
func (m *MemoryStore) Restore(_ context.Context, p Pending) error {
	defer m.lock(p.Email)()
	now := time.Now()
	m.setAccount(p.Email, false)
	if m.get(p.Email, now) != nil {
		return nil
	}
	m.put(p.Email, toRecord(p), now)
	return nil
}

// ApplyAccounts implements Store.
func (m *MemoryStore) ApplyAccounts(_ context.Context, changes []AccountChange) error {
	m.accountsMu.Lock()
	defer m.accountsMu.Unlock()
	for _, c := range changes {
		if c.Forgets {
			delete(m.accounts, accountKeyOf(c.Email))
		} else {
			m.accounts[accountKeyOf(c.Email)] = struct{}{}
		}
	}
	return nil
}

// IsAccount implements Store.
func (m *MemoryStore) IsAccount(_ context.Context, email string) (bool, error) {
	return m.isAccount(email), nil
}

// Accounts returns the number of accounts held.
func (m *MemoryStore) Accounts() int {
	m.accountsMu.RLock()
	defer m.accountsMu.RUnlock()
	return len(m.accounts)
}

// Get implements Store.
func (m *MemoryStore) Get(_ context.Context, email string) (Pending, error) {
	defer m.lock(email)()
	cur := m.get(email, time.Now())
	if cur == nil {
		return Pending{}, ErrNotFound
	}
	return cur.pending(email), nil
}

// Len implements Store. It counts expired records not swept yet.
func (m *MemoryStore) Len(context.Context) (int, error) { return m.c.ItemCount(), nil }

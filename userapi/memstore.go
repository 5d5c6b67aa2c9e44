package userapi

import (
	"context"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/patrickmn/go-cache"
)

// MemoryStore is the in-process Store: go-cache with a TTL per record, and
// striped mutexes that make each method one atomic step per address.
// Pending registrations live only in this process: a restart forgets them
// (people register again), and replicas do not share them, so run one
// replica or use a shared store.
type MemoryStore struct {
	c       *cache.Cache
	seed    maphash.Seed
	stripes [256]sync.Mutex
	version atomic.Uint64

	// links is the LinkStore table (linkstore.go).
	linksOnce sync.Once
	links     *cache.Cache
}

var _ Store = (*MemoryStore)(nil)

// record is the stored form of Pending, kept small (see
// BenchmarkMemoryStoreBytesPerPending): the address is the cache key and is
// not repeated, times are Unix nanoseconds.
type record struct {
	userID    string
	firstName string
	lastName  string
	macKeyID  string
	mac       []byte
	expiresAt int64
	sentAt    int64
	version   uint64
	attempts  int32
}

// NewMemoryStore returns an empty store. Expired records are swept every
// minute; until then they take memory but are invisible.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{c: cache.New(cache.NoExpiration, time.Minute), seed: maphash.MakeSeed()}
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

func toRecord(p Pending) *record {
	return &record{
		userID:    p.UserID,
		firstName: p.FirstName,
		lastName:  p.LastName,
		macKeyID:  p.MACKeyID,
		mac:       append([]byte(nil), p.MAC...),
		expiresAt: p.ExpiresAt.UnixNano(),
		sentAt:    p.SentAt.UnixNano(),
		version:   p.Version,
		attempts:  int32(p.Attempts),
	}
}

func (r *record) pending(email string) Pending {
	return Pending{
		Email:     email,
		UserID:    r.userID,
		FirstName: r.firstName,
		LastName:  r.lastName,
		MACKeyID:  r.macKeyID,
		MAC:       append([]byte(nil), r.mac...),
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

// Register implements Store.
func (m *MemoryStore) Register(_ context.Context, p Pending, resendInterval time.Duration) (Pending, *Pending, error) {
	defer m.lock(p.Email)()
	now := time.Now()
	var replaced *Pending
	if cur := m.get(p.Email, now); cur != nil {
		if err := tooSoon(cur, p.SentAt, resendInterval); err != nil {
			return Pending{}, nil, err
		}
		old := cur.pending(p.Email)
		replaced = &old
		p.UserID = cur.userID
	}
	p.Attempts = 0
	p.Version = m.nextVersion()
	if !m.put(p.Email, toRecord(p), now) {
		return Pending{}, nil, ErrNotFound
	}
	return m.getCopy(p.Email, now), replaced, nil
}

// getCopy returns the stored form of a record just written, so callers see
// exactly what the store keeps (UTC times, truncated to nanoseconds).
func (m *MemoryStore) getCopy(email string, now time.Time) Pending {
	return m.get(email, now).pending(email)
}

// Resend implements Store.
func (m *MemoryStore) Resend(_ context.Context, email string, c NewCode, resendInterval time.Duration) (Pending, *Pending, error) {
	defer m.lock(email)()
	now := time.Now()
	cur := m.get(email, now)
	if cur == nil {
		return Pending{}, nil, ErrNotFound
	}
	if err := tooSoon(cur, c.SentAt, resendInterval); err != nil {
		return Pending{}, nil, err
	}
	old := cur.pending(email)
	p := old
	p.MACKeyID, p.MAC, p.ExpiresAt, p.SentAt = c.MACKeyID, c.MAC, c.ExpiresAt, c.SentAt
	p.Attempts = 0
	p.Version = m.nextVersion()
	if !m.put(email, toRecord(p), now) {
		return Pending{}, nil, ErrNotFound
	}
	return m.getCopy(email, now), &old, nil
}

// Rollback implements Store.
func (m *MemoryStore) Rollback(_ context.Context, written Pending, replaced *Pending) error {
	defer m.lock(written.Email)()
	now := time.Now()
	cur := m.get(written.Email, now)
	if cur == nil || cur.version != written.Version {
		return nil
	}
	if replaced == nil {
		m.c.Delete(written.Email)
		return nil
	}
	m.put(written.Email, toRecord(*replaced), now)
	return nil
}

// Attempt implements Store.
func (m *MemoryStore) Attempt(_ context.Context, email string, maxAttempts int) (Pending, error) {
	defer m.lock(email)()
	cur := m.get(email, time.Now())
	if cur == nil {
		return Pending{}, ErrNotFound
	}
	if int(cur.attempts) >= maxAttempts {
		return Pending{}, ErrTooManyAttempts
	}
	// In place: the stripe lock is held, and every reader takes it.
	cur.attempts++
	return cur.pending(email), nil
}

// Consume implements Store.
func (m *MemoryStore) Consume(_ context.Context, email string, version uint64) (Pending, error) {
	defer m.lock(email)()
	cur := m.get(email, time.Now())
	if cur == nil || cur.version != version {
		return Pending{}, ErrNotFound
	}
	m.c.Delete(email)
	return cur.pending(email), nil
}

// Restore implements Store.
func (m *MemoryStore) Restore(_ context.Context, p Pending) error {
	defer m.lock(p.Email)()
	now := time.Now()
	if m.get(p.Email, now) != nil {
		return nil
	}
	m.put(p.Email, toRecord(p), now)
	return nil
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

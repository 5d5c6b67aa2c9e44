package userapi

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// LinkStore remembers which pending code a verification link belongs to.
// It is the Store's, kept apart so that the records and their scripts do
// not change: a link is a second key, an HMAC of its token
// (events.Keyring.LinkMACs), pointing at one address and one Version of
// its record. The link therefore lives and dies with the code it was
// issued with: a new code (Register, Resend) gives the record a new
// version, Consume removes it, Rollback of a failed send removes or
// replaces it, and the link's own entry expires with the code. Following a
// link is Consume(email, version), which only the code it was issued with
// can satisfy.
//
// Every Store implementation of this package implements it; the contract
// is in storetest.
type LinkStore interface {
	// PutLink records that the link whose MAC is mac belongs to version of
	// the pending record of email, until expiresAt.
	PutLink(ctx context.Context, mac []byte, email string, version uint64, expiresAt time.Time) error

	// Link returns the address and version the link mac was put for.
	// ErrNotFound when there is none or it expired. The record itself may
	// be gone or newer: callers check with Get or Consume.
	Link(ctx context.Context, mac []byte) (email string, version uint64, err error)
}

var (
	_ LinkStore = (*MemoryStore)(nil)
	_ LinkStore = (*RedisStore)(nil)
)

type linkRef struct {
	email   string
	version uint64
}

// links is the MemoryStore's link table, made on first use.
func (m *MemoryStore) linkCache() *shardedCache {
	m.linksOnce.Do(func() { m.links = newShardedCache(m.seed) })
	return m.links
}

// PutLink implements LinkStore.
func (m *MemoryStore) PutLink(_ context.Context, mac []byte, email string, version uint64, expiresAt time.Time) error {
	ttl := time.Until(expiresAt)
	if ttl <= 0 {
		return nil
	}
	m.linkCache().Set(string(mac), linkRef{email: email, version: version}, ttl)
	return nil
}

// Link implements LinkStore.
func (m *MemoryStore) Link(_ context.Context, mac []byte) (string, uint64, error) {
	v, ok := m.linkCache().Get(string(mac))
	if !ok {
		return "", 0, ErrNotFound
	}
	r := v.(linkRef)
	return r.email, r.version, nil
}

func (s *RedisStore) linkKey(mac []byte) string { return s.prefix + "l:" + hex.EncodeToString(mac) }

// The link scripts are scripts, not SET and GET, so the store keeps needing
// only EVAL and EVALSHA (see docs/scaling.md's ACL).
var (
	// KEYS: link; ARGV: value, ttl in ms
	scriptPutLink = redis.NewScript(`redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1`)
	// KEYS: link
	scriptLink = redis.NewScript(`return redis.call('GET', KEYS[1])`)
)

// PutLink implements LinkStore: one key, prefix + "l:" + hex(mac), holding
// "version:address", expiring with the code.
func (s *RedisStore) PutLink(ctx context.Context, mac []byte, email string, version uint64, expiresAt time.Time) error {
	ttl := time.Until(expiresAt)
	if ttl <= 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	ms := strconv.FormatInt(ttl.Milliseconds()+1, 10)
	if err := scriptPutLink.Run(ctx, s.rdb, []string{s.linkKey(mac)}, strconv.FormatUint(version, 10)+":"+email, ms).Err(); err != nil {
		return fmt.Errorf("redis store: put link: %w", err)
	}
	return nil
}

// Link implements LinkStore.
func (s *RedisStore) Link(ctx context.Context, mac []byte) (string, uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	v, err := scriptLink.Run(ctx, s.rdb, []string{s.linkKey(mac)}).Text()
	if errors.Is(err, redis.Nil) {
		return "", 0, ErrNotFound
	}
	if err != nil {
		return "", 0, fmt.Errorf("redis store: link: %w", err)
	}
	ver, email, ok := strings.Cut(v, ":")
	n, err := strconv.ParseUint(ver, 10, 64)
	if !ok || err != nil {
		return "", 0, errors.New("redis store: link: malformed entry")
	}
	return email, n, nil
}

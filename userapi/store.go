package userapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Pending is one registration waiting for its code. It holds an HMAC of the
// code (events.Keyring.CodeMAC), never the code, so a dump of the store
// yields nothing a person could type in.
type Pending struct {
	// Email is the normalized address (events.NormalizeEmail) and the key.
	Email string
	// UserID is a random UUID made at the first registration of the address
	// and kept while the address stays pending, across re-registrations and
	// resends, so every event about the person carries one id.
	UserID    string
	FirstName string
	LastName  string
	// MACKeyID and MAC are Keyring.CodeMAC(code, "", Email). The user id is
	// left out of the MAC on purpose: the store, not the handler, decides
	// the user id (keeping an earlier one), atomically with the write, and
	// the record is keyed by the address, which the MAC does bind.
	MACKeyID string
	MAC      []byte
	// ExpiresAt is when the code, and the record with it, stops existing.
	ExpiresAt time.Time
	// SentAt is when the current code was issued; the next code for the
	// address may be issued at SentAt + the resend interval.
	SentAt time.Time
	// Attempts counts the verification attempts begun against the current
	// code. Set by the store; a new code resets it to 0.
	Attempts int
	// Version identifies one code of one address: the store sets a new value
	// on every Register and Resend, different from every earlier one of the
	// address. Consume and Rollback act only on the version they are given,
	// so a request never removes a code issued after the one it saw.
	Version uint64
}

// LogValue keeps the address, the names and the MAC out of logs.
func (p Pending) LogValue() slog.Value {
	return slog.GroupValue(slog.String("user_id", p.UserID), slog.Uint64("version", p.Version))
}

// NewCode is what Resend changes: a fresh code's MAC and times.
type NewCode struct {
	MACKeyID  string
	MAC       []byte
	ExpiresAt time.Time
	SentAt    time.Time
}

// Store errors. Implementations return them (or wrap them) so handlers can
// tell the cases apart with errors.Is.
var (
	// ErrNotFound: no pending registration for the address (never
	// registered, expired, consumed, or a version that is no longer there).
	ErrNotFound = errors.New("no pending registration")
	// ErrTooManyAttempts: the current code's attempts are used up; the
	// registration is void until it expires or a new code replaces it.
	ErrTooManyAttempts = errors.New("verification attempts used up")
	// ErrTooSoon is matched by every *TooSoonError.
	ErrTooSoon = errors.New("code sent too recently")
)

// TooSoonError refuses a new code within the resend interval of the last one.
type TooSoonError struct {
	// RetryAfter is how long until a new code may be issued (> 0).
	RetryAfter time.Duration
}

func (e *TooSoonError) Error() string {
	return fmt.Sprintf("code sent too recently: retry after %s", e.RetryAfter)
}

// Is makes errors.Is(err, ErrTooSoon) true.
func (e *TooSoonError) Is(target error) bool { return target == ErrTooSoon }

// Store keeps pending registrations. Every method is one atomic step on one
// address: handlers never read a record, change it and write it back, so a
// store shared by many replicas (Redis, each method a Lua script) is as
// correct as the in-process one. Two requests for one address are serialised
// by the store; requests for different addresses never wait on each other's
// outcome.
//
// All methods must be safe for concurrent use. Records disappear at their
// ExpiresAt; an expired record is treated as absent by every method. Records
// returned are copies the caller may keep and change.
//
// The contract is tested by storetest.Run, which every implementation runs.
type Store interface {
	// Register makes p the pending registration of p.Email: a new one, or
	// replacing the current one (void or not) with p's names and code. When
	// it replaces one, the replaced record's UserID is kept and p.UserID is
	// ignored. Attempts starts at 0 and Version is set by the store.
	//
	// If a code was issued for the address less than resendInterval before
	// p.SentAt, nothing changes and the error is a *TooSoonError.
	//
	// It returns the record as stored and, when one was replaced, that
	// record as it was (for Rollback).
	Register(ctx context.Context, p Pending, resendInterval time.Duration) (stored Pending, replaced *Pending, err error)

	// Resend replaces the code of the pending registration of email with c,
	// keeping the user id and names, and resets Attempts (a void record
	// becomes usable again). ErrNotFound if there is none; a *TooSoonError
	// under the same rule as Register, comparing with c.SentAt.
	Resend(ctx context.Context, email string, c NewCode, resendInterval time.Duration) (stored Pending, replaced *Pending, err error)

	// Rollback undoes a Register or Resend whose code could not be sent: if
	// the record of written.Email still has written.Version, it is replaced
	// by replaced, or removed when replaced is nil or has expired. A record
	// with any other version (a later request replaced it) is left alone.
	Rollback(ctx context.Context, written Pending, replaced *Pending) error

	// Attempt begins one verification attempt against the current code of
	// email and returns the record with Attempts counting this attempt.
	// ErrNotFound if there is no record; ErrTooManyAttempts if maxAttempts
	// attempts were already begun (the count then stays put). Counting before
	// the code is checked is what bounds the guesses: N concurrent attempts
	// still get only maxAttempts checks.
	Attempt(ctx context.Context, email string, maxAttempts int) (Pending, error)

	// Consume removes the record of email if it still has version, and
	// returns it. ErrNotFound otherwise. Of any number of concurrent Consume
	// calls for one version, exactly one succeeds.
	Consume(ctx context.Context, email string, version uint64) (Pending, error)

	// Restore puts back a record that Consume removed, after the event that
	// should have followed could not be published. It does nothing when the
	// address has a record again (the newer one wins) or p has expired.
	Restore(ctx context.Context, p Pending) error

	// Get returns the record of email without changing it (ErrNotFound).
	// Handlers do not need it; it is for tests and operators.
	Get(ctx context.Context, email string) (Pending, error)

	// Len returns the number of records held. It may count records that
	// expired but were not swept yet; it feeds a gauge.
	Len(ctx context.Context) (int, error)

	// LinkStore keeps the verification links' MACs (linkstore.go).
	LinkStore
}

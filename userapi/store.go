package userapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/countersign/countersign/events"
)

// Pending is one registration waiting for its code. It holds an HMAC of the
// code (events.Keyring.CodeMAC), and the code sealed with the keyring
// (events.Keyring.Seal) so the same code can be mailed again, never the
// code itself: a dump of the store yields nothing a person could type in.
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
	// Sealed is Keyring.Seal(code, "", Email): what a re-send opens to mail
	// the same code again (sealed once more, for the event, with the user id).
	Sealed events.SealedCode
	// ExpiresAt is when the code, and the record with it, stops existing.
	ExpiresAt time.Time
	// SentAt is when the code was last mailed (issued, or sent again); the
	// next mail to the address may go at SentAt + the resend interval.
	SentAt time.Time
	// Attempts counts the verification attempts begun against the current
	// code. Set by the store; only a new code resets it to 0.
	Attempts int
	// Version identifies one code of one address: the store sets a new value
	// whenever it stores a new code, different from every earlier one of the
	// address; sending the same code again keeps it. Consume and Rollback
	// act only on the version they are given, so a request never removes a
	// code issued after the one it saw.
	Version uint64
}

// LogValue keeps the address, the names and the MAC out of logs.
func (p Pending) LogValue() slog.Value {
	return slog.GroupValue(slog.String("user_id", p.UserID), slog.Uint64("version", p.Version))
}

// NewCode is a fresh code's MAC, sealed form and times, which Resend stores
// when the current code cannot be sent again.
type NewCode struct {
	MACKeyID  string
	MAC       []byte
	Sealed    events.SealedCode
	ExpiresAt time.Time
	SentAt    time.Time
}

// Limits are the settings a store applies inside its atomic steps.
type Limits struct {
	// ResendInterval is the least time between two mails to one address.
	ResendInterval time.Duration
	// MaxAttempts is how many verification attempts one code allows.
	MaxAttempts int
	// MaxFailuresPerDay is how many wrong codes are checked for one address
	// in any FailureWindow, across all its codes.
	MaxFailuresPerDay int
	// FailureWindow is the rolling window of MaxFailuresPerDay: 24 hours
	// (DefaultFailureWindow) when zero. Tests shorten it.
	FailureWindow time.Duration
}

// DefaultFailureWindow is the window of VERIFY_MAX_FAILURES_PER_DAY.
const DefaultFailureWindow = 24 * time.Hour

func (l Limits) window() time.Duration {
	if l.FailureWindow <= 0 {
		return DefaultFailureWindow
	}
	return l.FailureWindow
}

// Outcome says what Register or Resend did.
type Outcome int

const (
	// OutcomeIssued: a new code was stored (Written.Pending); mail it.
	OutcomeIssued Outcome = iota + 1
	// OutcomeResent: the address's code is alive; mail the same code again.
	// Only SentAt changed: names, user id, expiry and attempts stay.
	OutcomeResent
	// OutcomeQuiet: the last mail went less than ResendInterval ago.
	// Nothing changed and nothing is to be sent (Register only: Resend
	// returns a *TooSoonError instead).
	OutcomeQuiet
	// OutcomeLocked: the address's failure budget is spent. No code was
	// issued and nothing is to be sent until the window allows again.
	OutcomeLocked
	// OutcomeAccount: the address is a verified account. Nothing was stored
	// and nothing is to be sent (Register only: for Resend it is
	// ErrNotFound, as for an unknown address).
	OutcomeAccount
)

// Written is the result of Register and Resend.
type Written struct {
	Outcome Outcome
	// Pending is the address's record as it is now: the one written
	// (Issued, Resent), or the one left alone (Quiet, and Locked when there
	// is one). Zero when there is none.
	Pending Pending
	// Replaced is the record as it was before an Issued or Resent write,
	// for Rollback; nil when the address had none.
	Replaced *Pending
}

// Sends reports whether the outcome has a code to mail.
func (w Written) Sends() bool { return w.Outcome == OutcomeIssued || w.Outcome == OutcomeResent }

// AccountChange is one record of the accounts log (the compacted topic
// user_account_verified): the address became an account, or, for a
// tombstone, stopped being one.
type AccountChange struct {
	Email   string
	Forgets bool
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
	// ErrLocked: the address's failure budget (Limits.MaxFailuresPerDay)
	// is spent; the attempt was refused without a check.
	ErrLocked = errors.New("failure budget spent")
	// ErrTooSoon is matched by every *TooSoonError.
	ErrTooSoon = errors.New("code sent too recently")
)

// TooSoonError refuses a mail within the resend interval of the last one.
type TooSoonError struct {
	// RetryAfter is how long until a new code may be issued (> 0).
	RetryAfter time.Duration
}

func (e *TooSoonError) Error() string {
	return fmt.Sprintf("code sent too recently: retry after %s", e.RetryAfter)
}

// Is makes errors.Is(err, ErrTooSoon) true.
func (e *TooSoonError) Is(target error) bool { return target == ErrTooSoon }

// CodeMACs are a presented code's MACs under each MAC key the server holds,
// by key id (events.Keyring.CodeMACs).
type CodeMACs map[string][]byte

// Store keeps pending registrations, the verified addresses (accounts), and
// each address's recent wrong codes. Every method is one atomic step on one
// address: handlers never read a record, change it and write it back, so a
// store shared by many replicas (Redis, each method a Lua script) is as
// correct as the in-process one. Two requests for one address are serialised
// by the store; requests for different addresses never wait on each other's
// outcome.
//
// All methods must be safe for concurrent use. Records disappear at their
// ExpiresAt; an expired record is treated as absent by every method. Records
// returned are copies the caller may keep and change. A code is alive while
// its record exists and its Attempts are below Limits.MaxAttempts; it is void
// when they are used up.
//
// The contract is tested by storetest.Run, which every implementation runs.
type Store interface {
	// Register asks for a code for p.Email; p carries a new code, names and
	// user id, used only when a new code is issued. In order:
	//   - the address is an account: OutcomeAccount, nothing changes;
	//   - it has a record whose SentAt is less than ResendInterval before
	//     p.SentAt: OutcomeQuiet, nothing changes;
	//   - its failure budget is spent: OutcomeLocked, nothing changes;
	//   - its code is alive: OutcomeResent, only SentAt becomes p.SentAt;
	//   - otherwise (no record, or a void one): OutcomeIssued, p is stored
	//     with Attempts 0 and a new Version, keeping a void record's UserID.
	Register(ctx context.Context, p Pending, lim Limits) (Written, error)

	// Resend asks for the code of email to be mailed again. ErrNotFound if
	// the address has no record or is an account; a *TooSoonError within
	// ResendInterval of the record's SentAt (compared with c.SentAt); then
	// OutcomeLocked, OutcomeResent, or, for a void record, OutcomeIssued
	// with c's code (user id and names kept, Attempts 0, a new Version).
	Resend(ctx context.Context, email string, c NewCode, lim Limits) (Written, error)

	// Rollback undoes a Register or Resend whose mail could not be sent: if
	// the record of written.Email still has written.Version, then when
	// replaced has that version too (OutcomeResent) only its SentAt is put
	// back; otherwise the record is replaced by replaced, or removed when
	// replaced is nil or has expired. A record with any other version (a
	// later request replaced it) is left alone.
	Rollback(ctx context.Context, written Pending, replaced *Pending) error

	// Check checks a presented code against the current code of email, in
	// one atomic step with its outcome. presented holds the code's MACs by
	// key id (events.Keyring.CodeMACs); the code is right when the one of
	// the record's MACKeyID equals the record's MAC (compared in constant
	// time where the store can). In order:
	//   - no record, or the address is an account: ErrNotFound;
	//   - the code is void: ErrTooManyAttempts;
	//   - the failure budget is spent: ErrLocked;
	//     (in these three cases nothing is counted)
	//   - the code is right: the record is removed and the address becomes
	//     an account; ok is true and p is the record, its Attempts counting
	//     this attempt;
	//   - otherwise the attempt counts on the code and as a failure of the
	//     address; ok is false and p is the record, Attempts counting it.
	// Of any number of concurrent Check and Consume calls for one address
	// at most one succeeds, until Restore or a forgetting ApplyAccounts.
	// Each code is judged against the record as it is at that moment: a
	// right code cannot lose to a Register that replaced a record whose
	// attempts other requests were still checking (the race a separate
	// reserve-then-consume pair had).
	Check(ctx context.Context, email string, presented CodeMACs, lim Limits) (p Pending, ok bool, err error)

	// Consume is the verification link's step: if the record of email
	// still has a.Version and the address is not an account, it removes the
	// record, makes the address an account and returns the record.
	// ErrNotFound otherwise. It counts no attempt.
	Consume(ctx context.Context, a Pending) (Pending, error)

	// Restore undoes a Consume after the event that should have followed
	// could not be published: the address is no longer an account, and p
	// is put back unless the address has a record again (the newer one
	// wins) or p has expired.
	Restore(ctx context.Context, p Pending) error

	// ApplyAccounts applies records of the accounts log in order, making
	// addresses accounts or forgetting them. Forgetting an address makes it
	// as new: it may register again.
	ApplyAccounts(ctx context.Context, changes []AccountChange) error

	// IsAccount reports whether email is an account. Handlers do not need
	// it; it is for tests and operators.
	IsAccount(ctx context.Context, email string) (bool, error)

	// Get returns the record of email without changing it (ErrNotFound).
	// Handlers do not need it; it is for tests and operators.
	Get(ctx context.Context, email string) (Pending, error)

	// Len returns the number of records held. It may count records that
	// expired but were not swept yet; it feeds a gauge.
	Len(ctx context.Context) (int, error)

	// LinkStore keeps the verification links' MACs (linkstore.go).
	LinkStore

	// NoticeThrottle spaces the notices to accounts (notice.go).
	NoticeThrottle
}

func (o Outcome) String() string {
	switch o {
	case OutcomeIssued:
		return "issued"
	case OutcomeResent:
		return "resent"
	case OutcomeQuiet:
		return "quiet"
	case OutcomeLocked:
		return "locked"
	case OutcomeAccount:
		return "account"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

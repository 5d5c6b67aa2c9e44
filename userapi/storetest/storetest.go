// Package storetest is the contract every userapi.Store implementation must
// pass. An implementation's tests call Run with a constructor:
//
//	func TestMemoryStore(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) userapi.Store { return userapi.NewMemoryStore() })
//	}
//
// newStore is called once per subtest and must return an empty store, or at
// least one in which the addresses made by the suite (random, per subtest)
// do not exist: a shared Redis works as is.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/userapi"
)

// Run runs the whole contract as subtests of t.
func Run(t *testing.T, newStore func(t *testing.T) userapi.Store) {
	tests := []struct {
		name string
		fn   func(*testing.T, userapi.Store)
	}{
		{"RegisterNew", testRegisterNew},
		{"RegisterAliveSendsSameCode", testRegisterAliveSendsSameCode},
		{"RegisterQuietWithinInterval", testRegisterQuiet},
		{"RegisterVoidIssuesNewCode", testRegisterVoidIssues},
		{"ResendUnknown", testResendUnknown},
		{"ResendAliveSendsSameCode", testResendAliveSendsSameCode},
		{"ResendVoidIssuesNewCode", testResendVoidIssues},
		{"ResendTooSoon", testResendTooSoon},
		{"AttemptCountsAndVoids", testAttemptCountsAndVoids},
		{"FailureBudgetAcrossCodes", testFailureBudgetAcrossCodes},
		{"FailureBudgetVoidAnswersVoid", testFailureBudgetVoid},
		{"FailureBudgetConcurrent", testFailureBudgetConcurrent},
		{"FailureBudgetRolls", testFailureBudgetRolls},
		{"RightCodeIsNoFailure", testRightCodeIsNoFailure},
		{"RightCodesRaceRegisters", testRightCodesRaceRegisters},
		{"ConcurrentAttemptsBounded", testConcurrentAttemptsBounded},
		{"ConsumeMakesAnAccount", testConsumeMakesAccount},
		{"ConsumeWrongVersion", testConsumeWrongVersion},
		{"ConcurrentConsumeExactlyOne", testConcurrentConsume},
		{"ApplyAccountsInOrder", testApplyAccounts},
		{"ForgottenAccountRegistersAsNew", testForgottenRegisters},
		{"ApplyManyAccounts", testApplyManyAccounts},
		{"RestoreAfterConsume", testRestoreAfterConsume},
		{"RestoreYieldsToNewer", testRestoreYieldsToNewer},
		{"RestoreExpired", testRestoreExpired},
		{"RollbackNew", testRollbackNew},
		{"RollbackReplaced", testRollbackReplaced},
		{"RollbackResentPutsSentAtBack", testRollbackResent},
		{"RollbackLeavesNewerAlone", testRollbackLeavesNewer},
		{"Expiry", testExpiry},
		{"AddressesIndependent", testAddressesIndependent},
		{"CopiesReturned", testCopiesReturned},
		{"Len", testLen},
		{"LinkFollowsItsCode", testLinkFollowsItsCode},
		{"LinkExpires", testLinkExpires},
		{"NoticeOncePerInterval", testNoticeOncePerInterval},
		{"NoticeConcurrentExactlyOne", testNoticeConcurrent},
		{"NoticeRelease", testNoticeRelease},
		{"NoticeAddressesIndependent", testNoticeAddressesIndependent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newStore(t))
		})
	}
}

var ctx = context.Background()

const (
	ttl      = time.Hour
	interval = time.Minute
)

// lim are the limits of most tests: 5 attempts a code, 100 failures a day.
var lim = userapi.Limits{ResendInterval: interval, MaxAttempts: 5, MaxFailuresPerDay: 100}

func limits(attempts, failures int) userapi.Limits {
	return userapi.Limits{ResendInterval: interval, MaxAttempts: attempts, MaxFailuresPerDay: failures}
}

func email(t *testing.T) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "storetest-" + hex.EncodeToString(b) + "@example.com"
}

func mac(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func sealed(b byte) events.SealedCode {
	return events.SealedCode{KeyID: "k1", Nonce: bytes.Repeat([]byte{b}, 12), Ciphertext: bytes.Repeat([]byte{b}, 22)}
}

// pending returns a record for addr whose code was sent at sentAt.
func pending(addr string, sentAt time.Time, m byte) userapi.Pending {
	return userapi.Pending{
		Email:     addr,
		UserID:    "user-" + hex.EncodeToString(mac(m)[:4]),
		FirstName: "Ada",
		LastName:  "Lovelace",
		MACKeyID:  "k1",
		MAC:       mac(m),
		Sealed:    sealed(m),
		ExpiresAt: sentAt.Add(ttl),
		SentAt:    sentAt,
	}
}

func newCode(sentAt time.Time, m byte) userapi.NewCode {
	return userapi.NewCode{MACKeyID: "k1", MAC: mac(m), Sealed: sealed(m), ExpiresAt: sentAt.Add(ttl), SentAt: sentAt}
}

func register(t *testing.T, s userapi.Store, p userapi.Pending, l userapi.Limits, want userapi.Outcome) userapi.Written {
	t.Helper()
	w, err := s.Register(ctx, p, l)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	if w.Outcome != want {
		t.Fatalf("Register outcome %v, want %v", w.Outcome, want)
	}
	return w
}

// mustRegister registers a new code and returns the stored record.
func mustRegister(t *testing.T, s userapi.Store, p userapi.Pending) userapi.Pending {
	t.Helper()
	return register(t, s, p, lim, userapi.OutcomeIssued).Pending
}

func resend(t *testing.T, s userapi.Store, addr string, c userapi.NewCode, l userapi.Limits, want userapi.Outcome) userapi.Written {
	t.Helper()
	w, err := s.Resend(ctx, addr, c, l)
	if err != nil {
		t.Fatalf("Resend: %v", err)
	}
	if w.Outcome != want {
		t.Fatalf("Resend outcome %v, want %v", w.Outcome, want)
	}
	return w
}

// wrongCode is the MACs of a code no record in these tests has.
var wrongCode = userapi.CodeMACs{"k1": mac(0xEE), "k0": mac(0xEE)}

// attempts checks n wrong codes, each of which must be checked and
// counted, and returns the record after the last.
func attempts(t *testing.T, s userapi.Store, addr string, l userapi.Limits, n int) userapi.Pending {
	t.Helper()
	var p userapi.Pending
	for i := 0; i < n; i++ {
		var ok bool
		var err error
		if p, ok, err = s.Check(ctx, addr, wrongCode, l); err != nil || ok {
			t.Fatalf("wrong code %d: ok %v, %v", i+1, ok, err)
		}
	}
	return p
}

// rightCode are the MACs a server would compute for the code of p.
func rightCode(p userapi.Pending) userapi.CodeMACs {
	return userapi.CodeMACs{p.MACKeyID: p.MAC, "k0": mac(0xEE)}
}

// right checks the right code of addr's current record, which must
// succeed, and returns what Check returned.
func right(t *testing.T, s userapi.Store, addr string, l userapi.Limits) userapi.Pending {
	t.Helper()
	p, ok, err := s.Check(ctx, addr, rightCode(mustGet(t, s, addr)), l)
	if err != nil || !ok {
		t.Fatalf("right code: ok %v, %v", ok, err)
	}
	return p
}

func wantAttemptErr(t *testing.T, s userapi.Store, addr string, l userapi.Limits, want error) {
	t.Helper()
	if p, ok, err := s.Check(ctx, addr, wrongCode, l); !errors.Is(err, want) || ok {
		t.Fatalf("Check = %+v, %v, %v; want %v", p, ok, err, want)
	}
}

func mustGet(t *testing.T, s userapi.Store, addr string) userapi.Pending {
	t.Helper()
	p, err := s.Get(ctx, addr)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	return p
}

func wantNotFound(t *testing.T, s userapi.Store, addr string) {
	t.Helper()
	if p, err := s.Get(ctx, addr); !errors.Is(err, userapi.ErrNotFound) {
		t.Fatalf("Get = %+v, %v; want ErrNotFound", p, err)
	}
}

func wantAccount(t *testing.T, s userapi.Store, addr string, want bool) {
	t.Helper()
	got, err := s.IsAccount(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("IsAccount = %v, want %v", got, want)
	}
}

func sameTime(a, b time.Time) bool { return a.Equal(b) || a.Sub(b).Abs() < time.Millisecond }

func checkSame(t *testing.T, got, want userapi.Pending) {
	t.Helper()
	if got.Email != want.Email || got.UserID != want.UserID || got.FirstName != want.FirstName ||
		got.LastName != want.LastName || got.MACKeyID != want.MACKeyID || !bytes.Equal(got.MAC, want.MAC) ||
		got.Sealed.KeyID != want.Sealed.KeyID || !bytes.Equal(got.Sealed.Nonce, want.Sealed.Nonce) ||
		!bytes.Equal(got.Sealed.Ciphertext, want.Sealed.Ciphertext) ||
		!sameTime(got.ExpiresAt, want.ExpiresAt) || !sameTime(got.SentAt, want.SentAt) ||
		got.Attempts != want.Attempts || got.Version != want.Version {
		t.Fatalf("record\n got %#v\nwant %#v", got, want)
	}
}

// verifyAccount makes addr an account the way the right code does.
func verifyAccount(t *testing.T, s userapi.Store, addr string) userapi.Pending {
	t.Helper()
	mustRegister(t, s, pending(addr, time.Now(), 9))
	return right(t, s, addr, lim)
}

func testRegisterNew(t *testing.T, s userapi.Store) {
	addr := email(t)
	p := pending(addr, time.Now(), 1)
	p.Attempts, p.Version = 7, 99 // the store decides both
	w := register(t, s, p, lim, userapi.OutcomeIssued)
	if w.Replaced != nil {
		t.Errorf("replaced = %+v for a new address", w.Replaced)
	}
	if !w.Sends() {
		t.Error("a new code is not to be sent")
	}
	stored := w.Pending
	if stored.Attempts != 0 || stored.Version == 0 || stored.Version == 99 {
		t.Errorf("stored attempts %d version %d: want 0 and a store-chosen nonzero version", stored.Attempts, stored.Version)
	}
	want := p
	want.Attempts, want.Version = 0, stored.Version
	checkSame(t, stored, want)
	checkSame(t, mustGet(t, s, addr), want)
}

// The takeover of issue 13: a third party re-registers a pending address
// with other names. The same code is sent again, and nothing else changes.
func testRegisterAliveSendsSameCode(t *testing.T, s userapi.Store) {
	addr := email(t)
	first := mustRegister(t, s, pending(addr, time.Now().Add(-2*interval), 1))
	attempts(t, s, addr, lim, 2)
	now := time.Now()
	evil := pending(addr, now, 2)
	evil.UserID, evil.FirstName, evil.LastName = "someone-else", "Visit evil.example/claim", "now"
	w := register(t, s, evil, lim, userapi.OutcomeResent)
	if !w.Sends() {
		t.Error("the same code is not to be sent again")
	}
	want := first
	want.Attempts, want.SentAt = 2, now
	checkSame(t, w.Pending, want)
	checkSame(t, mustGet(t, s, addr), want)
	old := first
	old.Attempts = 2
	if w.Replaced == nil {
		t.Fatal("replaced = nil, want the record before")
	}
	checkSame(t, *w.Replaced, old)
}

func testRegisterQuiet(t *testing.T, s userapi.Store) {
	addr := email(t)
	t0 := time.Now()
	first := mustRegister(t, s, pending(addr, t0, 1))
	w := register(t, s, pending(addr, t0.Add(interval/4), 2), lim, userapi.OutcomeQuiet)
	if w.Sends() || w.Replaced != nil {
		t.Errorf("quiet register %+v: nothing to send or undo", w)
	}
	checkSame(t, w.Pending, first)
	checkSame(t, mustGet(t, s, addr), first)
	// A void code within the interval is quiet too: no mail before its time.
	attempts(t, s, addr, lim, lim.MaxAttempts)
	register(t, s, pending(addr, t0.Add(interval/2), 3), lim, userapi.OutcomeQuiet)
	// At exactly the interval a mail may go.
	register(t, s, pending(addr, t0.Add(interval), 4), lim, userapi.OutcomeIssued)
}

func testRegisterVoidIssues(t *testing.T, s userapi.Store) {
	addr := email(t)
	first := mustRegister(t, s, pending(addr, time.Now().Add(-2*interval), 1))
	attempts(t, s, addr, lim, lim.MaxAttempts)
	second := pending(addr, time.Now(), 2)
	second.UserID, second.FirstName = "someone-else", "Grace"
	w := register(t, s, second, lim, userapi.OutcomeIssued)
	stored := w.Pending
	if stored.UserID != first.UserID {
		t.Errorf("user id %q, want the first registration's %q kept", stored.UserID, first.UserID)
	}
	if stored.FirstName != "Grace" || !bytes.Equal(stored.MAC, mac(2)) || stored.Attempts != 0 || stored.Version == first.Version {
		t.Errorf("stored %+v: want the new names and code, attempts reset, a new version", stored)
	}
	old := first
	old.Attempts = lim.MaxAttempts
	if w.Replaced == nil {
		t.Fatal("replaced = nil")
	}
	checkSame(t, *w.Replaced, old)
	checkSame(t, mustGet(t, s, addr), stored)
}

func testResendUnknown(t *testing.T, s userapi.Store) {
	addr := email(t)
	if _, err := s.Resend(ctx, addr, newCode(time.Now(), 1), lim); !errors.Is(err, userapi.ErrNotFound) {
		t.Fatalf("Resend of an unknown address: %v, want ErrNotFound", err)
	}
	wantNotFound(t, s, addr)
}

func testResendAliveSendsSameCode(t *testing.T, s userapi.Store) {
	addr := email(t)
	first := mustRegister(t, s, pending(addr, time.Now().Add(-2*interval), 1))
	attempts(t, s, addr, lim, 1)
	now := time.Now()
	w := resend(t, s, addr, newCode(now, 2), lim, userapi.OutcomeResent)
	want := first
	want.Attempts, want.SentAt = 1, now
	checkSame(t, w.Pending, want)
	checkSame(t, mustGet(t, s, addr), want)
}

func testResendVoidIssues(t *testing.T, s userapi.Store) {
	addr := email(t)
	first := mustRegister(t, s, pending(addr, time.Now().Add(-2*interval), 1))
	attempts(t, s, addr, lim, lim.MaxAttempts)
	now := time.Now()
	c := newCode(now, 2)
	w := resend(t, s, addr, c, lim, userapi.OutcomeIssued)
	want := first
	want.MACKeyID, want.MAC, want.Sealed, want.ExpiresAt, want.SentAt = c.MACKeyID, c.MAC, c.Sealed, c.ExpiresAt, c.SentAt
	want.Attempts, want.Version = 0, w.Pending.Version
	if w.Pending.Version == first.Version {
		t.Error("version unchanged by a new code")
	}
	checkSame(t, w.Pending, want)
	old := first
	old.Attempts = lim.MaxAttempts
	if w.Replaced == nil {
		t.Fatal("replaced = nil")
	}
	checkSame(t, *w.Replaced, old)
}

func testResendTooSoon(t *testing.T, s userapi.Store) {
	addr := email(t)
	t0 := time.Now()
	first := mustRegister(t, s, pending(addr, t0, 1))
	_, err := s.Resend(ctx, addr, newCode(t0.Add(time.Second), 2), lim)
	var soon *userapi.TooSoonError
	if !errors.As(err, &soon) || !errors.Is(err, userapi.ErrTooSoon) {
		t.Fatalf("Resend within the interval: %v, want *TooSoonError", err)
	}
	if want := interval - time.Second; soon.RetryAfter.Round(time.Millisecond) != want {
		t.Errorf("RetryAfter = %v, want %v", soon.RetryAfter, want)
	}
	checkSame(t, mustGet(t, s, addr), first)
}

func testAttemptCountsAndVoids(t *testing.T, s userapi.Store) {
	addr := email(t)
	l := limits(3, 100)
	wantAttemptErr(t, s, addr, l, userapi.ErrNotFound)
	stored := mustRegister(t, s, pending(addr, time.Now(), 1))
	for i := 1; i <= 3; i++ {
		p := attempts(t, s, addr, l, 1)
		want := stored
		want.Attempts = i
		checkSame(t, p, want)
	}
	for i := 0; i < 2; i++ {
		wantAttemptErr(t, s, addr, l, userapi.ErrTooManyAttempts)
	}
	if p := mustGet(t, s, addr); p.Attempts != 3 {
		t.Errorf("attempts = %d after the limit, want it to stay 3", p.Attempts)
	}
}

// The guessing of issue 13: new codes do not buy new guesses once the
// address's budget is spent.
func testFailureBudgetAcrossCodes(t *testing.T, s userapi.Store) {
	addr := email(t)
	l := limits(5, 7)
	mustRegister(t, s, pending(addr, time.Now().Add(-10*interval), 1))
	attempts(t, s, addr, l, 5)
	resend(t, s, addr, newCode(time.Now().Add(-8*interval), 2), l, userapi.OutcomeIssued)
	attempts(t, s, addr, l, 2)
	wantAttemptErr(t, s, addr, l, userapi.ErrLocked)
	if p := mustGet(t, s, addr); p.Attempts != 2 {
		t.Errorf("attempts = %d, want 2: a refused attempt does not count", p.Attempts)
	}
	before := mustGet(t, s, addr)
	w := register(t, s, pending(addr, time.Now(), 3), l, userapi.OutcomeLocked)
	if w.Sends() {
		t.Error("a locked register is to send")
	}
	resend(t, s, addr, newCode(time.Now(), 4), l, userapi.OutcomeLocked)
	checkSame(t, mustGet(t, s, addr), before)

	// Without a record, a locked address is given no new code either.
	other := email(t)
	mustRegister(t, s, pending(other, time.Now().Add(-3*interval), 1))
	attempts(t, s, other, limits(2, 2), 2)
	register(t, s, pending(other, time.Now(), 2), limits(2, 2), userapi.OutcomeLocked)
}

func testFailureBudgetVoid(t *testing.T, s userapi.Store) {
	addr := email(t)
	l := limits(2, 2)
	mustRegister(t, s, pending(addr, time.Now(), 1))
	attempts(t, s, addr, l, 2)
	// Void and locked: the answer of a void code.
	wantAttemptErr(t, s, addr, l, userapi.ErrTooManyAttempts)
	// Locked only (a bigger attempt limit): the answer of a wrong code.
	wantAttemptErr(t, s, addr, limits(5, 2), userapi.ErrLocked)
}

func testFailureBudgetConcurrent(t *testing.T, s userapi.Store) {
	addr := email(t)
	l := limits(100, 7)
	mustRegister(t, s, pending(addr, time.Now(), 1))
	var ok, locked atomic.Int32
	parallel(200, func(int) {
		_, right, err := s.Check(ctx, addr, wrongCode, l)
		switch {
		case err == nil && !right:
			ok.Add(1)
		case errors.Is(err, userapi.ErrLocked):
			locked.Add(1)
		default:
			t.Errorf("Check: %v, %v", right, err)
		}
	})
	if ok.Load() != 7 || locked.Load() != 193 {
		t.Errorf("%d wrong codes checked and %d refused, want 7 and 193", ok.Load(), locked.Load())
	}
}

func testFailureBudgetRolls(t *testing.T, s userapi.Store) {
	addr := email(t)
	l := limits(5, 2)
	l.FailureWindow = 400 * time.Millisecond
	mustRegister(t, s, pending(addr, time.Now(), 1))
	attempts(t, s, addr, l, 2)
	wantAttemptErr(t, s, addr, l, userapi.ErrLocked)
	time.Sleep(l.FailureWindow + 200*time.Millisecond)
	attempts(t, s, addr, l, 2)
	wantAttemptErr(t, s, addr, l, userapi.ErrLocked)
}

func testRightCodeIsNoFailure(t *testing.T, s userapi.Store) {
	addr := email(t)
	l := limits(5, 2)
	mustRegister(t, s, pending(addr, time.Now(), 1))
	attempts(t, s, addr, l, 1)
	consumed := right(t, s, addr, l)
	// The right code's attempt is not a failure: after a failed publish
	// the person may try once more, and one more wrong code fits the
	// budget of two.
	consumed.Attempts--
	if err := s.Restore(ctx, consumed); err != nil {
		t.Fatal(err)
	}
	attempts(t, s, addr, l, 1)
	wantAttemptErr(t, s, addr, l, userapi.ErrLocked)
}

func testConcurrentAttemptsBounded(t *testing.T, s userapi.Store) {
	addr := email(t)
	mustRegister(t, s, pending(addr, time.Now(), 1))
	const n, limit = 200, 5
	var ok, void atomic.Int32
	seen := make([]atomic.Bool, limit+1)
	parallel(n, func(int) {
		p, right, err := s.Check(ctx, addr, wrongCode, limits(limit, 1000))
		switch {
		case err == nil && !right:
			ok.Add(1)
			if p.Attempts < 1 || p.Attempts > limit || seen[p.Attempts].Swap(true) {
				t.Errorf("attempt number %d returned twice or out of range", p.Attempts)
			}
		case errors.Is(err, userapi.ErrTooManyAttempts):
			void.Add(1)
		default:
			t.Errorf("Check: %v, %v", right, err)
		}
	})
	if ok.Load() != limit || void.Load() != n-limit {
		t.Errorf("%d wrong codes checked and %d refused, want %d and %d", ok.Load(), void.Load(), limit, n-limit)
	}
}

// The race CI found in TestAttackRushGivesOneAccount: right codes checked
// at once with registers of the same address. Each right code is judged
// against the record as it is at its turn, so the first one wins, the
// address becomes an account, and no register can replace the record
// while a right code is being checked (with a reserve-then-consume pair
// the five reserved attempts voided the code, a register issued a new
// one, and every right code lost, counted as a failure).
func testRightCodesRaceRegisters(t *testing.T, s userapi.Store) {
	addr := email(t)
	first := mustRegister(t, s, pending(addr, time.Now().Add(-2*interval), 1))
	right := rightCode(first)
	var won atomic.Int32
	var mu sync.Mutex
	outcomes := map[string]int{}
	parallel(300, func(i int) {
		if i%3 == 0 {
			w, err := s.Register(ctx, pending(addr, time.Now(), 2), lim)
			if err != nil {
				t.Errorf("Register: %v", err)
				return
			}
			mu.Lock()
			outcomes[w.Outcome.String()]++
			mu.Unlock()
			return
		}
		_, ok, err := s.Check(ctx, addr, right, lim)
		switch {
		case ok:
			won.Add(1)
		case errors.Is(err, userapi.ErrNotFound):
		default:
			t.Errorf("right code: ok %v, %v", ok, err)
		}
	})
	if won.Load() != 1 {
		t.Errorf("%d right codes succeeded, want exactly 1", won.Load())
	}
	if outcomes[userapi.OutcomeIssued.String()] != 0 {
		t.Errorf("register outcomes %v: a new code was issued while the right one was being checked", outcomes)
	}
	wantAccount(t, s, addr, true)
}

// The second account of issue 13: a verified address stays verified.
func testConsumeMakesAccount(t *testing.T, s userapi.Store) {
	addr := email(t)
	wantAccount(t, s, addr, false)
	stored := mustRegister(t, s, pending(addr, time.Now().Add(-2*interval), 1))
	got := right(t, s, addr, lim)
	want := stored
	want.Attempts = 1
	checkSame(t, got, want)
	wantNotFound(t, s, addr)
	wantAccount(t, s, addr, true)
	if _, ok, err := s.Check(ctx, addr, rightCode(stored), lim); ok || !errors.Is(err, userapi.ErrNotFound) {
		t.Errorf("the right code again: ok %v, %v; want ErrNotFound", ok, err)
	}
	if _, err := s.Consume(ctx, stored); !errors.Is(err, userapi.ErrNotFound) {
		t.Errorf("Consume of an account: %v, want ErrNotFound", err)
	}
	w := register(t, s, pending(addr, time.Now(), 2), lim, userapi.OutcomeAccount)
	if w.Sends() || w.Replaced != nil || w.Pending.Email != "" {
		t.Errorf("register of an account: %+v, want nothing stored or sent", w)
	}
	wantNotFound(t, s, addr)
	if _, err := s.Resend(ctx, addr, newCode(time.Now(), 3), lim); !errors.Is(err, userapi.ErrNotFound) {
		t.Errorf("Resend of an account: %v, want ErrNotFound", err)
	}
	wantAttemptErr(t, s, addr, lim, userapi.ErrNotFound)
}

func testConsumeWrongVersion(t *testing.T, s userapi.Store) {
	addr := email(t)
	if _, err := s.Consume(ctx, userapi.Pending{Email: addr, Version: 1, Attempts: 1}); !errors.Is(err, userapi.ErrNotFound) {
		t.Errorf("Consume of unknown address: %v, want ErrNotFound", err)
	}
	first := mustRegister(t, s, pending(addr, time.Now().Add(-3*interval), 1))
	attempts(t, s, addr, lim, lim.MaxAttempts)
	second := register(t, s, pending(addr, time.Now(), 2), lim, userapi.OutcomeIssued).Pending
	if _, err := s.Consume(ctx, first); !errors.Is(err, userapi.ErrNotFound) {
		t.Errorf("Consume of a replaced version: %v, want ErrNotFound", err)
	}
	checkSame(t, mustGet(t, s, addr), second)
	if _, ok, err := s.Check(ctx, addr, rightCode(first), lim); ok || err != nil {
		t.Errorf("the replaced code: ok %v, %v; want a wrong code", ok, err)
	}
	wantAccount(t, s, addr, false)
}

func testConcurrentConsume(t *testing.T, s userapi.Store) {
	addr := email(t)
	a := mustRegister(t, s, pending(addr, time.Now(), 1))
	var won atomic.Int32
	parallel(500, func(i int) {
		// Links (Consume) and right codes (Check) at once.
		var err error
		if i%2 == 0 {
			_, err = s.Consume(ctx, a)
		} else {
			var ok bool
			if _, ok, err = s.Check(ctx, addr, rightCode(a), limits(1000, 1000)); err == nil && !ok {
				t.Errorf("the right code was judged wrong")
			}
		}
		switch {
		case err == nil:
			won.Add(1)
		case !errors.Is(err, userapi.ErrNotFound):
			t.Errorf("Consume or Check: %v", err)
		}
	})
	if won.Load() != 1 {
		t.Errorf("%d concurrent Consume and Check calls succeeded, want exactly 1", won.Load())
	}
}

func testApplyAccounts(t *testing.T, s userapi.Store) {
	a, b, c, d := email(t), email(t), email(t), email(t)
	err := s.ApplyAccounts(ctx, []userapi.AccountChange{
		{Email: a}, {Email: b}, {Email: a, Forgets: true},
		{Email: c}, {Email: c, Forgets: true},
		{Email: d, Forgets: true}, {Email: d},
	})
	if err != nil {
		t.Fatal(err)
	}
	wantAccount(t, s, a, false)
	wantAccount(t, s, b, true)
	wantAccount(t, s, c, false)
	wantAccount(t, s, d, true)
	register(t, s, pending(b, time.Now(), 1), lim, userapi.OutcomeAccount)
	mustRegister(t, s, pending(a, time.Now(), 1))
	// Applying the log again (a restart's rebuild) changes nothing.
	if err := s.ApplyAccounts(ctx, []userapi.AccountChange{{Email: b}, {Email: b}}); err != nil {
		t.Fatal(err)
	}
	wantAccount(t, s, b, true)
}

// A rebuild hands over thousands of changes at once; the last word on an
// address wins.
func testApplyManyAccounts(t *testing.T, s userapi.Store) {
	prefix := email(t)
	var changes []userapi.AccountChange
	for i := range 2500 {
		changes = append(changes, userapi.AccountChange{Email: fmt.Sprintf("%d-%s", i, prefix)})
	}
	changes = append(changes, userapi.AccountChange{Email: "7-" + prefix, Forgets: true})
	if err := s.ApplyAccounts(ctx, changes); err != nil {
		t.Fatal(err)
	}
	wantAccount(t, s, "2499-"+prefix, true)
	wantAccount(t, s, "0-"+prefix, true)
	wantAccount(t, s, "7-"+prefix, false)
}

func testForgottenRegisters(t *testing.T, s userapi.Store) {
	addr := email(t)
	verifyAccount(t, s, addr)
	if err := s.ApplyAccounts(ctx, []userapi.AccountChange{{Email: addr, Forgets: true}}); err != nil {
		t.Fatal(err)
	}
	wantAccount(t, s, addr, false)
	p := pending(addr, time.Now(), 2)
	p.FirstName = "Grace"
	if got := mustRegister(t, s, p); got.FirstName != "Grace" || got.UserID != p.UserID {
		t.Errorf("registered %+v, want a new registration with the new names and user id", got)
	}
	verifyAccount(t, s, email(t))
}

func testRestoreAfterConsume(t *testing.T, s userapi.Store) {
	addr := email(t)
	mustRegister(t, s, pending(addr, time.Now(), 1))
	consumed := right(t, s, addr, lim)
	consumed.Attempts--
	if err := s.Restore(ctx, consumed); err != nil {
		t.Fatal(err)
	}
	wantAccount(t, s, addr, false)
	checkSame(t, mustGet(t, s, addr), consumed)
	right(t, s, addr, lim)
	wantAccount(t, s, addr, true)
}

func testRestoreYieldsToNewer(t *testing.T, s userapi.Store) {
	addr := email(t)
	consumed := verifyAccount(t, s, addr)
	if err := s.ApplyAccounts(ctx, []userapi.AccountChange{{Email: addr, Forgets: true}}); err != nil {
		t.Fatal(err)
	}
	newer := mustRegister(t, s, pending(addr, time.Now(), 2))
	if err := s.Restore(ctx, consumed); err != nil {
		t.Fatal(err)
	}
	checkSame(t, mustGet(t, s, addr), newer)
}

func testRestoreExpired(t *testing.T, s userapi.Store) {
	addr := email(t)
	p := pending(addr, time.Now().Add(-ttl-time.Second), 1)
	p.Version = 42
	if err := s.Restore(ctx, p); err != nil {
		t.Fatal(err)
	}
	wantNotFound(t, s, addr)
}

func testRollbackNew(t *testing.T, s userapi.Store) {
	addr := email(t)
	w := register(t, s, pending(addr, time.Now(), 1), lim, userapi.OutcomeIssued)
	if err := s.Rollback(ctx, w.Pending, w.Replaced); err != nil {
		t.Fatal(err)
	}
	wantNotFound(t, s, addr)
	// Nothing is left to hold back a new registration.
	mustRegister(t, s, pending(addr, time.Now(), 2))
}

func testRollbackReplaced(t *testing.T, s userapi.Store) {
	addr := email(t)
	first := mustRegister(t, s, pending(addr, time.Now().Add(-4*interval), 1))
	attempts(t, s, addr, lim, lim.MaxAttempts)
	first.Attempts = lim.MaxAttempts
	w := register(t, s, pending(addr, time.Now().Add(-2*interval), 2), lim, userapi.OutcomeIssued)
	if err := s.Rollback(ctx, w.Pending, w.Replaced); err != nil {
		t.Fatal(err)
	}
	checkSame(t, mustGet(t, s, addr), first)

	w = resend(t, s, addr, newCode(time.Now(), 3), lim, userapi.OutcomeIssued)
	if err := s.Rollback(ctx, w.Pending, w.Replaced); err != nil {
		t.Fatal(err)
	}
	checkSame(t, mustGet(t, s, addr), first)
}

func testRollbackResent(t *testing.T, s userapi.Store) {
	addr := email(t)
	first := mustRegister(t, s, pending(addr, time.Now().Add(-2*interval), 1))
	w := register(t, s, pending(addr, time.Now(), 2), lim, userapi.OutcomeResent)
	// An attempt between the mail and its rollback stays counted.
	attempts(t, s, addr, lim, 1)
	if err := s.Rollback(ctx, w.Pending, w.Replaced); err != nil {
		t.Fatal(err)
	}
	want := first
	want.Attempts = 1
	checkSame(t, mustGet(t, s, addr), want)
}

func testRollbackLeavesNewer(t *testing.T, s userapi.Store) {
	addr := email(t)
	w := register(t, s, pending(addr, time.Now().Add(-4*interval), 1), lim, userapi.OutcomeIssued)
	attempts(t, s, addr, lim, lim.MaxAttempts)
	second := register(t, s, pending(addr, time.Now(), 2), lim, userapi.OutcomeIssued).Pending
	if err := s.Rollback(ctx, w.Pending, w.Replaced); err != nil {
		t.Fatal(err)
	}
	checkSame(t, mustGet(t, s, addr), second)
}

func testExpiry(t *testing.T, s userapi.Store) {
	addr := email(t)
	const short = 300 * time.Millisecond
	now := time.Now()
	p := pending(addr, now, 1)
	p.ExpiresAt = now.Add(short)
	stored := mustRegister(t, s, p)
	time.Sleep(short + 200*time.Millisecond)
	wantNotFound(t, s, addr)
	wantAttemptErr(t, s, addr, lim, userapi.ErrNotFound)
	if _, err := s.Consume(ctx, userapi.Pending{Email: addr, Version: stored.Version, Attempts: 1}); !errors.Is(err, userapi.ErrNotFound) {
		t.Errorf("Consume after expiry: %v, want ErrNotFound", err)
	}
	if _, err := s.Resend(ctx, addr, newCode(time.Now(), 2), lim); !errors.Is(err, userapi.ErrNotFound) {
		t.Errorf("Resend after expiry: %v, want ErrNotFound", err)
	}
	// An expired record does not count against the resend interval, and is
	// not "replaced".
	if w := register(t, s, pending(addr, time.Now(), 3), lim, userapi.OutcomeIssued); w.Replaced != nil {
		t.Errorf("replaced = %+v, want nil after expiry", w.Replaced)
	}
}

func testAddressesIndependent(t *testing.T, s userapi.Store) {
	a, b := email(t), email(t)
	pa := mustRegister(t, s, pending(a, time.Now(), 1))
	pb := mustRegister(t, s, pending(b, time.Now(), 2))
	if pa.Version == pb.Version && pa.UserID == pb.UserID {
		t.Error("two addresses share a record")
	}
	attempts(t, s, a, limits(1, 1), 1)
	wantAttemptErr(t, s, a, limits(5, 1), userapi.ErrLocked)
	if _, err := s.Consume(ctx, userapi.Pending{Email: a, Version: pa.Version, Attempts: 1}); err != nil {
		t.Fatal(err)
	}
	checkSame(t, mustGet(t, s, b), pb)
	wantAccount(t, s, b, false)
	attempts(t, s, b, limits(5, 1), 1)
}

func testCopiesReturned(t *testing.T, s userapi.Store) {
	addr := email(t)
	p := pending(addr, time.Now(), 1)
	stored := mustRegister(t, s, p)
	p.MAC[0] ^= 0xff
	p.Sealed.Ciphertext[0] ^= 0xff
	stored.MAC[0] ^= 0xff
	stored.Sealed.Nonce[0] ^= 0xff
	got := mustGet(t, s, addr)
	got.MAC[0] ^= 0xff
	if again := mustGet(t, s, addr); !bytes.Equal(again.MAC, mac(1)) || !bytes.Equal(again.Sealed.Ciphertext, sealed(1).Ciphertext) ||
		!bytes.Equal(again.Sealed.Nonce, sealed(1).Nonce) {
		t.Error("changing a record passed in or returned changed the stored one")
	}
}

func testLen(t *testing.T, s userapi.Store) {
	before, err := s.Len(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		mustRegister(t, s, pending(email(t), time.Now(), byte(i)))
	}
	after, err := s.Len(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A shared store may be written by others meanwhile: at least ours.
	if after-before < 3 {
		t.Errorf("Len went from %d to %d after 3 registrations", before, after)
	}
}

// parallel runs fn(i) for i in [0,n) in n goroutines released at once.
func parallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			fn(i)
		}()
	}
	close(start)
	wg.Wait()
}

// linkStore is the store's userapi.LinkStore; every implementation of the
// package has one.
func linkStore(t *testing.T, s userapi.Store) userapi.LinkStore {
	t.Helper()
	ls, ok := s.(userapi.LinkStore)
	if !ok {
		t.Fatalf("%T does not implement userapi.LinkStore", s)
	}
	return ls
}

// A link points at one version of one record: a new code leaves it
// pointing at a version Consume no longer accepts, and Consume of its own
// version succeeds once.
func testLinkFollowsItsCode(t *testing.T, s userapi.Store) {
	ls := linkStore(t, s)
	addr := email(t)
	stored := mustRegister(t, s, pending(addr, time.Now().Add(-2*interval), 1))
	link := mac(0xA1)
	if err := ls.PutLink(ctx, link, addr, stored.Version, stored.ExpiresAt); err != nil {
		t.Fatal(err)
	}
	gotAddr, gotVersion, err := ls.Link(ctx, link)
	if err != nil || gotAddr != addr || gotVersion != stored.Version {
		t.Fatalf("Link = %q, %d, %v; want %q, %d", gotAddr, gotVersion, err, addr, stored.Version)
	}
	if _, _, err := ls.Link(ctx, mac(0xA2)); !errors.Is(err, userapi.ErrNotFound) {
		t.Errorf("Link of an unknown MAC: %v, want ErrNotFound", err)
	}
	// The code's attempts are used up, so a resend stores a new code: the
	// old link's version is dead.
	attempts(t, s, addr, lim, lim.MaxAttempts)
	resent := resend(t, s, addr, userapi.NewCode{MACKeyID: "k1", MAC: mac(2), ExpiresAt: time.Now().Add(ttl), SentAt: time.Now()}, lim, userapi.OutcomeIssued).Pending
	if _, err := s.Consume(ctx, userapi.Pending{Email: addr, Version: gotVersion}); !errors.Is(err, userapi.ErrNotFound) {
		t.Errorf("Consume with the replaced code's link: %v, want ErrNotFound", err)
	}
	link2 := mac(0xA3)
	if err := ls.PutLink(ctx, link2, addr, resent.Version, resent.ExpiresAt); err != nil {
		t.Fatal(err)
	}
	_, v2, err := ls.Link(ctx, link2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Consume(ctx, userapi.Pending{Email: addr, Version: v2}); err != nil {
		t.Fatalf("Consume with the current link: %v", err)
	}
	if _, err := s.Consume(ctx, userapi.Pending{Email: addr, Version: v2}); !errors.Is(err, userapi.ErrNotFound) {
		t.Errorf("second Consume with the link: %v, want ErrNotFound", err)
	}
}

func testLinkExpires(t *testing.T, s userapi.Store) {
	ls := linkStore(t, s)
	addr := email(t)
	link := mac(0xB1)
	if err := ls.PutLink(ctx, link, addr, 1, time.Now().Add(300*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if err := ls.PutLink(ctx, mac(0xB2), addr, 1, time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ls.Link(ctx, mac(0xB2)); !errors.Is(err, userapi.ErrNotFound) {
		t.Errorf("a link put after its expiry: %v, want ErrNotFound", err)
	}
	// Polled with a generous bound: only "eventually gone" is asserted.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, _, err := ls.Link(ctx, link)
		if errors.Is(err, userapi.ErrNotFound) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the link outlived its expiry by 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A notice to an account is taken at most once per interval, measured by
// the caller's clock: within it every claim fails, from its end one
// succeeds again.
func testNoticeOncePerInterval(t *testing.T, s userapi.Store) {
	addr := email(t)
	now := time.Now()
	c, ok, err := s.TakeNotice(ctx, addr, now, interval)
	if err != nil || !ok {
		t.Fatalf("first TakeNotice: %v, %v; want a claim", ok, err)
	}
	if c.Email != addr || c.ID == "" || !sameTime(c.Until, now.Add(interval)) {
		t.Errorf("claim %+v: want the address, an id, and until now + interval", c)
	}
	for _, at := range []time.Time{now, now.Add(time.Millisecond), now.Add(interval / 2), now.Add(interval - time.Millisecond)} {
		if _, ok, err := s.TakeNotice(ctx, addr, at, interval); err != nil || ok {
			t.Errorf("TakeNotice %s into the interval: %v, %v; want none", at.Sub(now), ok, err)
		}
	}
	c2, ok, err := s.TakeNotice(ctx, addr, now.Add(interval), interval)
	if err != nil || !ok {
		t.Fatalf("TakeNotice once the interval passed: %v, %v; want a claim", ok, err)
	}
	if c2.ID == c.ID {
		t.Error("two claims with one id")
	}
	if _, ok, _ := s.TakeNotice(ctx, addr, now.Add(interval+interval/2), interval); ok {
		t.Error("a second claim within the new interval")
	}
}

// Two registers of one account at once send one notice, however many.
func testNoticeConcurrent(t *testing.T, s userapi.Store) {
	addr := email(t)
	now := time.Now()
	var won, failed atomic.Int32
	parallel(20, func(int) {
		_, ok, err := s.TakeNotice(ctx, addr, now, interval)
		switch {
		case err != nil:
			failed.Add(1)
		case ok:
			won.Add(1)
		}
	})
	if won.Load() != 1 || failed.Load() != 0 {
		t.Errorf("20 concurrent TakeNotice: %d claims, %d errors; want 1 and 0", won.Load(), failed.Load())
	}
}

// A released claim lets the next notice go at once; releasing a claim
// that is no longer the address's (a later one replaced it) changes
// nothing.
func testNoticeRelease(t *testing.T, s userapi.Store) {
	addr := email(t)
	now := time.Now()
	c, ok, err := s.TakeNotice(ctx, addr, now, interval)
	if err != nil || !ok {
		t.Fatalf("TakeNotice: %v, %v", ok, err)
	}
	if err := s.ReleaseNotice(ctx, c); err != nil {
		t.Fatal(err)
	}
	c2, ok, err := s.TakeNotice(ctx, addr, now.Add(time.Second), interval)
	if err != nil || !ok {
		t.Fatalf("TakeNotice after the release: %v, %v; want a claim", ok, err)
	}
	// The first claim is gone: releasing it again must not free c2's.
	if err := s.ReleaseNotice(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.TakeNotice(ctx, addr, now.Add(2*time.Second), interval); ok {
		t.Error("releasing a stale claim freed the current one")
	}
	if err := s.ReleaseNotice(ctx, c2); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseNotice(ctx, userapi.NoticeClaim{Email: email(t), ID: "unknown"}); err != nil {
		t.Errorf("ReleaseNotice of an address without a claim: %v", err)
	}
}

func testNoticeAddressesIndependent(t *testing.T, s userapi.Store) {
	a, b := email(t), email(t)
	now := time.Now()
	if _, ok, err := s.TakeNotice(ctx, a, now, interval); err != nil || !ok {
		t.Fatalf("TakeNotice a: %v, %v", ok, err)
	}
	if _, ok, err := s.TakeNotice(ctx, b, now, interval); err != nil || !ok {
		t.Errorf("TakeNotice b after a: %v, %v; want a claim", ok, err)
	}
}

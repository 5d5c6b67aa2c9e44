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
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/countersign/countersign/userapi"
)

// Run runs the whole contract as subtests of t.
func Run(t *testing.T, newStore func(t *testing.T) userapi.Store) {
	tests := []struct {
		name string
		fn   func(*testing.T, userapi.Store)
	}{
		{"RegisterNew", testRegisterNew},
		{"RegisterReplacesKeepingUserID", testRegisterReplaces},
		{"RegisterTooSoon", testRegisterTooSoon},
		{"ResendUnknown", testResendUnknown},
		{"ResendReplacesCode", testResendReplacesCode},
		{"ResendTooSoon", testResendTooSoon},
		{"AttemptCountsAndVoids", testAttemptCountsAndVoids},
		{"NewCodeRevivesVoid", testNewCodeRevivesVoid},
		{"ConcurrentAttemptsBounded", testConcurrentAttemptsBounded},
		{"ConsumeOnce", testConsumeOnce},
		{"ConsumeWrongVersion", testConsumeWrongVersion},
		{"ConcurrentConsumeExactlyOne", testConcurrentConsume},
		{"RestoreAfterConsume", testRestoreAfterConsume},
		{"RestoreYieldsToNewer", testRestoreYieldsToNewer},
		{"RestoreExpired", testRestoreExpired},
		{"RollbackNew", testRollbackNew},
		{"RollbackReplaced", testRollbackReplaced},
		{"RollbackLeavesNewerAlone", testRollbackLeavesNewer},
		{"Expiry", testExpiry},
		{"AddressesIndependent", testAddressesIndependent},
		{"CopiesReturned", testCopiesReturned},
		{"Len", testLen},
		{"LinkFollowsItsCode", testLinkFollowsItsCode},
		{"LinkExpires", testLinkExpires},
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

func email(t *testing.T) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "storetest-" + hex.EncodeToString(b) + "@example.com"
}

func mac(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

// pending returns a record for addr whose code was sent at sentAt.
func pending(addr string, sentAt time.Time, m byte) userapi.Pending {
	return userapi.Pending{
		Email:     addr,
		UserID:    "user-" + hex.EncodeToString(mac(m)[:4]),
		FirstName: "Ada",
		LastName:  "Lovelace",
		MACKeyID:  "k1",
		MAC:       mac(m),
		ExpiresAt: sentAt.Add(ttl),
		SentAt:    sentAt,
	}
}

func mustRegister(t *testing.T, s userapi.Store, p userapi.Pending) (userapi.Pending, *userapi.Pending) {
	t.Helper()
	stored, replaced, err := s.Register(ctx, p, interval)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	return stored, replaced
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

func sameTime(a, b time.Time) bool { return a.Equal(b) || a.Sub(b).Abs() < time.Millisecond }

func checkSame(t *testing.T, got, want userapi.Pending) {
	t.Helper()
	if got.Email != want.Email || got.UserID != want.UserID || got.FirstName != want.FirstName ||
		got.LastName != want.LastName || got.MACKeyID != want.MACKeyID || !bytes.Equal(got.MAC, want.MAC) ||
		!sameTime(got.ExpiresAt, want.ExpiresAt) || !sameTime(got.SentAt, want.SentAt) ||
		got.Attempts != want.Attempts || got.Version != want.Version {
		t.Fatalf("record\n got %#v\nwant %#v", got, want)
	}
}

func testRegisterNew(t *testing.T, s userapi.Store) {
	addr := email(t)
	p := pending(addr, time.Now(), 1)
	p.Attempts, p.Version = 7, 99 // the store decides both
	stored, replaced, err := s.Register(ctx, p, interval)
	if err != nil {
		t.Fatal(err)
	}
	if replaced != nil {
		t.Errorf("replaced = %+v for a new address", replaced)
	}
	if stored.Attempts != 0 || stored.Version == 0 || stored.Version == 99 {
		t.Errorf("stored attempts %d version %d: want 0 and a store-chosen nonzero version", stored.Attempts, stored.Version)
	}
	want := p
	want.Attempts, want.Version = 0, stored.Version
	checkSame(t, stored, want)
	checkSame(t, mustGet(t, s, addr), want)
}

func testRegisterReplaces(t *testing.T, s userapi.Store) {
	addr := email(t)
	t0 := time.Now().Add(-2 * interval)
	first, _ := mustRegister(t, s, pending(addr, t0, 1))
	if _, err := s.Attempt(ctx, addr, 5); err != nil {
		t.Fatal(err)
	}
	second := pending(addr, time.Now(), 2)
	second.UserID = "someone-else"
	second.FirstName = "Grace"
	stored, replaced := mustRegister(t, s, second)
	if replaced == nil {
		t.Fatal("replaced = nil, want the first record")
	}
	wantOld := first
	wantOld.Attempts = 1
	checkSame(t, *replaced, wantOld)
	if stored.UserID != first.UserID {
		t.Errorf("user id %q, want the first registration's %q kept", stored.UserID, first.UserID)
	}
	if stored.FirstName != "Grace" || !bytes.Equal(stored.MAC, mac(2)) || stored.Attempts != 0 {
		t.Errorf("stored %+v: want the new names and code, attempts reset", stored)
	}
	if stored.Version == first.Version {
		t.Error("version unchanged by a new code")
	}
	checkSame(t, mustGet(t, s, addr), stored)
}

func testRegisterTooSoon(t *testing.T, s userapi.Store) {
	addr := email(t)
	t0 := time.Now()
	first, _ := mustRegister(t, s, pending(addr, t0, 1))
	_, _, err := s.Register(ctx, pending(addr, t0.Add(interval/4), 2), interval)
	var soon *userapi.TooSoonError
	if !errors.As(err, &soon) || !errors.Is(err, userapi.ErrTooSoon) {
		t.Fatalf("Register within the interval: %v, want *TooSoonError", err)
	}
	if want := interval * 3 / 4; soon.RetryAfter.Round(time.Millisecond) != want {
		t.Errorf("RetryAfter = %v, want %v", soon.RetryAfter, want)
	}
	checkSame(t, mustGet(t, s, addr), first)
	// At exactly the interval it is allowed.
	mustRegister(t, s, pending(addr, t0.Add(interval), 3))
}

func testResendUnknown(t *testing.T, s userapi.Store) {
	addr := email(t)
	_, _, err := s.Resend(ctx, addr, userapi.NewCode{MACKeyID: "k1", MAC: mac(1), ExpiresAt: time.Now().Add(ttl), SentAt: time.Now()}, interval)
	if !errors.Is(err, userapi.ErrNotFound) {
		t.Fatalf("Resend of an unknown address: %v, want ErrNotFound", err)
	}
	wantNotFound(t, s, addr)
}

func testResendReplacesCode(t *testing.T, s userapi.Store) {
	addr := email(t)
	first, _ := mustRegister(t, s, pending(addr, time.Now().Add(-2*interval), 1))
	if _, err := s.Attempt(ctx, addr, 5); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	c := userapi.NewCode{MACKeyID: "k2", MAC: mac(2), ExpiresAt: now.Add(ttl), SentAt: now}
	stored, replaced, err := s.Resend(ctx, addr, c, interval)
	if err != nil {
		t.Fatal(err)
	}
	want := first
	want.MACKeyID, want.MAC, want.ExpiresAt, want.SentAt = c.MACKeyID, c.MAC, c.ExpiresAt, c.SentAt
	want.Attempts, want.Version = 0, stored.Version
	if stored.Version == first.Version {
		t.Error("version unchanged by a new code")
	}
	checkSame(t, stored, want)
	old := first
	old.Attempts = 1
	if replaced == nil {
		t.Fatal("replaced = nil")
	}
	checkSame(t, *replaced, old)
}

func testResendTooSoon(t *testing.T, s userapi.Store) {
	addr := email(t)
	t0 := time.Now()
	first, _ := mustRegister(t, s, pending(addr, t0, 1))
	_, _, err := s.Resend(ctx, addr, userapi.NewCode{MACKeyID: "k1", MAC: mac(2), ExpiresAt: t0.Add(ttl), SentAt: t0.Add(time.Second)}, interval)
	var soon *userapi.TooSoonError
	if !errors.As(err, &soon) {
		t.Fatalf("Resend within the interval: %v, want *TooSoonError", err)
	}
	if want := interval - time.Second; soon.RetryAfter.Round(time.Millisecond) != want {
		t.Errorf("RetryAfter = %v, want %v", soon.RetryAfter, want)
	}
	checkSame(t, mustGet(t, s, addr), first)
}

func testAttemptCountsAndVoids(t *testing.T, s userapi.Store) {
	addr := email(t)
	if _, err := s.Attempt(ctx, addr, 3); !errors.Is(err, userapi.ErrNotFound) {
		t.Fatalf("Attempt on unknown address: %v, want ErrNotFound", err)
	}
	stored, _ := mustRegister(t, s, pending(addr, time.Now(), 1))
	for i := 1; i <= 3; i++ {
		p, err := s.Attempt(ctx, addr, 3)
		if err != nil {
			t.Fatalf("attempt %d: %v", i, err)
		}
		want := stored
		want.Attempts = i
		checkSame(t, p, want)
	}
	for i := 0; i < 2; i++ {
		if _, err := s.Attempt(ctx, addr, 3); !errors.Is(err, userapi.ErrTooManyAttempts) {
			t.Fatalf("attempt past the limit: %v, want ErrTooManyAttempts", err)
		}
	}
	if p := mustGet(t, s, addr); p.Attempts != 3 {
		t.Errorf("attempts = %d after the limit, want it to stay 3", p.Attempts)
	}
	// A void record is still the current code: Consume of its version works
	// only for callers that began an attempt before the limit.
	if _, err := s.Consume(ctx, addr, stored.Version); err != nil {
		t.Errorf("Consume of a void record's version: %v", err)
	}
}

func testNewCodeRevivesVoid(t *testing.T, s userapi.Store) {
	addr := email(t)
	mustRegister(t, s, pending(addr, time.Now().Add(-3*interval), 1))
	for i := 0; i < 2; i++ {
		if _, err := s.Attempt(ctx, addr, 2); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Attempt(ctx, addr, 2); !errors.Is(err, userapi.ErrTooManyAttempts) {
		t.Fatalf("want void, got %v", err)
	}
	now := time.Now().Add(-interval - time.Second)
	if _, _, err := s.Resend(ctx, addr, userapi.NewCode{MACKeyID: "k1", MAC: mac(2), ExpiresAt: now.Add(ttl), SentAt: now}, interval); err != nil {
		t.Fatalf("Resend of a void record: %v", err)
	}
	if p, err := s.Attempt(ctx, addr, 2); err != nil || p.Attempts != 1 {
		t.Fatalf("Attempt after Resend: %+v, %v; want attempts 1", p, err)
	}
	if _, err := s.Attempt(ctx, addr, 2); err != nil {
		t.Fatal(err)
	}
	mustRegister(t, s, pending(addr, time.Now(), 3))
	if p, err := s.Attempt(ctx, addr, 2); err != nil || p.Attempts != 1 {
		t.Fatalf("Attempt after Register: %+v, %v; want attempts 1", p, err)
	}
}

func testConcurrentAttemptsBounded(t *testing.T, s userapi.Store) {
	addr := email(t)
	mustRegister(t, s, pending(addr, time.Now(), 1))
	const n, limit = 200, 5
	var ok, void atomic.Int32
	seen := make([]atomic.Bool, limit+1)
	parallel(n, func(int) {
		p, err := s.Attempt(ctx, addr, limit)
		switch {
		case err == nil:
			ok.Add(1)
			if p.Attempts < 1 || p.Attempts > limit || seen[p.Attempts].Swap(true) {
				t.Errorf("attempt number %d returned twice or out of range", p.Attempts)
			}
		case errors.Is(err, userapi.ErrTooManyAttempts):
			void.Add(1)
		default:
			t.Errorf("Attempt: %v", err)
		}
	})
	if ok.Load() != limit || void.Load() != n-limit {
		t.Errorf("%d attempts began and %d refused, want %d and %d", ok.Load(), void.Load(), limit, n-limit)
	}
}

func testConsumeOnce(t *testing.T, s userapi.Store) {
	addr := email(t)
	stored, _ := mustRegister(t, s, pending(addr, time.Now(), 1))
	got, err := s.Consume(ctx, addr, stored.Version)
	if err != nil {
		t.Fatal(err)
	}
	checkSame(t, got, stored)
	wantNotFound(t, s, addr)
	if _, err := s.Consume(ctx, addr, stored.Version); !errors.Is(err, userapi.ErrNotFound) {
		t.Errorf("second Consume: %v, want ErrNotFound", err)
	}
}

func testConsumeWrongVersion(t *testing.T, s userapi.Store) {
	addr := email(t)
	if _, err := s.Consume(ctx, addr, 1); !errors.Is(err, userapi.ErrNotFound) {
		t.Errorf("Consume of unknown address: %v, want ErrNotFound", err)
	}
	first, _ := mustRegister(t, s, pending(addr, time.Now().Add(-2*interval), 1))
	second, _ := mustRegister(t, s, pending(addr, time.Now(), 2))
	if _, err := s.Consume(ctx, addr, first.Version); !errors.Is(err, userapi.ErrNotFound) {
		t.Errorf("Consume of a replaced version: %v, want ErrNotFound", err)
	}
	checkSame(t, mustGet(t, s, addr), second)
}

func testConcurrentConsume(t *testing.T, s userapi.Store) {
	addr := email(t)
	stored, _ := mustRegister(t, s, pending(addr, time.Now(), 1))
	var won atomic.Int32
	parallel(500, func(int) {
		_, err := s.Consume(ctx, addr, stored.Version)
		switch {
		case err == nil:
			won.Add(1)
		case !errors.Is(err, userapi.ErrNotFound):
			t.Errorf("Consume: %v", err)
		}
	})
	if won.Load() != 1 {
		t.Errorf("%d concurrent Consume calls succeeded, want exactly 1", won.Load())
	}
}

func testRestoreAfterConsume(t *testing.T, s userapi.Store) {
	addr := email(t)
	stored, _ := mustRegister(t, s, pending(addr, time.Now(), 1))
	if _, err := s.Attempt(ctx, addr, 5); err != nil {
		t.Fatal(err)
	}
	consumed, err := s.Consume(ctx, addr, stored.Version)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Restore(ctx, consumed); err != nil {
		t.Fatal(err)
	}
	checkSame(t, mustGet(t, s, addr), consumed)
	if _, err := s.Consume(ctx, addr, stored.Version); err != nil {
		t.Errorf("Consume after Restore: %v", err)
	}
}

func testRestoreYieldsToNewer(t *testing.T, s userapi.Store) {
	addr := email(t)
	stored, _ := mustRegister(t, s, pending(addr, time.Now().Add(-2*interval), 1))
	consumed, err := s.Consume(ctx, addr, stored.Version)
	if err != nil {
		t.Fatal(err)
	}
	newer, _ := mustRegister(t, s, pending(addr, time.Now(), 2))
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
	stored, replaced := mustRegister(t, s, pending(addr, time.Now(), 1))
	if err := s.Rollback(ctx, stored, replaced); err != nil {
		t.Fatal(err)
	}
	wantNotFound(t, s, addr)
	// Nothing is left to hold back a new registration.
	mustRegister(t, s, pending(addr, time.Now(), 2))
}

func testRollbackReplaced(t *testing.T, s userapi.Store) {
	addr := email(t)
	first, _ := mustRegister(t, s, pending(addr, time.Now().Add(-2*interval), 1))
	second, replaced := mustRegister(t, s, pending(addr, time.Now(), 2))
	if err := s.Rollback(ctx, second, replaced); err != nil {
		t.Fatal(err)
	}
	checkSame(t, mustGet(t, s, addr), first)

	now := time.Now()
	resent, replaced, err := s.Resend(ctx, addr, userapi.NewCode{MACKeyID: "k1", MAC: mac(3), ExpiresAt: now.Add(ttl), SentAt: now}, interval)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Rollback(ctx, resent, replaced); err != nil {
		t.Fatal(err)
	}
	checkSame(t, mustGet(t, s, addr), first)
}

func testRollbackLeavesNewer(t *testing.T, s userapi.Store) {
	addr := email(t)
	first, replaced := mustRegister(t, s, pending(addr, time.Now().Add(-2*interval), 1))
	second, _ := mustRegister(t, s, pending(addr, time.Now(), 2))
	if err := s.Rollback(ctx, first, replaced); err != nil {
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
	stored, _ := mustRegister(t, s, p)
	time.Sleep(short + 200*time.Millisecond)
	wantNotFound(t, s, addr)
	if _, err := s.Attempt(ctx, addr, 5); !errors.Is(err, userapi.ErrNotFound) {
		t.Errorf("Attempt after expiry: %v, want ErrNotFound", err)
	}
	if _, err := s.Consume(ctx, addr, stored.Version); !errors.Is(err, userapi.ErrNotFound) {
		t.Errorf("Consume after expiry: %v, want ErrNotFound", err)
	}
	now = time.Now()
	if _, _, err := s.Resend(ctx, addr, userapi.NewCode{MACKeyID: "k1", MAC: mac(2), ExpiresAt: now.Add(ttl), SentAt: now}, interval); !errors.Is(err, userapi.ErrNotFound) {
		t.Errorf("Resend after expiry: %v, want ErrNotFound", err)
	}
	// An expired record does not count against the resend interval, and is
	// not "replaced".
	if _, replaced := mustRegister(t, s, pending(addr, time.Now(), 3)); replaced != nil {
		t.Errorf("replaced = %+v, want nil after expiry", replaced)
	}
}

func testAddressesIndependent(t *testing.T, s userapi.Store) {
	a, b := email(t), email(t)
	pa, _ := mustRegister(t, s, pending(a, time.Now(), 1))
	pb, _ := mustRegister(t, s, pending(b, time.Now(), 2))
	if pa.Version == pb.Version && pa.UserID == pb.UserID {
		t.Error("two addresses share a record")
	}
	if _, err := s.Attempt(ctx, a, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Consume(ctx, a, pa.Version); err != nil {
		t.Fatal(err)
	}
	checkSame(t, mustGet(t, s, b), pb)
}

func testCopiesReturned(t *testing.T, s userapi.Store) {
	addr := email(t)
	p := pending(addr, time.Now(), 1)
	stored, _ := mustRegister(t, s, p)
	p.MAC[0] ^= 0xff
	stored.MAC[0] ^= 0xff
	got := mustGet(t, s, addr)
	got.MAC[0] ^= 0xff
	if again := mustGet(t, s, addr); !bytes.Equal(again.MAC, mac(1)) {
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
	stored, _ := mustRegister(t, s, pending(addr, time.Now().Add(-2*interval), 1))
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
	// A resend replaces the code: the old link's version is dead.
	resent, _, err := s.Resend(ctx, addr, userapi.NewCode{MACKeyID: "k1", MAC: mac(2), ExpiresAt: time.Now().Add(ttl), SentAt: time.Now()}, interval)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Consume(ctx, addr, gotVersion); !errors.Is(err, userapi.ErrNotFound) {
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
	if _, err := s.Consume(ctx, addr, v2); err != nil {
		t.Fatalf("Consume with the current link: %v", err)
	}
	if _, err := s.Consume(ctx, addr, v2); !errors.Is(err, userapi.ErrNotFound) {
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

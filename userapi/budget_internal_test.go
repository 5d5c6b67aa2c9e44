package userapi

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestMemoryBudgetBound is the flood of distinct mailboxes: past the
// bound the oldest are forgotten, a mailbox whose budget is spent stays
// held while it is among the newer ones, and sends leave the window by
// time without any scan.
func TestMemoryBudgetBound(t *testing.T) {
	ctx := context.Background()
	b := NewMemoryBudget(2, 0)
	b.maxMailboxes = 1000
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	victim := "victim@example.com"
	for i := range 2 {
		if _, ok, _, _ := b.Spend(ctx, victim, t0.Add(time.Duration(i)*time.Millisecond)); !ok {
			t.Fatalf("victim's send %d refused", i+1)
		}
	}
	at := t0.Add(time.Second)
	for i := range 5000 {
		at = at.Add(time.Millisecond)
		if _, ok, _, _ := b.Spend(ctx, fmt.Sprintf("m%d@example.com", i), at); !ok {
			t.Fatalf("send to a new mailbox %d refused", i)
		}
		if n := len(b.mailboxes); n > b.maxMailboxes {
			t.Fatalf("%d mailboxes tracked, bound %d", n, b.maxMailboxes)
		}
		if i < 900 {
			// The victim is among the newest 1,000: still held.
			if _, ok, held, _ := b.Spend(ctx, victim, at); ok || held != BudgetMailbox {
				t.Fatalf("after %d other mailboxes: victim ok=%v held=%q, want held by its mailbox budget", i+1, ok, held)
			}
		}
	}
	// Forgotten: the price of the bound, paid only after 1,000 others.
	if _, ok, _, _ := b.Spend(ctx, victim, at); !ok {
		t.Error("the victim was not forgotten after 5,000 newer mailboxes")
	}
	if live := len(b.sends) - b.head; live > 2*b.maxMailboxes+10 {
		t.Errorf("%d sends queued for %d mailboxes", live, len(b.mailboxes))
	}

	// A day later every send has left the window.
	later := at.Add(mailboxWindow + time.Second)
	if _, ok, _, _ := b.Spend(ctx, "late@example.com", later); !ok {
		t.Fatal("a day later: send refused")
	}
	if len(b.mailboxes) != 1 || len(b.sends)-b.head != 1 {
		t.Errorf("a day later: %d mailboxes, %d sends tracked; want 1 and 1", len(b.mailboxes), len(b.sends)-b.head)
	}
}

// TestMemoryBudgetWindowSlides checks that a mailbox's sends leave one by
// one, each 24 hours after it was made, whatever other mailboxes do.
func TestMemoryBudgetWindowSlides(t *testing.T) {
	ctx := context.Background()
	b := NewMemoryBudget(2, 0)
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	m := "a@example.com"
	b.Spend(ctx, m, t0)
	b.Spend(ctx, "other@example.com", t0.Add(time.Hour))
	b.Spend(ctx, m, t0.Add(2*time.Hour))
	if _, ok, _, _ := b.Spend(ctx, m, t0.Add(23*time.Hour)); ok {
		t.Fatal("a third send within the day")
	}
	if _, ok, _, _ := b.Spend(ctx, m, t0.Add(24*time.Hour+time.Second)); !ok {
		t.Fatal("the first send left the window, and no send was allowed")
	}
	if _, ok, _, _ := b.Spend(ctx, m, t0.Add(25*time.Hour)); ok {
		t.Fatal("the second send is still in the window, yet a send was allowed")
	}
}

// BenchmarkMemoryBudgetSpendAtBound is a register's Spend once the bound's
// worth of mailboxes got mail within the day: each op is a new mailbox.
func BenchmarkMemoryBudgetSpendAtBound(b *testing.B) {
	ctx := context.Background()
	bud := NewMemoryBudget(10, 0)
	now := time.Now()
	names := make([]string, maxBudgetMailboxes+b.N)
	for i := range names {
		names[i] = fmt.Sprintf("user%d@example.com", i)
	}
	for i := range maxBudgetMailboxes {
		bud.Spend(ctx, names[i], now)
	}
	b.ResetTimer()
	for i := range b.N {
		if _, ok, _, _ := bud.Spend(ctx, names[maxBudgetMailboxes+i], now); !ok {
			b.Fatal("refused")
		}
	}
}

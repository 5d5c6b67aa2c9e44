package userapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"hash/maphash"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Mail budgets (issue 14): whatever the per-client rate limit lets through,
// one mailbox gets at most CODE_MAX_SENDS_PER_DAY code mails in 24 hours,
// and the platform at most CODE_MAX_SENDS_PER_HOUR in an hour (when set).
// Past either, register and resend answer as usual (202) but send nothing:
// the answer must not tell a caller that someone else used the budget.

// Budget names, the label values of countersign_code_mails_held_back_total.
const (
	BudgetMailbox  = "mailbox"
	BudgetPlatform = "platform"
)

// Budget windows.
const (
	mailboxWindow  = 24 * time.Hour
	platformWindow = time.Hour
)

// MailBudget bounds the code mails sent, per mailbox (see Mailbox) in a
// sliding 24 hours and, when its hourly limit is not 0, across the platform
// in a sliding hour.
//
// All methods must be safe for concurrent use, and each is one atomic step:
// two replicas spending the last send of a mailbox at once see one success.
// Times come from the caller (the replica's clock), as for the Store.
type MailBudget interface {
	// Spend takes one send for mailbox at now from every budget, or from
	// none: when a budget is used up nothing is taken, ok is false and held
	// names the budget (BudgetMailbox or BudgetPlatform). A send that was
	// not taken must not be mailed. An error means the budget could not be
	// read (Redis down): the caller fails the request rather than mail
	// without a budget.
	Spend(ctx context.Context, mailbox string, now time.Time) (s Spent, ok bool, held string, err error)

	// Refund gives back a send whose mail could not be published, so a
	// broker outage does not use up a person's budget. Refunding what was
	// already refunded, or has left the window, does nothing.
	Refund(ctx context.Context, s Spent) error
}

// Spent is one send taken from a MailBudget, for Refund.
type Spent struct {
	Mailbox string
	// ID tells this send apart from every other of the mailbox.
	ID string
	// At is when it was taken.
	At time.Time
}

// Mailbox is the budget key of a normalized address: the address with any
// +tag removed from the local part and, for gmail.com and googlemail.com
// (one mailbox service, two names), the dots in the local part ignored.
// Addresses themselves stay distinct (victim+1@ and victim+2@ are two
// pending registrations); only the budget is shared, because the mail of
// both lands in one inbox.
func Mailbox(email string) string {
	at := strings.LastIndexByte(email, '@')
	if at < 0 {
		return email
	}
	local, domain := email[:at], email[at+1:]
	if i := strings.IndexByte(local, '+'); i > 0 {
		local = local[:i]
	}
	if domain == "gmail.com" || domain == "googlemail.com" {
		local = strings.ReplaceAll(local, ".", "")
		domain = "gmail.com"
	}
	return local + "@" + domain
}

func newSpendID(now time.Time) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return now.UTC().Format("20060102T150405.000000") + "-" + hex.EncodeToString(b[:])
}

// maxBudgetMailboxes bounds the mailboxes a MemoryBudget tracks (4.7 MB
// measured at the bound, one send each). Mailboxes leave when their last
// send leaves the window; past the bound, the one whose oldest send is
// oldest is forgotten first. Forgetting a mailbox gives it its daily
// budget back early, so an attacker who wants one more mail for a victim
// must first get mail sent to this many other mailboxes (docs/security.md,
// "Bounds of the in-process tables").
const maxBudgetMailboxes = 100_000

// MemoryBudget is the MailBudget of one process: a sliding log of send
// times per mailbox, and one for the platform. With several replicas use
// RedisStore.MailBudget, which they share.
//
// Every step is O(1) amortized, whatever the number of mailboxes: sends
// leave the window through a queue in time order rather than by a scan of
// the mailboxes, which at the bound would have run on every send and made
// a register cost some milliseconds of CPU under the lock.
//
// Its tables hold no pointers for the garbage collector to follow: a
// mailbox is known by a 64-bit hash of its name (a random seed per
// process), and times are Unix nanoseconds. Two mailboxes share a budget
// only if their hashes collide: with the bound's 100,000 mailboxes, a
// chance of about 3 in 10^10.
type MemoryBudget struct {
	perDay, perHour int
	maxMailboxes    int
	seed            maphash.Seed

	mu        sync.Mutex
	seq       uint64
	mailboxes map[uint64][]budgetSend
	// sends holds every mailbox send still in its window, oldest first
	// (refunded ones too, until they leave the window: their pop finds
	// nothing more to drop). head is the first live element.
	sends    []queuedSend
	head     int
	platform []budgetSend
}

// budgetSend is one send in a log: its sequence number (Spent.ID) and time.
type budgetSend struct {
	seq uint64
	at  int64
}

// queuedSend is one send in MemoryBudget.sends: its mailbox and time.
type queuedSend struct {
	mailbox uint64
	at      int64
}

var _ MailBudget = (*MemoryBudget)(nil)

// NewMemoryBudget returns a budget of perDay sends per mailbox in 24 hours
// (at least 1) and perHour sends in an hour in all (0: no platform limit).
func NewMemoryBudget(perDay, perHour int) *MemoryBudget {
	return &MemoryBudget{perDay: max(perDay, 1), perHour: max(perHour, 0),
		maxMailboxes: maxBudgetMailboxes, seed: maphash.MakeSeed(), mailboxes: map[uint64][]budgetSend{}}
}

// Spend implements MailBudget.
func (b *MemoryBudget) Spend(_ context.Context, mailbox string, now time.Time) (Spent, bool, string, error) {
	key := maphash.String(b.seed, mailbox)
	at := now.UnixNano()
	b.mu.Lock()
	defer b.mu.Unlock()
	since := now.Add(-mailboxWindow).UnixNano()
	for b.head < len(b.sends) && b.sends[b.head].at <= since {
		b.pop(since)
	}
	log := b.mailboxes[key]
	if len(log) >= b.perDay {
		return Spent{}, false, BudgetMailbox, nil
	}
	if b.perHour > 0 {
		b.platform = prune(b.platform, now.Add(-platformWindow).UnixNano())
		if len(b.platform) >= b.perHour {
			return Spent{}, false, BudgetPlatform, nil
		}
	}
	if len(log) == 0 {
		// A new mailbox: past the bound, forget the oldest ones.
		for len(b.mailboxes) >= b.maxMailboxes && b.head < len(b.sends) {
			delete(b.mailboxes, b.sends[b.head].mailbox)
			b.pop(since)
		}
	}
	b.seq++
	send := budgetSend{seq: b.seq, at: at}
	b.mailboxes[key] = append(log, send)
	b.sends = append(b.sends, queuedSend{mailbox: key, at: at})
	if b.perHour > 0 {
		b.platform = append(b.platform, send)
	}
	return Spent{Mailbox: mailbox, ID: strconv.FormatUint(b.seq, 10), At: now}, true, "", nil
}

// pop takes the oldest send off the queue and drops whatever of its
// mailbox's log has left the window; the caller holds mu. The queue is
// compacted once most of it is dead, which keeps pops O(1) amortized.
func (b *MemoryBudget) pop(since int64) {
	m := b.sends[b.head].mailbox
	b.head++
	if log, ok := b.mailboxes[m]; ok {
		if log = prune(log, since); len(log) == 0 {
			delete(b.mailboxes, m)
		} else {
			b.mailboxes[m] = log
		}
	}
	if b.head == len(b.sends) {
		b.sends, b.head = b.sends[:0], 0
	} else if b.head > 1024 && b.head*2 > len(b.sends) {
		n := copy(b.sends, b.sends[b.head:])
		b.sends, b.head = b.sends[:n], 0
	}
}

// Refund implements MailBudget.
func (b *MemoryBudget) Refund(_ context.Context, s Spent) error {
	seq, err := strconv.ParseUint(s.ID, 10, 64)
	if err != nil {
		return nil // not one of this budget's sends
	}
	key := maphash.String(b.seed, s.Mailbox)
	b.mu.Lock()
	defer b.mu.Unlock()
	if log := remove(b.mailboxes[key], seq); len(log) == 0 {
		delete(b.mailboxes, key)
	} else {
		b.mailboxes[key] = log
	}
	b.platform = remove(b.platform, seq)
	return nil
}

// prune drops the sends at or before since; log is in time order.
func prune(log []budgetSend, since int64) []budgetSend {
	i := 0
	for i < len(log) && log[i].at <= since {
		i++
	}
	if i == len(log) {
		return nil
	}
	return log[i:]
}

func remove(log []budgetSend, seq uint64) []budgetSend {
	for i, s := range log {
		if s.seq == seq {
			return append(log[:i:i], log[i+1:]...)
		}
	}
	return log
}

package mail

import (
	"context"
	"fmt"
	netmail "net/mail"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// DefaultOutboxDir is where NewOutboxSender writes when given no directory.
const DefaultOutboxDir = "outbox"

// OutboxSender writes each mail as an .eml file into a directory instead of
// sending it: RFC 5322, the same MIME an SMTP server that announced SMTPUTF8
// would receive, so addresses in the From and To headers are in UTF-8 as
// RFC 6532 allows ("josé@example.com", "li@例子.测试"). It is for
// development and tests, when SMTP_HOST is empty: open the files with a mail
// client, or read the verification code from them.
//
// A file appears complete or not at all: it is written to a hidden temporary
// file in the same directory and renamed. Names are
// "<unix nanoseconds, 20 digits>-<message id>.eml", so they sort in the order
// the mails were sent and never collide within a process, even for the same
// ID sent twice. Files are readable by their owner only: they hold codes.
type OutboxSender struct {
	dir  string
	from *netmail.Address

	mu     sync.Mutex
	last   int64 // last timestamp used in a file name
	closed bool
}

var _ Sender = (*OutboxSender)(nil)

// OutboxOption configures NewOutboxSender.
type OutboxOption func(*OutboxSender) error

// OutboxFrom sets the From address of the written mails; default DefaultFrom.
func OutboxFrom(from string) OutboxOption {
	return func(o *OutboxSender) error {
		a, err := netmail.ParseAddress(from)
		if err != nil {
			return fmt.Errorf("MAIL_FROM %q is not a valid address: %w", from, err)
		}
		o.from = a
		return nil
	}
}

// NewOutboxSender returns a sender writing into dir ("" means
// DefaultOutboxDir, relative to the working directory), which it creates if
// missing.
func NewOutboxSender(dir string, opts ...OutboxOption) (*OutboxSender, error) {
	if dir == "" {
		dir = DefaultOutboxDir
	}
	o := &OutboxSender{dir: dir}
	if err := OutboxFrom(DefaultFrom)(o); err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return nil, fmt.Errorf("outbox: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("outbox: create %s: %w", dir, err)
	}
	return o, nil
}

// Dir is the directory the mails are written to.
func (o *OutboxSender) Dir() string { return o.dir }

// Send writes m into the outbox. Errors writing the file are temporary
// (a full disk may be freed); an invalid message is a permanent error.
func (o *OutboxSender) Send(ctx context.Context, m Message) error {
	if err := ctx.Err(); err != nil {
		return contextError("write outbox", m.ID, err)
	}
	msg, err := buildMsg(o.from, m, utf8Addresses)
	if err != nil {
		return err
	}
	name, err := o.fileName(m.ID)
	if err != nil {
		return &Error{Op: "write outbox", MessageID: m.ID, Temporary: true, Detail: err.Error(), Err: err}
	}

	fail := func(err error) error {
		return &Error{Op: "write outbox", MessageID: m.ID, Temporary: true, Detail: err.Error(), Err: err}
	}
	tmp, err := os.CreateTemp(o.dir, ".outbox-*.tmp")
	if err != nil {
		return fail(err)
	}
	tmpName := tmp.Name()
	if _, err := msg.WriteTo(tmp); err != nil {
		_ = tmp.Close()
		_ = os.Remove(tmpName)
		return fail(fmt.Errorf("write %s: %w", tmpName, err))
	}
	if err := tmp.Close(); err != nil {
		_ = os.Remove(tmpName)
		return fail(err)
	}
	if err := os.Rename(tmpName, filepath.Join(o.dir, name)); err != nil {
		_ = os.Remove(tmpName)
		return fail(err)
	}
	return nil
}

// fileName returns a unique, sortable name for a mail with this ID.
func (o *OutboxSender) fileName(id string) (string, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return "", ErrSenderClosed
	}
	now := time.Now().UnixNano()
	if now <= o.last {
		now = o.last + 1
	}
	o.last = now
	local := messageIDLocal(id)
	if id == "" {
		local = "noid"
	}
	return fmt.Sprintf("%020d-%s.eml", now, local), nil
}

// Close makes later Sends fail with ErrSenderClosed; it holds no resources.
func (o *OutboxSender) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closed = true
	return nil
}

package mail_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/countersign/countersign/mail"
	"github.com/countersign/countersign/mail/smtptest"
)

// MustOutbox creates an OutboxSender in a fresh directory.
func MustOutbox(tb testing.TB, opts ...mail.OutboxOption) *mail.OutboxSender {
	tb.Helper()
	o, err := mail.NewOutboxSender(filepath.Join(tb.TempDir(), "outbox"), opts...)
	if err != nil {
		tb.Fatalf("NewOutboxSender: %v", err)
	}
	tb.Cleanup(func() { _ = o.Close() })
	return o
}

// readOutbox returns the .eml files of dir in name order, failing on any
// other file (a leftover temporary file would be one).
func readOutbox(t *testing.T, dir string) (names []string, msgs []smtptest.Received) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".eml") {
			t.Errorf("unexpected file %s in the outbox", e.Name())
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, e.Name())
		msgs = append(msgs, smtptest.Received{Data: b})
	}
	return names, msgs
}

func TestOutboxWritesMIMEMessage(t *testing.T) {
	o := MustOutbox(t, mail.OutboxFrom(testFrom))
	if err := o.Send(context.Background(), testMessage("evt-1")); err != nil {
		t.Fatal(err)
	}

	names, msgs := readOutbox(t, o.Dir())
	if len(msgs) != 1 {
		t.Fatalf("outbox holds %d mails, want 1", len(msgs))
	}
	if !strings.HasSuffix(names[0], "-evt-1.eml") {
		t.Errorf("file name %q does not end in -evt-1.eml", names[0])
	}
	m := msgs[0]
	h, err := m.Header()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(h.Get("From"), "no-reply@example.com") || !strings.Contains(h.Get("To"), testTo) {
		t.Errorf("From %q, To %q", h.Get("From"), h.Get("To"))
	}
	if m.Subject() != "Verify your account" || m.MessageID() != "<evt-1@example.com>" {
		t.Errorf("Subject %q, Message-ID %q", m.Subject(), m.MessageID())
	}
	if h.Get("Date") == "" {
		t.Error("no Date header")
	}
	text, err := m.TextPart()
	if err != nil || text != "Your code is "+testCode {
		t.Errorf("text part = %q, %v", text, err)
	}
	html, err := m.HTMLPart()
	if err != nil || !strings.Contains(html, "<strong>"+testCode+"</strong>") {
		t.Errorf("html part = %q, %v", html, err)
	}

	info, err := os.Stat(filepath.Join(o.Dir(), names[0]))
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		t.Errorf("mode %v: a mail holding a code is readable by others", perm)
	}
}

func TestOutboxSameMIMEAsSMTP(t *testing.T) {
	// The outbox must show what the SMTP server would get: same headers and
	// parts, from the same builder.
	srv := smtptest.Start(t)
	s := MustSMTPSender(t, testConfig(srv))
	o := MustOutbox(t, mail.OutboxFrom(testFrom))
	msg := testMessage("evt-same")
	if err := s.Send(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	if err := o.Send(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	sent, err := srv.WaitForMessages(1, 5e9)
	if err != nil {
		t.Fatal(err)
	}
	_, written := readOutbox(t, o.Dir())

	sentParts, err1 := sent[0].Parts()
	writtenParts, err2 := written[0].Parts()
	if err1 != nil || err2 != nil || len(sentParts) != len(writtenParts) {
		t.Fatalf("parts: %d (%v) vs %d (%v)", len(sentParts), err1, len(writtenParts), err2)
	}
	for i := range sentParts {
		if sentParts[i].ContentType != writtenParts[i].ContentType || sentParts[i].Body != writtenParts[i].Body {
			t.Errorf("part %d differs: %+v vs %+v", i, sentParts[i], writtenParts[i])
		}
	}
	sh, _ := sent[0].Header()
	wh, _ := written[0].Header()
	for _, k := range []string{"From", "To", "Subject", "Message-Id", "Mime-Version", "Auto-Submitted"} {
		if sh.Get(k) != wh.Get(k) {
			t.Errorf("%s: SMTP %q, outbox %q", k, sh.Get(k), wh.Get(k))
		}
	}
}

func TestOutboxNamesSortAndNeverCollide(t *testing.T) {
	o := MustOutbox(t)
	// Concurrent sends of the same ID: every one gets its own file.
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := o.Send(context.Background(), testMessage("evt-dup")); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	names, _ := readOutbox(t, o.Dir())
	if len(names) != 20 {
		t.Fatalf("%d files for 20 mails", len(names))
	}

	// Sequential sends are listed in the order they were sent.
	o = MustOutbox(t)
	ids := []string{"c", "a", "b", "user 1/with slash", ""}
	for _, id := range ids {
		if err := o.Send(context.Background(), testMessage(id)); err != nil {
			t.Fatal(err)
		}
	}
	names, msgs := readOutbox(t, o.Dir())
	if !sort.StringsAreSorted(names) || len(names) != len(ids) {
		t.Fatalf("names %q", names)
	}
	for i, id := range ids[:3] {
		if !strings.HasSuffix(names[i], "-"+id+".eml") {
			t.Errorf("file %d is %q, want the mail with ID %q", i, names[i], id)
		}
	}
	if strings.ContainsAny(names[3], " /") {
		t.Errorf("unsafe ID in file name %q", names[3])
	}
	if msgs[3].MessageID() == "" {
		t.Error("hashed ID mail has no Message-ID")
	}
}

func TestOutboxCreatesDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	o, err := mail.NewOutboxSender(dir)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(dir); err != nil || !info.IsDir() || o.Dir() != dir {
		t.Fatalf("dir %s not created (%v)", dir, err)
	}
}

func TestOutboxErrors(t *testing.T) {
	o := MustOutbox(t)

	m := testMessage("evt-bad")
	m.To = "nope"
	if err := o.Send(context.Background(), m); !mail.IsPermanent(err) {
		t.Errorf("invalid address: %v, want permanent", err)
	}

	// The directory vanished: a temporary error, without personal data.
	if err := os.RemoveAll(o.Dir()); err != nil {
		t.Fatal(err)
	}
	err := o.Send(context.Background(), testMessage("evt-gone"))
	if err == nil || mail.IsPermanent(err) {
		t.Fatalf("missing dir: %v, want a temporary error", err)
	}
	assertClean(t, err)

	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if err := o.Send(context.Background(), testMessage("evt-closed")); !errors.Is(err, mail.ErrSenderClosed) {
		t.Fatalf("Send after Close: %v", err)
	}

	if _, err := mail.NewOutboxSender(t.TempDir(), mail.OutboxFrom("not an address")); err == nil {
		t.Fatal("NewOutboxSender accepted an invalid From")
	}
}

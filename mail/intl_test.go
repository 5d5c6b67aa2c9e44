package mail_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	netmail "net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/mail"
	"github.com/countersign/countersign/mail/smtptest"
)

// The addresses of issue 20: an IDN domain, which every relay can take in
// its A-label form, and a non-ASCII local part, which needs SMTPUTF8.
const (
	idnTo       = "li@例子.测试"
	idnToASCII  = "li@xn--fsqu00a.xn--0zwm56d"
	utf8LocalTo = "josé@example.com"
)

// relay is an SMTP server under test: smtptest, or aiosmtpd.
type relay struct {
	host     string
	port     int
	smtputf8 bool // whether it announces SMTPUTF8
	// wait returns the first n mails it accepted, failing the test when
	// fewer arrive in time.
	wait func(t *testing.T, n int) []smtptest.Received
	// count is the number of mails accepted so far.
	count func() int
}

func smtptestRelay(t *testing.T, smtputf8 bool) relay {
	var opts []smtptest.Option
	if smtputf8 {
		opts = append(opts, smtptest.WithSMTPUTF8())
	}
	srv := smtptest.Start(t, opts...)
	return relay{
		host: srv.Host(), port: srv.Port(), smtputf8: smtputf8,
		wait: func(t *testing.T, n int) []smtptest.Received {
			t.Helper()
			msgs, err := srv.WaitForMessages(n, 30*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			return msgs
		},
		count: func() int { return len(srv.Messages()) },
	}
}

// logBuffer collects a logger's output for assertions.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// smtputf8Warnings counts the warnings that name ALLOW_UTF8_LOCAL_PART.
func (l *logBuffer) smtputf8Warnings() int {
	n := 0
	for _, line := range strings.Split(l.String(), "\n") {
		if strings.Contains(line, "level=WARN") && strings.Contains(line, "ALLOW_UTF8_LOCAL_PART") && strings.Contains(line, "SMTPUTF8") {
			n++
		}
	}
	return n
}

func intlMessage(to, id string) mail.Message {
	return mail.Message{To: to, ToName: "李 雷", Subject: "Verify your account", Text: "Your code is " + testCode, ID: id}
}

// toHeader returns the address of a mail's To header.
func toHeader(t *testing.T, r smtptest.Received) string {
	t.Helper()
	h, err := r.Header()
	if err != nil {
		t.Fatal(err)
	}
	a, err := netmail.ParseAddress(h.Get("To"))
	if err != nil {
		t.Fatalf("To header %q: %v", h.Get("To"), err)
	}
	return a.Address
}

// testInternationalAddresses is the contract of issue 20, run against each
// relay in both modes: an IDN domain is always delivered (in A-label form
// when the relay lacks SMTPUTF8); a non-ASCII local part is delivered with
// SMTPUTF8, and otherwise refused at once with a permanent error naming
// SMTPUTF8, which leaves the connection usable; a connection to a relay
// without SMTPUTF8 logs one warning that names ALLOW_UTF8_LOCAL_PART.
func testInternationalAddresses(t *testing.T, r relay) {
	var logs logBuffer
	cfg := mail.SMTPConfig{Host: r.host, Port: r.port, From: testFrom, Timeout: 10 * time.Second}
	s, err := mail.NewSMTPSender(cfg, logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ctx := context.Background()

	if err := s.Connect(ctx); err != nil {
		t.Fatalf("connect: %v", err)
	}
	wantWarnings := 1
	if r.smtputf8 {
		wantWarnings = 0
	}
	if n := logs.smtputf8Warnings(); n != wantWarnings {
		t.Errorf("after connecting: %d SMTPUTF8 warnings, want %d; log:\n%s", n, wantWarnings, logs.String())
	}

	// An IDN domain.
	if err := s.Send(ctx, intlMessage(idnTo, "idn-1")); err != nil {
		t.Fatalf("IDN domain: %v", err)
	}
	got := r.wait(t, 1)[0]
	wantRcpt := idnToASCII
	if r.smtputf8 {
		wantRcpt = idnTo
	}
	if len(got.To) != 1 || got.To[0] != wantRcpt {
		t.Errorf("IDN domain: RCPT TO %q, want %q", got.To, wantRcpt)
	}
	if a := toHeader(t, got); a != wantRcpt {
		t.Errorf("IDN domain: To header %q, want %q", a, wantRcpt)
	}
	if got.SMTPUTF8 != r.smtputf8 {
		t.Errorf("IDN domain: SMTPUTF8 parameter %v, want %v", got.SMTPUTF8, r.smtputf8)
	}
	if !r.smtputf8 && !isASCIIBytes(got.Data) {
		t.Errorf("IDN domain: mail to an ASCII relay has 8-bit data:\n%s", got.Data)
	}

	// A non-ASCII local part.
	err = s.Send(ctx, intlMessage(utf8LocalTo, "utf8-1"))
	if r.smtputf8 {
		if err != nil {
			t.Fatalf("non-ASCII local part with SMTPUTF8: %v", err)
		}
		got := r.wait(t, 2)[1]
		if len(got.To) != 1 || got.To[0] != utf8LocalTo || !got.SMTPUTF8 {
			t.Errorf("non-ASCII local part: RCPT TO %q SMTPUTF8 %v", got.To, got.SMTPUTF8)
		}
		if a := toHeader(t, got); a != utf8LocalTo {
			t.Errorf("non-ASCII local part: To header %q", a)
		}
	} else {
		if !mail.IsPermanent(err) || !errors.Is(err, mail.ErrSMTPUTF8Required) {
			t.Fatalf("non-ASCII local part without SMTPUTF8: error %v, want permanent ErrSMTPUTF8Required", err)
		}
		if !strings.Contains(err.Error(), "SMTPUTF8") || strings.Contains(err.Error(), "jos") {
			t.Errorf("error %q: want it to name SMTPUTF8 and not the address", err)
		}
	}

	// The connection is still good, and still the only one.
	if err := s.Send(ctx, testMessage("ascii-1")); err != nil {
		t.Fatalf("ASCII address after: %v", err)
	}
	want := 2
	if r.smtputf8 {
		want = 3
	}
	msgs := r.wait(t, want)
	if last := msgs[want-1]; len(last.To) != 1 || last.To[0] != testTo {
		t.Errorf("last mail to %q", last.To)
	}
	if n := r.count(); n != want {
		t.Errorf("%d mails accepted, want %d", n, want)
	}
	if n := logs.smtputf8Warnings(); n != wantWarnings {
		t.Errorf("%d SMTPUTF8 warnings on one connection, want %d", n, wantWarnings)
	}
}

func isASCIIBytes(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

func TestInternationalAddressesSMTPTest(t *testing.T) {
	t.Run("without SMTPUTF8", func(t *testing.T) { testInternationalAddresses(t, smtptestRelay(t, false)) })
	t.Run("with SMTPUTF8", func(t *testing.T) { testInternationalAddresses(t, smtptestRelay(t, true)) })
}

// The warning comes once per connection: again after a reconnect, never
// when the relay has SMTPUTF8 or when ASCIILocalPartOnly is set.
func TestSMTPUTF8WarningPerConnection(t *testing.T) {
	for _, c := range []struct {
		name           string
		smtputf8, warn bool
		want           int
	}{
		{"relay without SMTPUTF8", false, true, 2},
		{"relay with SMTPUTF8", true, true, 0},
		{"warning off (ALLOW_UTF8_LOCAL_PART=false)", false, false, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			var opts []smtptest.Option
			if c.smtputf8 {
				opts = append(opts, smtptest.WithSMTPUTF8())
			}
			srv := smtptest.Start(t, opts...)
			var logs logBuffer
			cfg := testConfig(srv)
			cfg.ASCIILocalPartOnly = !c.warn
			s, err := mail.NewSMTPSender(cfg, logs.logger())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			for i, id := range []string{"w-1", "w-2"} {
				if err := s.Send(context.Background(), testMessage(id)); err != nil {
					t.Fatal(err)
				}
				if i == 0 {
					srv.DropConnections()
				}
			}
			if srv.Connections() != 2 {
				t.Fatalf("%d connections, want 2", srv.Connections())
			}
			if n := logs.smtputf8Warnings(); n != c.want {
				t.Errorf("%d warnings over 2 connections, want %d; log:\n%s", n, c.want, logs.String())
			}
		})
	}
}

// The outbox writes what an SMTPUTF8 relay receives: addresses in UTF-8.
func TestOutboxWritesUTF8Addresses(t *testing.T) {
	o := MustOutbox(t)
	for i, to := range []string{idnTo, utf8LocalTo} {
		if err := o.Send(context.Background(), intlMessage(to, "outbox-intl-"+string(rune('a'+i)))); err != nil {
			t.Fatalf("%s: %v", to, err)
		}
	}
	_, msgs := readOutbox(t, o.Dir())
	if len(msgs) != 2 {
		t.Fatalf("%d files", len(msgs))
	}
	for i, to := range []string{idnTo, utf8LocalTo} {
		if a := toHeader(t, msgs[i]); a != to {
			t.Errorf("To header %q, want %q", a, to)
		}
		h, _ := msgs[i].Header()
		if !strings.Contains(h.Get("To"), to) {
			t.Errorf("To header %q does not carry %q in UTF-8", h.Get("To"), to)
		}
	}
}

package mail_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	netmail "net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/mail"
	"github.com/countersign/countersign/mail/smtptest"
)

const (
	testFrom     = "Countersign <no-reply@example.com>"
	testPassword = "s3cr3t-Pa55word"
	testTo       = "ada@example.com"
	testCode     = "482913"
)

// testConfig points at s; 127.0.0.1 makes TLS default to opportunistic, which
// falls back to plain text on a server without STARTTLS.
func testConfig(s *smtptest.Server) mail.SMTPConfig {
	return mail.SMTPConfig{Host: s.Host(), Port: s.Port(), From: testFrom, Timeout: 10 * time.Second}
}

// MustSMTPSender creates a sender closed at the end of the test.
func MustSMTPSender(tb testing.TB, cfg mail.SMTPConfig) *mail.SMTPSender {
	tb.Helper()
	s, err := mail.NewSMTPSender(cfg, nil)
	if err != nil {
		tb.Fatalf("NewSMTPSender: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

func testMessage(id string) mail.Message {
	return mail.Message{
		To:      testTo,
		ToName:  "Ada Lovelace",
		Subject: "Verify your account",
		HTML:    "<p>Your code is <strong>" + testCode + "</strong></p>",
		Text:    "Your code is " + testCode,
		ID:      id,
	}
}

// assertClean fails when err's text holds something that must never be in an
// error: the address, the code, the body, the password.
func assertClean(t *testing.T, err error) {
	t.Helper()
	for _, secret := range []string{testTo, testCode, "Your code", testPassword} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error %q contains %q", err, secret)
		}
	}
}

func mailError(t *testing.T, err error) *mail.Error {
	t.Helper()
	var me *mail.Error
	if !errors.As(err, &me) {
		t.Fatalf("error %v (%T) is not a *Error", err, err)
	}
	return me
}

func TestSMTPSendsMultipart(t *testing.T) {
	srv := smtptest.Start(t)
	s := MustSMTPSender(t, testConfig(srv))

	if err := s.Send(context.Background(), testMessage("evt-1")); err != nil {
		t.Fatal(err)
	}
	msgs, err := srv.WaitForMessages(1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0]
	if m.From != "no-reply@example.com" || len(m.To) != 1 || m.To[0] != testTo {
		t.Errorf("envelope from %q to %q", m.From, m.To)
	}
	h, err := m.Header()
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Subject(); got != "Verify your account" {
		t.Errorf("Subject = %q", got)
	}
	if got := m.MessageID(); got != "<evt-1@example.com>" {
		t.Errorf("Message-ID = %q, want <evt-1@example.com>", got)
	}
	to, err := netmail.ParseAddress(h.Get("To"))
	if err != nil || to.Name != "Ada Lovelace" || to.Address != testTo {
		t.Errorf("To = %q (%v)", h.Get("To"), err)
	}
	from, err := netmail.ParseAddress(h.Get("From"))
	if err != nil || from.String() != (&netmail.Address{Name: "Countersign", Address: "no-reply@example.com"}).String() {
		t.Errorf("From = %q (%v)", h.Get("From"), err)
	}
	if d, err := h.Date(); err != nil || time.Since(d) > time.Hour || time.Until(d) > time.Hour {
		t.Errorf("Date = %q (%v)", h.Get("Date"), err)
	}
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "multipart/alternative") {
		t.Errorf("Content-Type = %q, want multipart/alternative", ct)
	}
	if got := h.Get("Auto-Submitted"); got != "auto-generated" {
		t.Errorf("Auto-Submitted = %q", got)
	}

	text, err := m.TextPart()
	if err != nil || text != "Your code is "+testCode {
		t.Errorf("text part = %q, %v", text, err)
	}
	html, err := m.HTMLPart()
	if err != nil || html != "<p>Your code is <strong>"+testCode+"</strong></p>" {
		t.Errorf("html part = %q, %v", html, err)
	}
	parts, err := m.Parts()
	if err != nil || len(parts) != 2 || parts[0].ContentType != "text/plain" || parts[1].ContentType != "text/html" {
		t.Errorf("parts = %+v, %v; want text/plain then text/html", parts, err)
	}
}

func TestSMTPReusesConnection(t *testing.T) {
	srv := smtptest.Start(t)
	s := MustSMTPSender(t, testConfig(srv))

	for i := 0; i < 20; i++ {
		if err := s.Send(context.Background(), testMessage(fmt.Sprintf("evt-%d", i))); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	msgs, err := srv.WaitForMessages(20, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := srv.Connections(); got != 1 {
		t.Fatalf("server saw %d connections for 20 mails, want 1", got)
	}
	for i, m := range msgs {
		if want := fmt.Sprintf("<evt-%d@example.com>", i); m.MessageID() != want {
			t.Errorf("message %d has Message-ID %q, want %q", i, m.MessageID(), want)
		}
	}
}

func TestSMTPConcurrentSends(t *testing.T) {
	// Send must be safe for concurrent use; the mails share one connection.
	srv := smtptest.Start(t)
	s := MustSMTPSender(t, testConfig(srv))

	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				errs <- s.Send(context.Background(), testMessage(fmt.Sprintf("g%d-%d", g, i)))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := srv.WaitForMessages(40, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := srv.Connections(); got != 1 {
		t.Fatalf("Connections() = %d, want 1", got)
	}
}

func TestSMTPRedialsAfterServerDroppedConnection(t *testing.T) {
	srv := smtptest.Start(t)
	s := MustSMTPSender(t, testConfig(srv))
	ctx := context.Background()

	if err := s.Send(ctx, testMessage("before")); err != nil {
		t.Fatal(err)
	}
	srv.DropConnections()

	// The dropped connection is noticed before the mail is sent, so this Send
	// redials and succeeds itself; the caller sees no error.
	if err := s.Send(ctx, testMessage("after")); err != nil {
		t.Fatalf("send after drop: %v", err)
	}
	if err := s.Send(ctx, testMessage("again")); err != nil {
		t.Fatal(err)
	}
	msgs, err := srv.WaitForMessages(3, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := srv.Connections(); got != 2 {
		t.Fatalf("Connections() = %d, want 2 (one redial)", got)
	}
	if msgs[1].Conn != 2 || msgs[2].Conn != 2 {
		t.Fatalf("mails after the drop went over connections %d and %d, want 2", msgs[1].Conn, msgs[2].Conn)
	}
}

func TestSMTPTemporaryFailure(t *testing.T) {
	srv := smtptest.Start(t)
	s := MustSMTPSender(t, testConfig(srv))
	srv.FailNext(1, 451, "greylisted, try again later")

	err := s.Send(context.Background(), testMessage("evt-451"))
	if err == nil {
		t.Fatal("Send succeeded, want a 451 error")
	}
	if mail.IsPermanent(err) {
		t.Fatalf("451 is permanent: %v", err)
	}
	me := mailError(t, err)
	if me.Code != 451 || !me.Temporary || me.MessageID != "evt-451" {
		t.Fatalf("Error = %+v", me)
	}
	if mail.IsServiceUnavailable(err) {
		t.Errorf("a 451 for one mail counts as the service being down: %v", err)
	}
	if !strings.Contains(err.Error(), "evt-451") || !strings.Contains(err.Error(), "greylisted") {
		t.Errorf("error %q should name the message ID and the server's reason", err)
	}
	assertClean(t, err)

	// The retry succeeds, on the same connection: a reply does not break it.
	if err := s.Send(context.Background(), testMessage("evt-451")); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if got := srv.Connections(); got != 1 {
		t.Fatalf("Connections() = %d, want 1", got)
	}
}

func TestSMTPPermanentFailure(t *testing.T) {
	srv := smtptest.Start(t)
	cfg := testConfig(srv)
	s := MustSMTPSender(t, cfg)
	// Servers often quote the refused address.
	srv.FailNext(1, 550, "mailbox unavailable: <"+testTo+">")

	err := s.Send(context.Background(), testMessage("evt-550"))
	if !mail.IsPermanent(err) {
		t.Fatalf("550 is not permanent: %v", err)
	}
	me := mailError(t, err)
	if me.Code != 550 || me.Temporary {
		t.Fatalf("Error = %+v", me)
	}
	if mail.IsServiceUnavailable(err) {
		t.Errorf("a 550 counts as the service being down: %v", err)
	}
	if !strings.Contains(err.Error(), "evt-550") {
		t.Errorf("error %q does not name the message ID", err)
	}
	assertClean(t, err)
}

func TestSMTPOutage(t *testing.T) {
	srv := smtptest.Start(t)
	s := MustSMTPSender(t, testConfig(srv))
	srv.SetFailing(421)
	for i := 0; i < 3; i++ {
		err := s.Send(context.Background(), testMessage("evt-outage"))
		if err == nil || mail.IsPermanent(err) {
			t.Fatalf("send %d during outage: %v, want a temporary error", i, err)
		}
		if !mail.IsServiceUnavailable(err) {
			t.Errorf("send %d: 421 does not count as the service being down: %v", i, err)
		}
	}
	srv.ClearFailing()
	if err := s.Send(context.Background(), testMessage("evt-outage")); err != nil {
		t.Fatalf("send after outage: %v", err)
	}
	if got := len(srv.Messages()); got != 1 {
		t.Fatalf("server accepted %d mails, want 1", got)
	}
}

func TestSMTPConnectionRefusedIsTemporary(t *testing.T) {
	// A port that was just free: nothing listens there.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()

	s := MustSMTPSender(t, mail.SMTPConfig{Host: "127.0.0.1", Port: port, Timeout: 5 * time.Second})
	err = s.Send(context.Background(), testMessage("evt-refused"))
	if err == nil || mail.IsPermanent(err) {
		t.Fatalf("err = %v, want a temporary error", err)
	}
	me := mailError(t, err)
	if me.Op != "dial" || me.Code != 0 {
		t.Fatalf("Error = %+v, want a dial failure without SMTP code", me)
	}
	if !mail.IsServiceUnavailable(err) {
		t.Errorf("connection refused does not count as the service being down: %v", err)
	}
	var netErr net.Error
	if !errors.As(err, &netErr) {
		t.Errorf("error %v does not unwrap to the net.Error", err)
	}
	assertClean(t, err)
}

func TestSMTPInvalidRecipientIsPermanent(t *testing.T) {
	srv := smtptest.Start(t)
	s := MustSMTPSender(t, testConfig(srv))
	for _, to := range []string{"", "not an address", "ada@", "Ada <" + testTo + ">"} {
		m := testMessage("evt-bad")
		m.To = to
		err := s.Send(context.Background(), m)
		if !mail.IsPermanent(err) || !errors.Is(err, mail.ErrInvalidMessage) {
			t.Errorf("To %q: err = %v, want a permanent ErrInvalidMessage", to, err)
			continue
		}
		if to != "" && strings.Contains(err.Error(), to) {
			t.Errorf("error %q contains the address", err)
		}
	}
	if got := srv.Connections(); got != 0 {
		t.Errorf("invalid mails opened %d connections, want 0", got)
	}
}

func TestSMTPHeaderInjection(t *testing.T) {
	srv := smtptest.Start(t)
	s := MustSMTPSender(t, testConfig(srv))
	m := testMessage("evt-inject")
	m.Subject = "Hello\r\nBcc: victim@example.net"
	m.ToName = "Ada\r\nBcc: victim@example.net"
	if err := s.Send(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	msgs, err := srv.WaitForMessages(1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	h, err := msgs[0].Header()
	if err != nil {
		t.Fatal(err)
	}
	if len(h["Bcc"]) != 0 || len(msgs[0].To) != 1 {
		t.Fatalf("injected recipient: Bcc %q, envelope %q", h["Bcc"], msgs[0].To)
	}
	if got := msgs[0].Subject(); got != "Hello Bcc: victim@example.net" {
		t.Fatalf("Subject = %q", got)
	}
}

func TestSMTPMessageIDStableAcrossResends(t *testing.T) {
	srv := smtptest.Start(t)
	s := MustSMTPSender(t, testConfig(srv))
	ids := []string{"evt-7", "evt-7", "user 42/verification", "user 42/verification", ""}
	for _, id := range ids {
		if err := s.Send(context.Background(), testMessage(id)); err != nil {
			t.Fatal(err)
		}
	}
	msgs, err := srv.WaitForMessages(len(ids), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]string, len(msgs))
	for i, m := range msgs {
		got[i] = m.MessageID()
		if _, err := netmail.ParseAddress(strings.Trim(got[i], "<>")); err != nil {
			t.Errorf("Message-ID %q is not a valid msg-id: %v", got[i], err)
		}
	}
	if got[0] != got[1] || got[2] != got[3] {
		t.Errorf("resent mails have different Message-IDs: %q", got)
	}
	if got[0] == got[2] || got[4] == got[0] || got[4] == got[2] {
		t.Errorf("different mails share a Message-ID: %q", got)
	}
	if strings.Contains(got[2], " ") || strings.Contains(got[2], "/") {
		t.Errorf("unsafe ID used verbatim: %q", got[2])
	}
}

func TestSMTPTLSAndAuth(t *testing.T) {
	srv := smtptest.Start(t, smtptest.WithTLS(), smtptest.WithAuth("mailer", testPassword))
	cfg := testConfig(srv)
	cfg.TLS = mail.TLSMandatory
	cfg.TLSConfig = srv.ClientTLSConfig()
	cfg.Username = "mailer"
	cfg.Password = testPassword

	s := MustSMTPSender(t, cfg)
	for i := 0; i < 3; i++ {
		if err := s.Send(context.Background(), testMessage(fmt.Sprintf("tls-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := srv.WaitForMessages(3, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := srv.Connections(); got != 1 {
		t.Fatalf("Connections() = %d, want 1", got)
	}

	// A server reply quoting the password is scrubbed from the error.
	srv.FailNext(1, 554, "rejected for "+testPassword)
	err := s.Send(context.Background(), testMessage("tls-echo"))
	if !mail.IsPermanent(err) {
		t.Fatalf("err = %v, want permanent", err)
	}
	assertClean(t, err)
}

func TestSMTPWrongPasswordIsTemporaryAndClean(t *testing.T) {
	srv := smtptest.Start(t, smtptest.WithTLS(), smtptest.WithAuth("mailer", "the-right-one"))
	cfg := testConfig(srv)
	cfg.TLSConfig = srv.ClientTLSConfig()
	cfg.Username = "mailer"
	cfg.Password = testPassword

	s := MustSMTPSender(t, cfg)
	err := s.Send(context.Background(), testMessage("evt-auth"))
	if err == nil {
		t.Fatal("Send with a wrong password succeeded")
	}
	// A configuration error, not the mail's fault: retry once it is fixed.
	if mail.IsPermanent(err) {
		t.Fatalf("auth failure is permanent: %v", err)
	}
	if me := mailError(t, err); me.Op != "dial" {
		t.Fatalf("Op = %q, want dial", me.Op)
	}
	if !strings.Contains(err.Error(), "535") {
		t.Errorf("error %q does not say why", err)
	}
	assertClean(t, err)
}

func TestSMTPMandatoryTLSRefusesPlainServer(t *testing.T) {
	srv := smtptest.Start(t) // no STARTTLS
	cfg := testConfig(srv)
	cfg.TLS = mail.TLSMandatory
	s := MustSMTPSender(t, cfg)

	err := s.Send(context.Background(), testMessage("evt-tls"))
	if err == nil || mail.IsPermanent(err) {
		t.Fatalf("err = %v, want a temporary error", err)
	}
	if !strings.Contains(err.Error(), "STARTTLS") {
		t.Errorf("error %q does not mention STARTTLS", err)
	}
	if got := len(srv.Messages()); got != 0 {
		t.Fatalf("a mail was sent in clear text")
	}
	// The failed dial left no connection open on the server.
	deadline := time.Now().Add(5 * time.Second)
	for srv.OpenConnections() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := srv.OpenConnections(); got != 0 {
		t.Fatalf("%d connections left open after the failed dial", got)
	}
}

func TestSMTPContextEndsHungSend(t *testing.T) {
	// A server that accepts and never greets: without the context, Send would
	// wait for SMTP_TIMEOUT (a minute here).
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})

	s := MustSMTPSender(t, mail.SMTPConfig{
		Host: "127.0.0.1", Port: l.Addr().(*net.TCPAddr).Port, Timeout: time.Minute,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err = s.Send(ctx, testMessage("evt-hung"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
	if mail.IsPermanent(err) {
		t.Fatalf("a cancelled send is permanent: %v", err)
	}
}

func TestSMTPSendWithDoneContext(t *testing.T) {
	srv := smtptest.Start(t)
	s := MustSMTPSender(t, testConfig(srv))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := s.Send(ctx, testMessage("evt-cancel"))
	if !errors.Is(err, context.Canceled) || mail.IsPermanent(err) {
		t.Fatalf("err = %v, want a temporary context.Canceled", err)
	}
	if got := len(srv.Messages()); got != 0 {
		t.Fatalf("a mail was sent with a cancelled context")
	}
}

func TestSMTPClose(t *testing.T) {
	srv := smtptest.Start(t)
	s, err := mail.NewSMTPSender(testConfig(srv), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(context.Background(), testMessage("evt-1")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	err = s.Send(context.Background(), testMessage("evt-2"))
	if !errors.Is(err, mail.ErrSenderClosed) || mail.IsPermanent(err) {
		t.Fatalf("Send after Close: %v, want a temporary ErrSenderClosed", err)
	}
	// Close said QUIT: the server closes its side.
	deadline := time.Now().Add(5 * time.Second)
	for srv.OpenConnections() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := srv.OpenConnections(); got != 0 {
		t.Fatalf("%d connections open after Close", got)
	}
}

func TestNewSenderChoosesBackend(t *testing.T) {
	srv := smtptest.Start(t)
	s, err := mail.NewSender(testConfig(srv), t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, ok := s.(*mail.SMTPSender); !ok {
		t.Fatalf("NewSender with SMTP_HOST = %T, want *SMTPSender", s)
	}

	dir := t.TempDir()
	o, err := mail.NewSender(mail.SMTPConfig{From: testFrom}, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	ob, ok := o.(*mail.OutboxSender)
	if !ok || ob.Dir() != dir {
		t.Fatalf("NewSender without SMTP_HOST = %T, want *OutboxSender in %s", o, dir)
	}

	if _, err := mail.NewSender(mail.SMTPConfig{Host: srv.Host(), TLS: "always"}, dir, nil); err == nil {
		t.Fatal("NewSender accepted an invalid config")
	}
}

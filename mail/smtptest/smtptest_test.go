package smtptest_test

import (
	"errors"
	"net/smtp"
	"net/textproto"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/mail/smtptest"
)

// The server is exercised with the standard library's SMTP client, so that
// these tests do not depend on the go-mail code the server is meant to test.

const multipartMsg = "From: a@example.com\r\n" +
	"To: b@example.com\r\n" +
	"Subject: =?UTF-8?q?Gr=C3=BC=C3=9Fe?=\r\n" +
	"Message-ID: <m1@example.com>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/alternative; boundary=XYZ\r\n" +
	"\r\n" +
	"--XYZ\r\n" +
	"Content-Type: text/plain; charset=UTF-8\r\n" +
	"Content-Transfer-Encoding: quoted-printable\r\n" +
	"\r\n" +
	"Hello =C3=BC and a long line that is =\r\nsoft-broken\r\n" +
	"--XYZ\r\n" +
	"Content-Type: text/html; charset=UTF-8\r\n" +
	"Content-Transfer-Encoding: base64\r\n" +
	"\r\n" +
	"PHA+SGVsbG88L3A+\r\n" +
	"--XYZ--\r\n"

func send(t *testing.T, s *smtptest.Server, msg string) error {
	t.Helper()
	return smtp.SendMail(s.Addr(), nil, "a@example.com", []string{"b@example.com", "c@example.com"}, []byte(msg))
}

func TestRecordsMessage(t *testing.T) {
	s := smtptest.Start(t)
	if err := send(t, s, multipartMsg); err != nil {
		t.Fatal(err)
	}
	msgs, err := s.WaitForMessages(1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0]
	if m.From != "a@example.com" {
		t.Errorf("From = %q", m.From)
	}
	if strings.Join(m.To, ",") != "b@example.com,c@example.com" {
		t.Errorf("To = %q", m.To)
	}
	if m.Conn != 1 {
		t.Errorf("Conn = %d, want 1", m.Conn)
	}
	if !strings.Contains(string(m.Data), "Content-Transfer-Encoding: base64") {
		t.Errorf("Data is not the raw message:\n%s", m.Data)
	}
	if got := m.Subject(); got != "Grüße" {
		t.Errorf("Subject() = %q", got)
	}
	if got := m.MessageID(); got != "<m1@example.com>" {
		t.Errorf("MessageID() = %q", got)
	}
	text, err := m.TextPart()
	if err != nil || text != "Hello ü and a long line that is soft-broken" {
		t.Errorf("TextPart() = %q, %v", text, err)
	}
	html, err := m.HTMLPart()
	if err != nil || html != "<p>Hello</p>" {
		t.Errorf("HTMLPart() = %q, %v", html, err)
	}
}

func TestPartsOfSinglePartMessage(t *testing.T) {
	r := smtptest.Received{Data: []byte("Subject: x\r\n\r\njust text\r\n")}
	text, err := r.TextPart()
	if err != nil || text != "just text\r\n" {
		t.Fatalf("TextPart() = %q, %v", text, err)
	}
	if _, err := r.HTMLPart(); !errors.Is(err, smtptest.ErrNoPart) {
		t.Fatalf("HTMLPart() error = %v, want ErrNoPart", err)
	}
}

func TestCountsConnections(t *testing.T) {
	s := smtptest.Start(t)
	for i := 0; i < 3; i++ {
		if err := send(t, s, multipartMsg); err != nil {
			t.Fatal(err)
		}
	}
	// SendMail dials once per mail.
	if got := s.Connections(); got != 3 {
		t.Fatalf("Connections() = %d, want 3", got)
	}
	msgs := s.Messages()
	if len(msgs) != 3 || msgs[2].Conn != 3 {
		t.Fatalf("got %d messages, last on connection %d", len(msgs), msgs[len(msgs)-1].Conn)
	}
}

func smtpCode(t *testing.T, err error) int {
	t.Helper()
	var te *textproto.Error
	if !errors.As(err, &te) {
		t.Fatalf("error %v (%T) is not an SMTP reply", err, err)
	}
	return te.Code
}

func TestFailNext(t *testing.T) {
	s := smtptest.Start(t)
	s.FailNext(2, 451, "try later")

	for i := 0; i < 2; i++ {
		err := send(t, s, multipartMsg)
		if code := smtpCode(t, err); code != 451 {
			t.Fatalf("send %d: code %d, want 451", i, code)
		}
		if !strings.Contains(err.Error(), "try later") {
			t.Fatalf("error %q lacks the message", err)
		}
	}
	if err := send(t, s, multipartMsg); err != nil {
		t.Fatalf("third send: %v", err)
	}
	if got := len(s.Messages()); got != 1 {
		t.Fatalf("recorded %d messages, want only the accepted one", got)
	}
	if got := s.Rejected(); got != 2 {
		t.Fatalf("Rejected() = %d, want 2", got)
	}
}

func TestSetFailing(t *testing.T) {
	s := smtptest.Start(t)
	s.SetFailing(550)
	for i := 0; i < 3; i++ {
		if code := smtpCode(t, send(t, s, multipartMsg)); code != 550 {
			t.Fatalf("code %d, want 550", code)
		}
	}
	s.ClearFailing()
	if err := send(t, s, multipartMsg); err != nil {
		t.Fatal(err)
	}
}

func TestDropConnections(t *testing.T) {
	s := smtptest.Start(t)
	c, err := smtp.Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("test"); err != nil {
		t.Fatal(err)
	}
	if got := s.OpenConnections(); got != 1 {
		t.Fatalf("OpenConnections() = %d, want 1", got)
	}

	s.DropConnections()

	if err := c.Noop(); err == nil {
		t.Fatal("NOOP on a dropped connection succeeded")
	}
	if got := s.OpenConnections(); got != 0 {
		t.Fatalf("OpenConnections() = %d after drop, want 0", got)
	}
	// The server still accepts new connections.
	if err := send(t, s, multipartMsg); err != nil {
		t.Fatal(err)
	}
}

func TestWaitForMessagesTimeout(t *testing.T) {
	s := smtptest.Start(t)
	got, err := s.WaitForMessages(1, 50*time.Millisecond)
	if err == nil || len(got) != 0 {
		t.Fatalf("WaitForMessages = %d messages, %v; want none and an error", len(got), err)
	}
}

func TestTLSAndAuth(t *testing.T) {
	s := smtptest.Start(t, smtptest.WithTLS(), smtptest.WithAuth("user", "secret"))

	dial := func() *smtp.Client {
		t.Helper()
		c, err := smtp.Dial(s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		if err := c.StartTLS(s.ClientTLSConfig()); err != nil {
			t.Fatalf("STARTTLS: %v", err)
		}
		return c
	}

	// Without AUTH, MAIL is refused.
	c := dial()
	if code := smtpCode(t, c.Mail("a@example.com")); code != 530 {
		t.Fatalf("MAIL without AUTH: code %d, want 530", code)
	}

	// Wrong password.
	c = dial()
	if code := smtpCode(t, c.Auth(smtp.PlainAuth("", "user", "wrong", s.Host()))); code != 535 {
		t.Fatalf("AUTH with a wrong password: code %d, want 535", code)
	}

	// Right password over TLS.
	c = dial()
	if err := c.Auth(smtp.PlainAuth("", "user", "secret", s.Host())); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("a@example.com"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("b@example.com"); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(multipartMsg)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WaitForMessages(1, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	// Three connections, even though STARTTLS started a second session on each.
	if got := s.Connections(); got != 3 {
		t.Fatalf("Connections() = %d, want 3", got)
	}
}

// Without WithSMTPUTF8 the server is a strict ASCII relay: a non-ASCII
// address is refused with 553 5.6.7, an A-label domain accepted. With it,
// the standard client sends the SMTPUTF8 parameter and the server records
// it.
func TestSMTPUTF8Switch(t *testing.T) {
	for _, on := range []bool{false, true} {
		var opts []smtptest.Option
		if on {
			opts = append(opts, smtptest.WithSMTPUTF8())
		}
		srv := smtptest.Start(t, opts...)
		c, err := smtp.Dial(srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		if ok, _ := c.Extension("SMTPUTF8"); ok != on {
			t.Errorf("SMTPUTF8 announced %v, want %v", ok, on)
		}
		if err := c.Mail("a@example.com"); err != nil {
			t.Fatal(err)
		}
		err = c.Rcpt("josé@example.com")
		var perr *textproto.Error
		switch {
		case on && err != nil:
			t.Errorf("with SMTPUTF8: RCPT refused: %v", err)
		case !on && (!errors.As(err, &perr) || perr.Code != 553):
			t.Errorf("without SMTPUTF8: RCPT of a non-ASCII address gave %v, want 553", err)
		}
		if err := c.Rcpt("li@xn--fsqu00a.xn--0zwm56d"); err != nil {
			t.Errorf("A-label domain refused: %v", err)
		}
		w, err := c.Data()
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write([]byte("Subject: x\r\n\r\nx\r\n"))
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		_ = c.Quit()
		msgs, err := srv.WaitForMessages(1, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if msgs[0].SMTPUTF8 != on {
			t.Errorf("recorded SMTPUTF8 %v, want %v", msgs[0].SMTPUTF8, on)
		}
	}
}

// .ci/run installs the aiosmtpd version the tests name in their hint.
func TestCIInstallsThePinnedAiosmtpd(t *testing.T) {
	b, err := os.ReadFile("../../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "AIOSMTPD="+smtptest.AiosmtpdVersion+"\n") {
		t.Errorf(".ci/run does not install aiosmtpd %s", smtptest.AiosmtpdVersion)
	}
}

// Package smtptest runs a real SMTP server in the test process, so mail code
// is tested against the protocol rather than a mocked client.
//
// Start listens on 127.0.0.1 on a free port and is closed by tb.Cleanup. The
// server records every accepted message with its full RFC 5322 data, counts
// connections (to check that a client reuses them), and injects failures:
// FailNext and SetFailing make DATA answer with a chosen SMTP code, and
// DropConnections cuts live connections the way a server restart or an idle
// timeout does. WithTLS adds STARTTLS with a self-signed certificate,
// WithAuth requires AUTH PLAIN, and WithSMTPUTF8 announces SMTPUTF8.
//
// Addresses are checked as RFC 6531 asks of a server: an address with a
// non-ASCII character in MAIL or RCPT is refused (553 5.6.7) unless the
// server announced SMTPUTF8 and MAIL carried the SMTPUTF8 parameter.
//
// StartAiosmtpd runs Python's aiosmtpd instead, a server written by others,
// and reads the mail it accepted as the same Received values.
//
// All methods are safe for concurrent use.
package smtptest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/countersign/countersign/mail"
)

// Server is a running in-process SMTP server. Create it with Start.
type Server struct {
	srv      *smtp.Server
	listener net.Listener
	served   chan struct{} // closed when Serve returned
	tlsPool  *x509.CertPool
	username string
	password string

	mu        sync.Mutex
	changed   *sync.Cond // signalled when messages is appended to
	messages  []Received
	conns     map[*trackedConn]struct{}
	connCount int
	rejected  int
	failNext  []failure
	// failFor and rejectedFor are FailNextFor's failures and counts, by recipient.
	failFor     map[string][]failure
	rejectedFor map[string]int
	failing     *failure
	closed      bool
	handlers    sync.WaitGroup // connections not yet closed
}

// failure is an injected SMTP reply.
type failure struct {
	code int
	msg  string
}

// Received is one message the server accepted.
//
// Its parsing helpers read only Data, so Received{Data: b} parses any RFC 5322
// message, such as a file written by an outbox.
type Received struct {
	// From is the envelope sender (MAIL FROM).
	From string
	// To are the envelope recipients (RCPT TO).
	To []string
	// Data is the message exactly as sent after DATA: headers and body.
	Data []byte
	// Conn numbers the connection that carried the message, from 1 in the
	// order connections were accepted.
	Conn int
	// SMTPUTF8 reports whether MAIL carried the SMTPUTF8 parameter.
	SMTPUTF8 bool
}

// Option configures Start.
type Option func(*options)

type options struct {
	tls            bool
	smtputf8       bool
	username, pass string
}

// WithSMTPUTF8 announces SMTPUTF8 (RFC 6531) in the EHLO reply and accepts
// non-ASCII addresses in a mail whose MAIL carries the SMTPUTF8 parameter.
// Without it the server is a strict ASCII relay, as many are.
func WithSMTPUTF8() Option { return func(o *options) { o.smtputf8 = true } }

// WithTLS offers STARTTLS with a certificate for 127.0.0.1 and localhost
// signed by a throw-away CA; clients trust it through Server.ClientTLSConfig.
func WithTLS() Option { return func(o *options) { o.tls = true } }

// WithAuth advertises AUTH PLAIN and refuses MAIL before a successful login
// with these credentials (535 for wrong ones, 530 without login). Without
// WithTLS the server allows AUTH on a plain connection.
func WithAuth(username, password string) Option {
	return func(o *options) { o.username, o.pass = username, password }
}

// Start starts a server on 127.0.0.1:0 and registers its Close with
// tb.Cleanup. It fails tb if the server cannot start.
func Start(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("smtptest: listen: %v", err)
	}
	s := &Server{
		served:   make(chan struct{}),
		conns:    make(map[*trackedConn]struct{}),
		username: o.username,
		password: o.pass,
	}
	s.changed = sync.NewCond(&s.mu)
	s.listener = &trackingListener{Listener: l, s: s}

	s.srv = smtp.NewServer(backend{s})
	s.srv.Domain = "localhost"
	s.srv.AllowInsecureAuth = true
	s.srv.MaxMessageBytes = 10 << 20
	s.srv.MaxRecipients = 50
	s.srv.EnableSMTPUTF8 = o.smtputf8
	// A client that hangs must not keep Close waiting for long.
	s.srv.ReadTimeout = 30 * time.Second
	s.srv.WriteTimeout = 30 * time.Second
	// Dropped connections and protocol errors are what tests provoke; logging
	// them would only add noise (and testing.T must not be used after the test).
	s.srv.ErrorLog = log.New(io.Discard, "", 0)
	if o.tls {
		cfg, pool, err := selfSignedTLS()
		if err != nil {
			_ = l.Close()
			tb.Fatalf("smtptest: certificate: %v", err)
		}
		s.srv.TLSConfig = cfg
		s.tlsPool = pool
	}

	go func() {
		defer close(s.served)
		_ = s.srv.Serve(s.listener)
	}()
	tb.Cleanup(s.Close)
	return s
}

// Addr is the host:port the server listens on.
func (s *Server) Addr() string { return s.listener.Addr().String() }

// Host is the IP address the server listens on, "127.0.0.1".
func (s *Server) Host() string { return s.listener.Addr().(*net.TCPAddr).IP.String() }

// Port is the port the server listens on.
func (s *Server) Port() int { return s.listener.Addr().(*net.TCPAddr).Port }

// ClientTLSConfig returns a TLS configuration that trusts the server's
// certificate, or nil when the server was started without WithTLS.
func (s *Server) ClientTLSConfig() *tls.Config {
	if s.tlsPool == nil {
		return nil
	}
	return &tls.Config{RootCAs: s.tlsPool, ServerName: s.Host(), MinVersion: tls.VersionTLS12}
}

// Messages returns a copy of the messages accepted so far, in order.
func (s *Server) Messages() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Received(nil), s.messages...)
}

// WaitForMessages waits until at least n messages were accepted and returns
// them all; after timeout it returns those accepted so far and an error.
func (s *Server) WaitForMessages(n int, timeout time.Duration) ([]Received, error) {
	timedOut := false
	timer := time.AfterFunc(timeout, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		timedOut = true
		s.changed.Broadcast()
	})
	defer timer.Stop()

	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.messages) < n && !timedOut {
		s.changed.Wait()
	}
	got := append([]Received(nil), s.messages...)
	if len(got) < n {
		return got, fmt.Errorf("smtptest: %d of %d messages after %v", len(got), n, timeout)
	}
	return got, nil
}

// Connections is the number of connections accepted so far, open or closed.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connCount
}

// OpenConnections is the number of connections open now.
func (s *Server) OpenConnections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Rejected is the number of DATA commands answered with an injected failure.
func (s *Server) Rejected() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rejected
}

// FailNext makes the next n DATA commands fail with code and msg (for
// example 451 "try again later", or 550 "mailbox unavailable"). The message
// data is read and discarded; it is not recorded. FailNext takes precedence
// over SetFailing.
func (s *Server) FailNext(n int, code int, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := 0; i < n; i++ {
		s.failNext = append(s.failNext, failure{code, msg})
	}
}

// SetFailing makes every DATA command fail with code until ClearFailing,
// as during an outage.
func (s *Server) SetFailing(code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failing = &failure{code: code, msg: "injected failure " + strconv.Itoa(code)}
}

// ClearFailing ends SetFailing.
func (s *Server) ClearFailing() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failing = nil
}

// DropConnections closes every open connection without an SMTP reply, as a
// crashed or restarted server would. The server keeps accepting new ones.
func (s *Server) DropConnections() {
	s.mu.Lock()
	conns := make([]*trackedConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// Close stops the server, closes all connections and waits until they are
// closed. Start registers it with tb.Cleanup; calling it again is harmless.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()

	_ = s.srv.Close()
	// Serve may not have registered the listener with go-smtp yet, in which
	// case srv.Close did not close it.
	_ = s.listener.Close()
	s.DropConnections()
	<-s.served
	s.handlers.Wait()
}

// FailNextFor makes the next n DATA commands of mails to addr fail with
// code and msg, whatever else the server receives meanwhile: for tests that
// share a broker, where other mails may arrive in between. It takes
// precedence over FailNext and SetFailing.
func (s *Server) FailNextFor(addr string, n int, code int, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failFor == nil {
		s.failFor = map[string][]failure{}
	}
	for i := 0; i < n; i++ {
		s.failFor[addr] = append(s.failFor[addr], failure{code, msg})
	}
}

// RejectedFor is the number of DATA commands to addr answered with a failure
// injected by FailNextFor.
func (s *Server) RejectedFor(addr string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rejectedFor[addr]
}

// nextFailure returns the injected failure for this DATA command, if any.
func (s *Server) nextFailure(to []string) *failure {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, addr := range to {
		if fs := s.failFor[addr]; len(fs) > 0 {
			s.failFor[addr] = fs[1:]
			s.rejected++
			if s.rejectedFor == nil {
				s.rejectedFor = map[string]int{}
			}
			s.rejectedFor[addr]++
			return &fs[0]
		}
	}
	if len(s.failNext) > 0 {
		f := s.failNext[0]
		s.failNext = s.failNext[1:]
		s.rejected++
		return &f
	}
	if s.failing != nil {
		s.rejected++
		f := *s.failing
		return &f
	}
	return nil
}

func (s *Server) record(r Received) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.messages = append(s.messages, r)
	s.changed.Broadcast()
}

// trackingListener counts accepted connections and remembers them so that
// DropConnections can cut them. Counting here rather than in NewSession is
// exact: go-smtp starts a new session after STARTTLS on the same connection.
type trackingListener struct {
	net.Listener
	s *Server
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	if l.s.closed {
		_ = c.Close()
		return nil, net.ErrClosed
	}
	l.s.connCount++
	tc := &trackedConn{Conn: c, s: l.s, id: l.s.connCount}
	l.s.conns[tc] = struct{}{}
	l.s.handlers.Add(1)
	return tc, nil
}

// trackedConn is a server-side connection that unregisters itself on Close.
type trackedConn struct {
	net.Conn
	s    *Server
	id   int
	once sync.Once
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
		c.s.handlers.Done()
	})
	return err
}

// backend creates a session per connection (and again after STARTTLS).
type backend struct{ s *Server }

func (b backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	id := 0
	if tc, ok := c.Conn().(*trackedConn); ok {
		id = tc.id
	} else if tlsConn, ok := c.Conn().(*tls.Conn); ok {
		if tc, ok := tlsConn.NetConn().(*trackedConn); ok {
			id = tc.id
		}
	}
	return &session{s: b.s, conn: id, authed: b.s.username == ""}, nil
}

// session is one SMTP transaction state.
type session struct {
	s      *Server
	conn   int
	authed bool
	from   string
	to     []string
	utf8   bool // MAIL carried SMTPUTF8
}

var errAuthRequired = &smtp.SMTPError{
	Code:         530,
	EnhancedCode: smtp.EnhancedCode{5, 7, 0},
	Message:      "Authentication required",
}

func (ss *session) AuthMechanisms() []string {
	if ss.s.username == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (ss *session) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain || ss.s.username == "" {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if username != ss.s.username || password != ss.s.password {
			return smtp.ErrAuthFailed
		}
		ss.authed = true
		return nil
	}), nil
}

// errNeedsSMTPUTF8 refuses a non-ASCII address in a mail without SMTPUTF8.
var errNeedsSMTPUTF8 = &smtp.SMTPError{
	Code:         553,
	EnhancedCode: smtp.EnhancedCode{5, 6, 7},
	Message:      "Non-ASCII address requires SMTPUTF8",
}

func (ss *session) Mail(from string, opts *smtp.MailOptions) error {
	if !ss.authed {
		return errAuthRequired
	}
	ss.utf8 = opts != nil && opts.UTF8
	if !ss.utf8 && !isASCII(from) {
		return errNeedsSMTPUTF8
	}
	ss.from = from
	ss.to = nil
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if !ss.authed {
		return errAuthRequired
	}
	if !ss.utf8 && !isASCII(to) {
		return errNeedsSMTPUTF8
	}
	ss.to = append(ss.to, to)
	return nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func (ss *session) Data(r io.Reader) error {
	// r must be drained before Data returns, failure or not.
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if f := ss.s.nextFailure(ss.to); f != nil {
		return &smtp.SMTPError{Code: f.code, EnhancedCode: smtp.EnhancedCodeNotSet, Message: f.msg}
	}
	ss.s.record(Received{From: ss.from, To: append([]string(nil), ss.to...), Data: data, Conn: ss.conn, SMTPUTF8: ss.utf8})
	return nil
}

func (ss *session) Reset() {
	ss.from = ""
	ss.to = nil
	ss.utf8 = false
}

func (ss *session) Logout() error { return nil }

// selfSignedTLS makes a server certificate for 127.0.0.1, ::1 and localhost,
// and the pool a client needs to trust it.
func selfSignedTLS() (*tls.Config, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "smtptest"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	cfg := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}},
		MinVersion:   tls.VersionTLS12,
	}
	return cfg, pool, nil
}

var _ smtp.AuthSession = (*session)(nil)

// MessagesTo returns the mails received so far that have addr among their
// recipients: on a shared server, a test's own mail.
func (s *Server) MessagesTo(addr string) []Received {
	var out []Received
	for _, m := range s.Messages() {
		for _, to := range m.To {
			if to == addr {
				out = append(out, m)
				break
			}
		}
	}
	return out
}

// WaitFor waits until at least n mails to addr arrived and returns them all;
// it fails tb after timeout.
func (s *Server) WaitFor(tb testing.TB, addr string, n int, timeout time.Duration) []Received {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := s.MessagesTo(addr)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%d mails to %s within %v, want %d", len(got), addr, timeout, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// SenderConfig is a plain-text client configuration for this server (no
// TLS, no AUTH), with a test sender address.
func (s *Server) SenderConfig() mail.SMTPConfig {
	return mail.SMTPConfig{Host: s.Host(), Port: s.Port(), TLS: mail.TLSNone, From: "Countersign <no-reply@countersign.test>"}
}

// Sender is a mail.SMTPSender on SenderConfig, closed when the test ends
// (after whatever the test started later, such as a worker using it).
func (s *Server) Sender(tb testing.TB) *mail.SMTPSender {
	tb.Helper()
	sender, err := mail.NewSMTPSender(s.SenderConfig(), slog.New(slog.DiscardHandler))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = sender.Close() })
	return sender
}

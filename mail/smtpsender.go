package mail

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	netmail "net/mail"
	"strconv"
	"sync"

	gomail "github.com/wneessen/go-mail"
	"github.com/wneessen/go-mail/smtp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// SMTPSender sends mails over one SMTP connection that it keeps open and
// reuses for every mail, sending them one at a time: a consumer sends mails
// one by one, and a TLS handshake plus AUTH per mail would cost more than the
// gomail. It dials on the first Send, not in NewSMTPSender, so that a mail server
// that is down does not stop the service from starting; the first Send then
// fails with a temporary error.
//
// A mail costs four round trips: MAIL, RCPT, DATA and the end of the data.
// go-mail's NOOP before each mail and RSET after it are switched off: after
// the end of the data a server is ready for the next MAIL (RFC 5321 4.1.1.4),
// and a connection the server closed meanwhile (idle timeout, restart) shows
// at MAIL just as it would at NOOP. When MAIL on a reused connection fails
// without a reply, or with 421 (the server is closing it), nothing of the
// mail was sent, so Send dials again and sends the mail on the new
// connection, within the same call. After any other failure that was not an
// SMTP reply the connection is dropped and the next Send dials. (Measured in
// BenchmarkNotifierThroughput: the two round trips saved are a third of the
// time one mail takes on a loopback server.)
//
// Addresses (see ErrSMTPUTF8Required): after each EHLO the sender notes
// whether the server announced SMTPUTF8. If it did, mails go out with the
// SMTPUTF8 parameter and addresses in Unicode. If not, each domain goes in
// its A-label form (IDNA's lookup profile), in the envelope and in the From
// and To headers, and a mail to a local part with non-ASCII characters
// fails at once with a permanent error, without a word to the server. Unless
// SMTPConfig.ASCIILocalPartOnly is set, a connection to such a server logs
// a warning, once per connection.
//
// The sender holds the go-mail *smtp.Client itself (DialToSMTPClientWithContext
// and SendWithSMTPClient rather than DialWithContext and Send) so that it can
// drop a broken connection without waiting for a QUIT reply.
type SMTPSender struct {
	cfg    SMTPConfig
	from   *netmail.Address
	logger *slog.Logger
	client *gomail.Client
	tracer trace.Tracer

	// sem admits one Send at a time; unlike a mutex, waiting for it can be
	// abandoned when the context ends. It guards conn and closed.
	sem    chan struct{}
	conn   *smtp.Client
	closed bool
	// smtputf8 is whether conn's server announced SMTPUTF8.
	smtputf8 bool

	// raw is the TCP connection under conn, kept to abort a Send whose context
	// ends: closing it makes the blocked read or write return at once.
	rawMu sync.Mutex
	raw   net.Conn
}

var _ Sender = (*SMTPSender)(nil)

// NewSMTPSender validates cfg and returns a sender for cfg.Host; it does not
// connect yet. logger may be nil.
func NewSMTPSender(cfg SMTPConfig, logger *slog.Logger) (*SMTPSender, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Host == "" {
		return nil, errors.New("smtp sender: SMTP_HOST is empty")
	}
	cfg = cfg.WithDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	from, err := netmail.ParseAddress(cfg.From)
	if err != nil {
		return nil, fmt.Errorf("smtp sender: MAIL_FROM: %w", err) // Validate checked it already
	}

	s := &SMTPSender{
		cfg:    cfg,
		from:   from,
		logger: logger.With(slog.String("smtp_host", cfg.Host), slog.Int("smtp_port", cfg.Port)),
		sem:    make(chan struct{}, 1),
		tracer: newTracer(cfg.TracerProvider),
	}

	policy := gomail.TLSMandatory
	switch cfg.TLS {
	case TLSOpportunistic:
		policy = gomail.TLSOpportunistic
	case TLSNone:
		policy = gomail.NoTLS
	}
	opts := []gomail.Option{
		gomail.WithPort(cfg.Port),
		gomail.WithTimeout(cfg.Timeout),
		gomail.WithTLSPolicy(policy),
		gomail.WithDialContextFunc(s.dialContext),
		gomail.WithoutNoop(),
		gomail.WithoutRset(),
	}
	if cfg.TLSConfig != nil {
		tc := cfg.TLSConfig.Clone()
		if tc.ServerName == "" {
			tc.ServerName = cfg.Host
		}
		opts = append(opts, gomail.WithTLSConfig(tc))
	}
	if cfg.Username != "" {
		opts = append(opts,
			gomail.WithSMTPAuth(gomail.SMTPAuthAutoDiscover),
			gomail.WithUsername(cfg.Username),
			gomail.WithPassword(cfg.Password),
		)
	}
	s.client, err = gomail.NewClient(cfg.Host, opts...)
	if err != nil {
		return nil, fmt.Errorf("smtp sender: %s", redact(err.Error(), cfg.Password))
	}
	return s, nil
}

// Send sends m, dialling first when there is no open connection. See Sender
// for the error contract. Send waits for a Send in progress on the shared
// connection; ctx bounds that wait as well as the sending.
//
// Each call is an "smtp send" span (kind client), a child of the span in
// ctx: in the notifier that is the span of the record being handled, so
// the mail ends the trace that began with the request (see events/kafka).
func (s *SMTPSender) Send(ctx context.Context, m Message) (err error) {
	ctx, span := s.tracer.Start(ctx, "smtp send", trace.WithSpanKind(trace.SpanKindClient))
	defer func() { endSpan(span, err) }()
	if span.IsRecording() {
		span.SetAttributes(attribute.String("server.address", s.cfg.Host), attribute.Int("server.port", s.cfg.Port),
			attribute.String("mail.message_id", m.ID))
	}
	// An invalid message is refused before waiting for the connection; the
	// form sent is built once the server's extensions are known.
	if _, err := buildMsg(s.from, m, utf8Addresses); err != nil {
		return err
	}

	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return contextError("send", m.ID, ctx.Err())
	}
	defer func() { <-s.sem }()

	if s.closed {
		return &Error{Op: "send", MessageID: m.ID, Temporary: true, Detail: ErrSenderClosed.Error(), Err: ErrSenderClosed}
	}
	if err := ctx.Err(); err != nil {
		return contextError("send", m.ID, err)
	}

	// A cancelled context closes the connection under go-mail, which does not
	// take a context for sending; the aborted connection is then dropped.
	stop := context.AfterFunc(ctx, s.closeRaw)
	err = s.send(ctx, m)
	if !stop() {
		s.drop()
		if err != nil {
			return contextError("send", m.ID, ctx.Err())
		}
	}
	return err
}

// send delivers m on the open connection, or on a new one. The caller holds
// sem.
func (s *SMTPSender) send(ctx context.Context, m Message) error {
	id := m.ID
	reused := s.conn != nil
	if !reused {
		if err := s.dial(ctx, id); err != nil {
			return err
		}
	}

	msg, err := s.sendOnConn(m)
	if err != nil && reused && staleConnection(err) {
		// MAIL, the first command of the mail, failed for want of the
		// connection: the server closed it while it was idle. Nothing of the
		// mail was sent, so sending it on a new connection cannot duplicate
		// it.
		s.logger.Info("smtp connection lost, reconnecting")
		s.drop()
		if err := s.dial(ctx, id); err != nil {
			return err
		}
		msg, err = s.sendOnConn(m)
	}
	if err == nil {
		return nil
	}
	if msg == nil {
		// Refused before a word to the server (ErrSMTPUTF8Required): the
		// connection is as good as before.
		return err
	}
	if msg.IsDelivered() {
		// The server accepted the mail and only the RSET after it failed:
		// reporting an error would make the caller send it twice.
		s.logger.Debug("smtp reset after delivery failed, dropping connection", slog.String("message_id", id))
		s.drop()
		return nil
	}
	me := s.sendError(id, err)
	if me.Code == 0 {
		// Not an SMTP reply (broken pipe, timeout): the connection's state is
		// unknown, so it is not used again.
		s.drop()
	}
	return me
}

// sendOnConn builds m in the form the connected server takes (see
// SMTPSender) and sends it. A nil msg means it was refused before anything
// was sent.
func (s *SMTPSender) sendOnConn(m Message) (*gomail.Msg, error) {
	msg, err := buildMsg(s.from, m, !s.smtputf8)
	if err != nil {
		return nil, err
	}
	return msg, s.client.SendWithSMTPClient(s.conn, msg)
}

// staleConnection reports whether err says that a reused connection was no
// longer usable before anything of the mail was sent: the connection check
// failed, or MAIL got no reply or 421 ("closing transmission channel").
func staleConnection(err error) bool {
	var se *gomail.SendError
	if !errors.As(err, &se) {
		return false
	}
	switch se.Reason {
	case gomail.ErrConnCheck:
		return true
	case gomail.ErrSMTPMailFrom:
		code := se.ErrorCode()
		return code == 0 || code == 421
	}
	return false
}

// dial opens the connection: TCP, EHLO, STARTTLS and AUTH as configured. The
// caller holds sem. Every dial failure is temporary, AUTH and certificate
// failures included: they are the service's configuration, not the mail's
// fault, and the mail can be sent once that is fixed.
func (s *SMTPSender) dial(ctx context.Context, id string) error {
	conn, err := s.client.DialToSMTPClientWithContext(ctx)
	if err != nil {
		// go-mail leaves the TCP connection open when EHLO, STARTTLS or AUTH
		// fails.
		s.closeRaw()
		if ctxErr := ctx.Err(); ctxErr != nil {
			return contextError("dial", id, ctxErr)
		}
		me := &Error{
			Op: "dial", MessageID: id, Temporary: true,
			Detail: "smtp " + net.JoinHostPort(s.cfg.Host, strconv.Itoa(s.cfg.Port)) + ": " + redact(err.Error(), s.cfg.Password),
		}
		var netErr net.Error
		if errors.As(err, &netErr) {
			me.Err = netErr
		}
		return me
	}
	s.conn = conn
	// go-mail issued EHLO (again after STARTTLS); Extension reads its reply.
	s.smtputf8, _ = conn.Extension("SMTPUTF8")
	s.logger.Debug("smtp connection opened", slog.Bool("smtputf8", s.smtputf8))
	if !s.smtputf8 && !s.cfg.ASCIILocalPartOnly {
		s.logger.Warn("the SMTP server does not announce SMTPUTF8: mail to addresses with non-ASCII characters before the @ cannot be delivered and is dead-lettered; " +
			"set ALLOW_UTF8_LOCAL_PART=false so that the user API refuses such addresses at registration, or use a relay that supports SMTPUTF8")
	}
	return nil
}

// Connect opens the connection now, if none is open, rather than at the
// next Send, so that the server's extensions are read (and the warning of
// SMTPConfig.ASCIILocalPartOnly logged) when a service starts. Its error is
// a temporary *Error, as Send's; the next Send dials again.
func (s *SMTPSender) Connect(ctx context.Context) error {
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return contextError("dial", "", ctx.Err())
	}
	defer func() { <-s.sem }()
	if s.closed {
		return &Error{Op: "dial", Temporary: true, Detail: ErrSenderClosed.Error(), Err: ErrSenderClosed}
	}
	if s.conn != nil {
		return nil
	}
	stop := context.AfterFunc(ctx, s.closeRaw)
	err := s.dial(ctx, "")
	if !stop() {
		s.drop()
		return contextError("dial", "", ctx.Err())
	}
	return err
}

// sendError classifies a go-mail send error: an SMTP 5xx reply, or an
// address go-mail refuses, is permanent; everything else is temporary,
// including 4xx replies and failures without a reply.
func (s *SMTPSender) sendError(id string, err error) *Error {
	me := &Error{Op: "send", MessageID: id, Temporary: true, Detail: redact(err.Error(), s.cfg.Password)}
	var se *gomail.SendError
	if errors.As(err, &se) {
		me.Code = se.ErrorCode()
		me.EnhancedCode = se.EnhancedStatusCode()
		if me.Code >= 500 || se.Reason == gomail.ErrGetSender || se.Reason == gomail.ErrGetRcpts {
			me.Temporary = false
		}
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		me.Err = netErr
	}
	return me
}

// Close sends QUIT and closes the connection, after waiting for a Send in
// progress (bounded by that Send's context and SMTP_TIMEOUT per command). Later Sends fail with ErrSenderClosed. Close is idempotent.
func (s *SMTPSender) Close() error {
	s.sem <- struct{}{}
	defer func() { <-s.sem }()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.conn == nil {
		return nil
	}
	err := s.client.CloseWithSMTPClient(s.conn)
	s.drop()
	if err != nil {
		return fmt.Errorf("close smtp connection: %s", redact(err.Error(), s.cfg.Password))
	}
	return nil
}

// dialContext is go-mail's dialer; it remembers the connection for closeRaw.
func (s *SMTPSender) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	s.rawMu.Lock()
	s.raw = c
	s.rawMu.Unlock()
	return c, nil
}

// closeRaw closes the TCP connection without QUIT. It runs on its own
// goroutine when a Send's context ends.
func (s *SMTPSender) closeRaw() {
	s.rawMu.Lock()
	defer s.rawMu.Unlock()
	if s.raw != nil {
		_ = s.raw.Close()
		s.raw = nil
	}
}

// drop forgets the connection so that the next Send dials. The caller holds
// sem.
func (s *SMTPSender) drop() {
	s.closeRaw()
	s.conn = nil
}

func contextError(op, id string, err error) *Error {
	return &Error{Op: op, MessageID: id, Temporary: true, Detail: err.Error(), Err: err}
}

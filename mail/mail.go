package mail

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	netmail "net/mail"
	"regexp"
	"strings"
	"unicode/utf8"

	gomail "github.com/wneessen/go-mail"
	"golang.org/x/net/idna"

	"github.com/countersign/countersign/events"
)

// Message is one rendered mail to one recipient.
type Message struct {
	// To is the recipient's address, e.g. "ada@example.com".
	To string
	// ToName is the recipient's display name; may be empty.
	ToName string
	// Subject must be one line; line breaks are folded into spaces.
	Subject string
	// HTML and Text are the two alternative bodies; at least one must be set.
	HTML string
	Text string
	// ID identifies the mail across retries, e.g. the event ID. It becomes
	// the Message-ID, so a mail sent again after a failure carries the same
	// Message-ID and receivers can recognise the duplicate. It must therefore
	// differ between different mails: when one event causes several mails,
	// add the template name ("<event id>.verification"). IDs made of letters,
	// digits, '.', '_' and '-' are used as they are, others are hashed; an
	// empty ID gets a random Message-ID. Errors name the mail by this ID.
	ID string
}

// Sender delivers mails.
//
// Send must be safe for concurrent use. It returns nil once the mail was
// handed over: accepted by the SMTP server, or written to the outbox. An error
// means the mail was not handed over, as far as the sender knows, and is
// temporary (send it again later) unless IsPermanent reports true,
// in which case sending it again can never succeed (SMTP 5xx, an invalid
// address). Delivery is at-least-once: when a connection breaks after the
// server took the mail but before it answered, Send reports an error and the
// retry sends a duplicate with the same Message-ID.
//
// Errors never contain the body, the subject, the recipient's address or a
// password; they name Message.ID.
//
// Close releases the connection; Send after Close fails with ErrSenderClosed.
type Sender interface {
	Send(ctx context.Context, m Message) error
	Close() error
}

var (
	// ErrSenderClosed is the cause of a Send after Close. It is temporary:
	// the mail was not sent and another process may send it.
	ErrSenderClosed = errors.New("sender closed")
	// ErrInvalidMessage is the cause of a permanent error for a Message that
	// can never be sent: an invalid recipient address or no body.
	ErrInvalidMessage = errors.New("invalid message")
)

// Error is the error of every Sender in this package.
//
// Its text and its cause (Unwrap) contain no address, body or password, so
// it may be logged as it is: the SMTP server's reply is included with any
// address in it replaced by "[redacted]".
type Error struct {
	// Op is what failed: "validate", "dial", "send" or "write outbox".
	Op string
	// MessageID is the Message.ID of the gomail.
	MessageID string
	// Temporary reports whether sending the mail again may succeed.
	Temporary bool
	// Code is the SMTP reply code (4xx or 5xx); 0 when the failure was not an
	// SMTP reply (connection refused, timeout, closed connection).
	Code int
	// EnhancedCode is the RFC 3463 status such as "5.1.1", when the server
	// sent one.
	EnhancedCode string
	// Detail describes the failure, free of personal data.
	Detail string
	// Err is the cause when it carries no personal data (context errors,
	// network errors, ErrSenderClosed, ErrInvalidMessage); nil otherwise.
	Err error
}

func (e *Error) Error() string {
	kind := "temporary"
	if !e.Temporary {
		kind = "permanent"
	}
	id := e.MessageID
	if id == "" {
		id = "(no id)"
	}
	return fmt.Sprintf("%s mail %s: %s (%s)", e.Op, id, e.Detail, kind)
}

func (e *Error) Unwrap() error { return e.Err }

// ServiceUnavailable reports whether the failure is the mail service's
// rather than this mail's: the SMTP server could not be reached or logged
// into, answered 421 (service not available), dropped the connection or
// timed out without a reply, or the outbox could not be written. Until that
// is fixed every mail fails the same way. A 4xx reply to one mail (450
// mailbox busy, 451 greylisting) is not this: other mails may go through.
func (e *Error) ServiceUnavailable() bool {
	if !e.Temporary || errors.Is(e.Err, ErrSenderClosed) {
		return false
	}
	switch e.Op {
	case "dial", "write outbox":
		return true
	case "send":
		return e.Code == 0 || e.Code == 421
	}
	return false
}

// IsServiceUnavailable reports whether err is a Error whose
// ServiceUnavailable is true.
func IsServiceUnavailable(err error) bool {
	var me *Error
	return errors.As(err, &me) && me.ServiceUnavailable()
}

// IsPermanent reports whether err says that a mail can never be
// sent, so that the caller dead-letters it instead of retrying.
func IsPermanent(err error) bool {
	var me *Error
	return errors.As(err, &me) && !me.Temporary
}

// NewSender returns the SMTP sender when cfg.Host is set, and otherwise an
// OutboxSender writing to outboxDir (default "./outbox"), so that a developer
// needs no mail server. It validates cfg either way.
func NewSender(cfg SMTPConfig, outboxDir string, logger *slog.Logger) (Sender, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Host != "" {
		return NewSMTPSender(cfg, logger)
	}
	cfg = cfg.WithDefaults()
	o, err := NewOutboxSender(outboxDir, OutboxFrom(cfg.From))
	if err != nil {
		return nil, err
	}
	logger.Info("SMTP_HOST is empty: mails are written to the outbox, not sent", slog.String("dir", o.Dir()))
	return o, nil
}

// Address forms of buildMsg.
const (
	// utf8Addresses keeps addresses as they are, in Unicode: what a server
	// that announced SMTPUTF8 (RFC 6531) receives, and what the outbox
	// writes. Headers then carry UTF-8 addresses (RFC 6532).
	utf8Addresses = false
	// asciiAddresses puts every domain in its A-label form, for a server
	// without SMTPUTF8; a non-ASCII local part cannot be sent at all.
	asciiAddresses = true
)

// buildMsg turns m into a go-mail message from the sender from. The SMTP and
// the outbox senders share it so that an outbox file is the MIME an SMTPUTF8
// server would have received. With asciiAddresses the envelope and the From
// and To headers carry each domain in its A-label form (IDNA's lookup
// profile), and a recipient with a non-ASCII local part is refused with
// ErrSMTPUTF8Required. Its errors are permanent.
func buildMsg(from *netmail.Address, m Message, ascii bool) (*gomail.Msg, error) {
	invalid := func(detail string) error {
		return &Error{Op: "validate", MessageID: m.ID, Detail: detail, Err: ErrInvalidMessage}
	}
	to, err := netmail.ParseAddress(m.To)
	if err != nil || to.Name != "" {
		// The address itself stays out of the error: it is personal data.
		return nil, invalid("invalid recipient address")
	}
	if m.HTML == "" && m.Text == "" {
		return nil, invalid("no body")
	}
	toAddr := to.Address
	if ascii {
		if !isASCII(localOf(toAddr)) {
			return nil, &Error{Op: "send", MessageID: m.ID, Detail: ErrSMTPUTF8Required.Error(), Err: ErrSMTPUTF8Required}
		}
		if toAddr, err = asciiAddress(toAddr); err != nil {
			return nil, invalid("invalid recipient domain")
		}
		fromAddr, err := asciiAddress(from.Address)
		if err != nil {
			return nil, invalid("invalid sender domain")
		}
		from = &netmail.Address{Name: from.Name, Address: fromAddr}
	}

	msg := gomail.NewMsg(gomail.WithNoDefaultUserAgent())
	msg.FromMailAddress(from)
	msg.ToMailAddress(&netmail.Address{Name: singleLine(m.ToName), Address: toAddr})
	msg.Subject(singleLine(m.Subject))
	// The Message-ID is the same in both forms, so that a mail sent again
	// through another relay is still recognised as a duplicate.
	idDomain, err := idna.Lookup.ToASCII(domainOf(from.Address))
	if err != nil {
		idDomain = "localhost"
	}
	msg.SetMessageIDWithValue(messageIDLocal(m.ID) + "@" + idDomain)
	msg.SetDate()
	// RFC 3834: tells auto-responders (vacation replies) not to answer.
	msg.SetGenHeader(gomail.Header("Auto-Submitted"), "auto-generated")
	switch {
	case m.Text != "" && m.HTML != "":
		// Text first: multipart/alternative lists the preferred part last.
		msg.SetBodyString(gomail.TypeTextPlain, m.Text)
		msg.AddAlternativeString(gomail.TypeTextHTML, m.HTML)
	case m.Text != "":
		msg.SetBodyString(gomail.TypeTextPlain, m.Text)
	default:
		msg.SetBodyString(gomail.TypeTextHTML, m.HTML)
	}
	return msg, nil
}

// singleLine folds line breaks and runs of white space into single spaces,
// so that no header value can start a new header.
func singleLine(s string) string { return strings.Join(strings.Fields(s), " ") }

var safeID = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$`)

// messageIDLocal is the left-hand side of the Message-ID, and the tail of an
// outbox file name: the ID itself when it is safe in both places, a hash of
// it otherwise (stable, so retries keep it), random for an empty ID.
func messageIDLocal(id string) string {
	switch {
	case id == "":
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		return hex.EncodeToString(b)
	case safeID.MatchString(id) && !strings.Contains(id, "..") && !strings.HasSuffix(id, "."):
		return id
	default:
		sum := sha256.Sum256([]byte(id))
		return "h" + hex.EncodeToString(sum[:16])
	}
}

// ErrSMTPUTF8Required is the cause of the permanent error for a mail to an
// address with a non-ASCII character before the "@" through an SMTP server
// that did not announce SMTPUTF8 (RFC 6531): only such a server may be given
// that address. The mail is not sent; a caller dead-letters it. A non-ASCII
// domain needs no SMTPUTF8: it is sent in its A-label form.
var ErrSMTPUTF8Required = errors.New("recipient address has non-ASCII characters before the @ and the SMTP server does not support SMTPUTF8")

// ReasonSMTPUTF8 is the "reason" label of the services' undeliverable-mail
// metrics for ErrSMTPUTF8Required.
const ReasonSMTPUTF8 = "smtputf8"

// asciiAddress returns addr with its domain in the A-label form of IDNA's
// lookup profile ("li@例子.测试" is "li@xn--fsqu00a.xn--0zwm56d"); an
// ASCII domain is returned as it is.
func asciiAddress(addr string) (string, error) {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 || isASCII(addr[at+1:]) {
		return addr, nil
	}
	d, err := idna.Lookup.ToASCII(addr[at+1:])
	if err != nil {
		return "", err
	}
	return addr[:at+1] + d, nil
}

// localOf returns the part of addr before its last "@".
func localOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return addr[:i]
	}
	return addr
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 && i < len(addr)-1 {
		return addr[i+1:]
	}
	return "localhost"
}

// emailLike matches anything that looks like an address in a server reply.
var emailLike = regexp.MustCompile(`[^\s<>()\[\],;:"']+@[^\s<>()\[\],;:"']+`)

// redact removes personal data and secret from a go-mail or server error
// text: go-mail appends the affected recipients and the Message-ID, and
// servers often quote the address they refuse.
func redact(s, secret string) string {
	if i := strings.Index(s, ", affected "); i >= 0 {
		s = s[:i]
	}
	s = emailLike.ReplaceAllString(s, "[redacted]")
	if secret != "" {
		s = strings.ReplaceAll(s, secret, "[redacted]")
	}
	return s
}

// HandlerError turns a Sender's error into what an events.Handler returns:
// nil for nil; events.Permanent for a refusal that will not change (5xx, an
// invalid message), so the event is dead-lettered at once; events.Unavailable
// when the mail service itself is down (see Error.ServiceUnavailable), so the
// event is held back for as long as the outage lasts and never
// dead-lettered; and the error itself, retried within the budget, otherwise.
func HandlerError(err error) error {
	switch {
	case err == nil:
		return nil
	case IsPermanent(err):
		return events.Permanent(err)
	case IsServiceUnavailable(err):
		return events.Unavailable(err)
	default:
		return err
	}
}

// Failure reasons, the "reason" label of the services' failed-mail metrics.
const (
	ReasonTemporary = "temporary"
	ReasonPermanent = "permanent"
)

// FailureReason says whether a Sender's error is permanent (the event is
// dead-lettered) or temporary (retried, or held back while the service is
// down), for a metric's label.
func FailureReason(err error) string {
	if IsPermanent(err) {
		return ReasonPermanent
	}
	return ReasonTemporary
}

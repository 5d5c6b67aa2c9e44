package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"golang.org/x/net/idna"
	"golang.org/x/text/unicode/norm"
)

// Topics. They are part of the public contract: renaming one orphans every
// subscriber, so they never change.
const (
	TopicUserAccountCreated  = "user_account_created"
	TopicUserAccountVerified = "user_account_verified"
	TopicUserAccountDeleted  = "user_account_deleted"
	TopicUserAccountExists   = "user_account_exists"
)

// Topics lists every topic the platform publishes to.
var Topics = []string{TopicUserAccountCreated, TopicUserAccountVerified, TopicUserAccountDeleted, TopicUserAccountExists}

// TopicConfigs are the topic settings the contract depends on, applied when
// a topic is created (kafka.EnsureTopics) and checked on existing ones.
//
// user_account_verified is compacted and keyed by the normalized address:
// Kafka keeps the newest verified event of every address for good, so the
// user API rebuilds the set of verified addresses from it at every start.
// A record with a key and no value (a tombstone, published by `countersign
// forget`) deletes its address: subscribers of the topic skip such records.
var TopicConfigs = map[string]map[string]string{
	TopicUserAccountVerified: {"cleanup.policy": "compact"},
}

// CloudEvents envelope constants.
const (
	SpecVersion     = "1.0"
	Source          = "countersign/userapi"
	DataContentType = "application/json"
	// ContentType is the value of the Kafka "content-type" header of every
	// record: CloudEvents structured mode.
	ContentType = "application/cloudevents+json"
	// HeaderContentType is the Kafka header that carries ContentType.
	HeaderContentType = "content-type"
)

// Event is one CloudEvents 1.0 document. Data holds the type-specific payload;
// use the typed accessors (UserAccountCreated, UserAccountVerified) to read it.
type Event struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Time            time.Time       `json:"time"`
	DataContentType string          `json:"datacontenttype"`
	Data            json.RawMessage `json:"data"`

	// TraceParent and TraceState are the CloudEvents distributed-tracing
	// extension: the W3C trace context (https://www.w3.org/TR/trace-context/)
	// of the operation that produced the event, so a subscriber can continue
	// its trace. Both are optional and omitted when empty; Decode keeps them
	// as sent and does not check them (a malformed one only starts a new
	// trace).
	TraceParent string `json:"traceparent,omitempty"`
	TraceState  string `json:"tracestate,omitempty"`

	// Key is the Kafka record key: the normalized e-mail address. It is not
	// part of the JSON document.
	Key string `json:"-"`
}

// SealedCode is a verification code sealed with AES-256-GCM by a Keyring.
// Nonce and Ciphertext are standard base64 in JSON.
type SealedCode struct {
	KeyID      string `json:"key_id"`
	Nonce      []byte `json:"nonce"`
	Ciphertext []byte `json:"ciphertext"`
}

// UserAccountCreated is the data of a user_account_created event: a person
// registered (or asked for a new code) and must be sent EncryptedCode.
type UserAccountCreated struct {
	UserID        string     `json:"user_id"`
	Email         string     `json:"email"`
	FirstName     string     `json:"first_name"`
	LastName      string     `json:"last_name"`
	ExpiresAt     time.Time  `json:"expires_at"`
	EncryptedCode SealedCode `json:"encrypted_code"`
	// EncryptedLinkToken, when present, is the one-time token of the
	// verification link (Keyring.SealLinkToken), issued with the code and
	// valid exactly as long as it. The mail links to PUBLIC_URL +
	// ConfirmPath + token. Absent when the user API serves no pages.
	EncryptedLinkToken *SealedCode `json:"encrypted_link_token,omitempty"`
	// Locale is the language the person registered in ("en", "zh-CN"), so
	// the mail speaks it. Optional; missing or unknown means English.
	Locale string `json:"locale,omitempty"`
}

// ConfirmPath is the path of the verification link below PUBLIC_URL; the
// link token follows it. Opening it shows a page asking to confirm: only
// that page's POST verifies, so a mail scanner fetching the link verifies
// nothing.
const ConfirmPath = "/confirm/"

// UserAccountVerified is the data of a user_account_verified event: the person
// proved they own the address.
type UserAccountVerified struct {
	UserID     string    `json:"user_id"`
	Email      string    `json:"email"`
	FirstName  string    `json:"first_name"`
	LastName   string    `json:"last_name"`
	VerifiedAt time.Time `json:"verified_at"`
	// Locale is the language of the page where the address was verified
	// ("en", "zh-CN"). Optional; missing or unknown means English.
	Locale string `json:"locale,omitempty"`
}

// UserAccountDeleted is the data of a user_account_deleted event: an
// operator erased the account of the address (`countersign forget`), which
// may register again as a new one. Subscribers delete what they hold about
// the address or user id. UserID is the user id of the address's last
// user_account_verified event, and empty when none was found.
type UserAccountDeleted struct {
	UserID    string    `json:"user_id,omitempty"`
	Email     string    `json:"email"`
	DeletedAt time.Time `json:"deleted_at"`
}

// UserAccountExists is the data of a user_account_exists event: someone
// (maybe the owner, maybe not) tried to register an address that is a
// verified account already. The owner may be told so ("you already have an
// account; you need do nothing"). The user API publishes at most one per
// address per RESEND_INTERVAL, within the address's mail budgets.
//
// It carries no names on purpose: the names given in the attempt are
// whoever tried's text, and must not reach the owner's mailbox; the user
// API does not know the account's user id.
type UserAccountExists struct {
	Email       string    `json:"email"`
	AttemptedAt time.Time `json:"attempted_at"`
	// Locale is the language of the page the attempt was made on ("en",
	// "zh-CN"). Optional; missing or unknown means English.
	Locale string `json:"locale,omitempty"`
}

// NormalizeEmail returns the canonical form of an address, the record key
// and store key every service uses: trimmed, in Unicode NFC, lower-cased,
// and with the domain (after the last "@") in the Unicode form that IDNA's
// lookup profile (UTS #46, golang.org/x/net/idna) gives it. So the composed
// and decomposed forms of "á" are one key; an A-label domain
// ("xn--fsqu00a.xn--0zwm56d") and its Unicode form ("例子.测试") are one key;
// and fullwidth letters and the ideographic full stop in a domain become
// ASCII ("ＥＸＡＭＰＬＥ。com" is "example.com"). The local part is only
// NFC-normalized and lower-cased: what a mailbox's owner typed is theirs,
// and compatibility forms in it are refused by the user API rather than
// folded. A domain IDNA refuses is left NFC and lower-cased; the user API
// refuses such an address, so it never becomes a key.
//
// The result is a fixed point: NormalizeEmail(NormalizeEmail(s)) equals
// NormalizeEmail(s) (FuzzNormalizeEmail), so a key normalized again by a
// subscriber or the Keyring stays the key.
func NormalizeEmail(s string) string {
	s = strings.TrimSpace(s)
	// NFC before and after lower-casing: lower-casing can leave a base letter
	// and a combining mark that compose.
	s = norm.NFC.String(strings.ToLower(norm.NFC.String(s)))
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return s
	}
	domain := s[at+1:]
	if isASCIILower(domain) && !strings.Contains(domain, "xn--") {
		// The common case: nothing to map (IDNA's mapping of an ASCII
		// domain without A-labels is lower-casing, done above).
		return s
	}
	if u, err := idna.Lookup.ToUnicode(domain); err == nil {
		return s[:at+1] + u
	}
	return s
}

// isASCIILower reports whether s has only ASCII characters and no upper-case
// letter.
func isASCIILower(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 0x80 || ('A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// NewUserAccountCreated builds a user_account_created event with a fresh id.
func NewUserAccountCreated(d UserAccountCreated) (Event, error) {
	d.Email = NormalizeEmail(d.Email)
	d.ExpiresAt = d.ExpiresAt.UTC()
	if err := d.validate(); err != nil {
		return Event{}, err
	}
	return newEvent(TopicUserAccountCreated, d.Email, d)
}

// NewUserAccountVerified builds a user_account_verified event with a fresh id.
func NewUserAccountVerified(d UserAccountVerified) (Event, error) {
	d.Email = NormalizeEmail(d.Email)
	d.VerifiedAt = d.VerifiedAt.UTC()
	if err := d.validate(); err != nil {
		return Event{}, err
	}
	return newEvent(TopicUserAccountVerified, d.Email, d)
}

// NewUserAccountDeleted builds a user_account_deleted event with a fresh id.
func NewUserAccountDeleted(d UserAccountDeleted) (Event, error) {
	d.Email = NormalizeEmail(d.Email)
	d.DeletedAt = d.DeletedAt.UTC()
	if err := d.validate(); err != nil {
		return Event{}, err
	}
	return newEvent(TopicUserAccountDeleted, d.Email, d)
}

// NewUserAccountExists builds a user_account_exists event with a fresh id.
func NewUserAccountExists(d UserAccountExists) (Event, error) {
	d.Email = NormalizeEmail(d.Email)
	d.AttemptedAt = d.AttemptedAt.UTC()
	if err := d.validate(); err != nil {
		return Event{}, err
	}
	return newEvent(TopicUserAccountExists, d.Email, d)
}

func newEvent(typ, key string, data any) (Event, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return Event{}, fmt.Errorf("encode %s data: %w", typ, err)
	}
	return Event{
		SpecVersion:     SpecVersion,
		ID:              uuid.NewString(),
		Source:          Source,
		Type:            typ,
		Time:            time.Now().UTC(),
		DataContentType: DataContentType,
		Data:            raw,
		Key:             key,
	}, nil
}

// Marshal returns the structured-mode JSON document of e: the bytes
// encoding/json gives for e with its time in UTC, written by hand because
// encoding/json re-scans and copies the already encoded data into a second
// buffer, a tenth of a register's publish (docs/benchmarks.md, issue 18).
// Data that is not compact, HTML-escaped JSON (as json.Marshal writes it)
// takes encoding/json's path, so the bytes are the same whatever the data.
func (e Event) Marshal() ([]byte, error) {
	return e.AppendMarshal(nil)
}

// AppendMarshal appends what Marshal returns to b: a publisher can reuse
// one buffer for many events.
func (e Event) AppendMarshal(b []byte) ([]byte, error) {
	e.Time = e.Time.UTC()
	if y := e.Time.Year(); y < 0 || y > 9999 || !plainJSON(e.Data) {
		j, err := json.Marshal(e)
		if err != nil {
			return b, err
		}
		return append(b, j...), nil
	}
	if b == nil {
		b = make([]byte, 0, 160+len(e.ID)+len(e.Source)+len(e.Type)+len(e.DataContentType)+len(e.Data)+len(e.TraceParent)+len(e.TraceState))
	}
	b = append(b, `{"specversion":`...)
	b = appendJSONString(b, e.SpecVersion)
	b = append(b, `,"id":`...)
	b = appendJSONString(b, e.ID)
	b = append(b, `,"source":`...)
	b = appendJSONString(b, e.Source)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, e.Type)
	b = append(b, `,"time":"`...)
	b = e.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","datacontenttype":`...)
	b = appendJSONString(b, e.DataContentType)
	b = append(b, `,"data":`...)
	if e.Data == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, e.Data...)
	}
	if e.TraceParent != "" {
		b = append(b, `,"traceparent":`...)
		b = appendJSONString(b, e.TraceParent)
	}
	if e.TraceState != "" {
		b = append(b, `,"tracestate":`...)
		b = appendJSONString(b, e.TraceState)
	}
	return append(b, '}'), nil
}

// plainJSON reports whether data is valid JSON that encoding/json would
// copy as it is: no white space, and none of the characters it escapes
// for HTML (<, >, &, U+2028, U+2029). Anything else, including bytes
// such characters may hide in, is left to encoding/json.
func plainJSON(data []byte) bool {
	if data == nil {
		return true // encoding/json's null
	}
	for _, c := range data {
		switch c {
		case ' ', '\t', '\n', '\r', '<', '>', '&', 0xE2:
			return false
		}
	}
	return json.Valid(data)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as encoding/json writes a string (with its
// HTML escaping, and invalid UTF-8 as U+FFFD).
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// ErrInvalidEvent is matched (errors.Is) by every error Decode returns.
var ErrInvalidEvent = errors.New("invalid event")

// DecodeError says why a record is not a valid event. It never quotes the
// record, which may carry personal data: it ends up in logs and in the
// dead-letter topic's dlq-error header.
type DecodeError struct {
	Reason string
	Err    error
}

func (e *DecodeError) Error() string {
	if e.Err != nil {
		return "invalid event: " + e.Reason + ": " + e.Err.Error()
	}
	return "invalid event: " + e.Reason
}

func (e *DecodeError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrInvalidEvent, e.Err}
	}
	return []error{ErrInvalidEvent}
}

func invalid(format string, args ...any) error {
	return &DecodeError{Reason: fmt.Sprintf(format, args...)}
}

// Decode parses and validates one structured-mode event: the envelope, the
// type, and the required fields of its data. Any failure is a *DecodeError.
func Decode(value []byte) (Event, error) {
	var e Event
	dec := json.NewDecoder(bytes.NewReader(value))
	if err := dec.Decode(&e); err != nil {
		return Event{}, &DecodeError{Reason: "malformed JSON", Err: stripJSONValue(err)}
	}
	if len(bytes.TrimSpace(value[dec.InputOffset():])) != 0 {
		return Event{}, invalid("trailing data after the JSON document")
	}
	switch {
	case e.SpecVersion != SpecVersion:
		return Event{}, invalid("specversion is not %q", SpecVersion)
	case e.ID == "":
		return Event{}, invalid("missing id")
	case e.Source == "":
		return Event{}, invalid("missing source")
	case e.Time.IsZero():
		return Event{}, invalid("missing time")
	case e.Time.UTC().Year() < 0 || e.Time.UTC().Year() > 9999:
		return Event{}, invalid("time out of range")
	case len(e.Data) == 0 || string(e.Data) == "null":
		return Event{}, invalid("missing data")
	case e.DataContentType != "" && e.DataContentType != DataContentType:
		return Event{}, invalid("datacontenttype is not %q", DataContentType)
	}
	var err error
	switch e.Type {
	case TopicUserAccountCreated:
		_, err = e.UserAccountCreated()
	case TopicUserAccountVerified:
		_, err = e.UserAccountVerified()
	case TopicUserAccountDeleted:
		_, err = e.UserAccountDeleted()
	case TopicUserAccountExists:
		_, err = e.UserAccountExists()
	case "":
		err = invalid("missing type")
	default:
		err = invalid("unknown type")
	}
	if err != nil {
		return Event{}, err
	}
	return e, nil
}

// UserAccountCreated decodes and validates the data of a user_account_created event.
func (e Event) UserAccountCreated() (UserAccountCreated, error) {
	var d UserAccountCreated
	if e.Type != TopicUserAccountCreated {
		return d, invalid("type is not %q", TopicUserAccountCreated)
	}
	if err := json.Unmarshal(e.Data, &d); err != nil {
		return d, &DecodeError{Reason: "malformed data", Err: stripJSONValue(err)}
	}
	return d, d.validate()
}

// UserAccountVerified decodes and validates the data of a user_account_verified event.
func (e Event) UserAccountVerified() (UserAccountVerified, error) {
	var d UserAccountVerified
	if e.Type != TopicUserAccountVerified {
		return d, invalid("type is not %q", TopicUserAccountVerified)
	}
	if err := json.Unmarshal(e.Data, &d); err != nil {
		return d, &DecodeError{Reason: "malformed data", Err: stripJSONValue(err)}
	}
	return d, d.validate()
}

// UserAccountDeleted decodes and validates the data of a user_account_deleted event.
func (e Event) UserAccountDeleted() (UserAccountDeleted, error) {
	var d UserAccountDeleted
	if e.Type != TopicUserAccountDeleted {
		return d, invalid("type is not %q", TopicUserAccountDeleted)
	}
	if err := json.Unmarshal(e.Data, &d); err != nil {
		return d, &DecodeError{Reason: "malformed data", Err: stripJSONValue(err)}
	}
	return d, d.validate()
}

// UserAccountExists decodes and validates the data of a user_account_exists event.
func (e Event) UserAccountExists() (UserAccountExists, error) {
	var d UserAccountExists
	if e.Type != TopicUserAccountExists {
		return d, invalid("type is not %q", TopicUserAccountExists)
	}
	if err := json.Unmarshal(e.Data, &d); err != nil {
		return d, &DecodeError{Reason: "malformed data", Err: stripJSONValue(err)}
	}
	return d, d.validate()
}

func (d UserAccountExists) validate() error {
	switch {
	case d.Email == "":
		return invalid("data: missing email")
	case d.AttemptedAt.IsZero():
		return invalid("data: missing attempted_at")
	}
	return nil
}

func (d UserAccountDeleted) validate() error {
	switch {
	case d.Email == "":
		return invalid("data: missing email")
	case d.DeletedAt.IsZero():
		return invalid("data: missing deleted_at")
	}
	return nil
}

func (d UserAccountCreated) validate() error {
	switch {
	case d.UserID == "":
		return invalid("data: missing user_id")
	case d.Email == "":
		return invalid("data: missing email")
	case d.FirstName == "":
		return invalid("data: missing first_name")
	case d.LastName == "":
		return invalid("data: missing last_name")
	case d.ExpiresAt.IsZero():
		return invalid("data: missing expires_at")
	case d.EncryptedCode.KeyID == "":
		return invalid("data: missing encrypted_code.key_id")
	case len(d.EncryptedCode.Nonce) == 0:
		return invalid("data: missing encrypted_code.nonce")
	case len(d.EncryptedCode.Ciphertext) == 0:
		return invalid("data: missing encrypted_code.ciphertext")
	case d.EncryptedLinkToken != nil && (d.EncryptedLinkToken.KeyID == "" || len(d.EncryptedLinkToken.Nonce) == 0 || len(d.EncryptedLinkToken.Ciphertext) == 0):
		return invalid("data: incomplete encrypted_link_token")
	}
	return nil
}

func (d UserAccountVerified) validate() error {
	switch {
	case d.UserID == "":
		return invalid("data: missing user_id")
	case d.Email == "":
		return invalid("data: missing email")
	case d.FirstName == "":
		return invalid("data: missing first_name")
	case d.LastName == "":
		return invalid("data: missing last_name")
	case d.VerifiedAt.IsZero():
		return invalid("data: missing verified_at")
	}
	return nil
}

// stripJSONValue keeps encoding/json's position information but drops any
// quoted input, which could carry personal data into logs and DLQ headers.
func stripJSONValue(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("syntax error at offset %d", se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("field %q: want %s, got JSON %s", te.Field, te.Type, te.Value)
	}
	var pe *time.ParseError
	if errors.As(err, &pe) {
		return errors.New("time is not RFC 3339")
	}
	return errors.New(strings.SplitN(err.Error(), ":", 2)[0])
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

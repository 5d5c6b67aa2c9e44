package userapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/mail"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
	"golang.org/x/text/width"

	"github.com/countersign/countersign/events"
)

// Input limits.
const (
	// MaxBodyBytes bounds a request body; a larger one gets 413.
	MaxBodyBytes = 64 << 10
	// MaxEmailLength is the longest address accepted, in bytes: the
	// 256-octet SMTP path limit less the angle brackets (RFC 5321 4.5.3.1.3).
	MaxEmailLength = 254
	// MaxNameLength is the longest first or last name, in characters.
	MaxNameLength = 100
)

// RegisterRequest is the body of POST /api/register.
type RegisterRequest struct {
	Email     string `json:"email"`
	FirstName string `json:"first_name"`
	LastName  string `json:"last_name"`
}

// VerifyRequest is the body of POST /api/verify.
type VerifyRequest struct {
	Email string `json:"email"`
	Code  string `json:"code"`
}

// ResendRequest is the body of POST /api/resend.
type ResendRequest struct {
	Email string `json:"email"`
}

// validate normalizes the request in place and reports the first problem.
func (q *RegisterRequest) validate() error {
	var err error
	if q.Email, err = validEmail(q.Email); err != nil {
		return err
	}
	if q.FirstName, err = validName("first_name", q.FirstName); err != nil {
		return err
	}
	q.LastName, err = validName("last_name", q.LastName)
	return err
}

func (q *VerifyRequest) validate() error {
	var err error
	if q.Email, err = validEmail(q.Email); err != nil {
		return err
	}
	q.Code, err = validCode(q.Code)
	return err
}

func (q *ResendRequest) validate() error {
	var err error
	q.Email, err = validEmail(q.Email)
	return err
}

// validEmail returns the normalized address (events.NormalizeEmail, the key
// every service uses). It must be one bare address as net/mail parses it: no
// display name, no comments, no list, no quoted local part. Its domain must be
// a name mail can be routed to on the Internet: not an IP address or IP
// literal, at least two labels, each a valid host name label (letters,
// digits and hyphens, no hyphen at either end) once converted by IDNA, and
// no longer than DNS allows. Invisible characters (format characters such as
// the zero-width space and joiners, and the few other characters that render
// as nothing) and fullwidth or halfwidth forms before the "@" are refused:
// they make one address look like another. Other non-ASCII characters are
// accepted on both sides of the "@" (see Config.ASCIILocalPartOnly). Details
// never quote the input (it is personal data and may be logged by a proxy).
func validEmail(s string) (string, error) {
	switch {
	case !utf8.ValidString(s):
		return "", Errorf(CodeInvalidRequest, "email is not valid UTF-8.")
	// Before trimming, as for names: a CR or LF is refused, not trimmed.
	case strings.ContainsFunc(s, isForbiddenRune):
		return "", Errorf(CodeInvalidRequest, "email contains control characters.")
	case strings.ContainsFunc(s, isInvisibleRune):
		return "", Errorf(CodeInvalidRequest, "email contains invisible characters (such as a zero-width space or joiner); type the address without them.")
	}
	n := events.NormalizeEmail(s)
	switch {
	case n == "":
		return "", Errorf(CodeInvalidRequest, "email is required.")
	case len(n) > MaxEmailLength:
		return "", Errorf(CodeInvalidRequest, "email is longer than %d bytes.", MaxEmailLength)
	}
	if at := strings.LastIndexByte(n, '@'); at >= 0 && strings.HasPrefix(n[at+1:], "[") {
		return "", Errorf(CodeInvalidRequest, "email's domain is an IP address literal; an address with a domain name, such as example.com, is required.")
	}
	a, err := mail.ParseAddress(n)
	if err != nil || a.Name != "" || !strings.EqualFold(a.Address, n) {
		return "", Errorf(CodeInvalidRequest, "email is not a single valid e-mail address.")
	}
	at := strings.LastIndexByte(n, '@')
	local, domain := n[:at], n[at+1:]
	if strings.ContainsFunc(local, isWidthVariant) {
		return "", Errorf(CodeInvalidRequest, "email has fullwidth or halfwidth characters before the @; type them in their ordinary width.")
	}
	ascii, err := hostProfile.ToASCII(domain)
	if err != nil {
		return "", Errorf(CodeInvalidRequest, "email's domain is not a valid host name: each part between dots must be letters, digits and hyphens, not starting or ending with a hyphen, and at most 63 characters.")
	}
	if !strings.Contains(ascii, ".") {
		return "", Errorf(CodeInvalidRequest, "email's domain has no dot; a full domain name, such as example.com, is required.")
	}
	// Every top-level domain starts with a letter (IANA's are letters or
	// A-labels): this refuses 127.0.0.1 and the other forms of an IPv4
	// address some resolvers accept, such as 0x7f.1.
	if tld := ascii[strings.LastIndexByte(ascii, '.')+1:]; tld == "" || tld[0] < 'a' || tld[0] > 'z' {
		if strings.Trim(tld, "0123456789") == "" {
			return "", Errorf(CodeInvalidRequest, "email's domain is an IP address; an address with a domain name, such as example.com, is required.")
		}
		return "", Errorf(CodeInvalidRequest, "email's domain does not end in a top-level domain such as .com (one that starts with a letter).")
	}
	// The envelope carries the A-label form when the relay lacks SMTPUTF8.
	if len(local)+1+len(ascii) > MaxEmailLength {
		return "", Errorf(CodeInvalidRequest, "email is longer than %d bytes once its domain is converted for DNS.", MaxEmailLength)
	}
	return n, nil
}

// hostProfile is IDNA's lookup profile (UTS #46 mapping, STD3 rules: letters,
// digits and hyphens, no hyphen at either end of a label) plus the DNS length
// limits: 63 bytes a label, 253 a name. Its A-labels are those the mail
// package sends to a relay without SMTPUTF8 (idna.Lookup), which has the same
// mapping.
var hostProfile = idna.New(idna.MapForLookup(), idna.BidiRule(), idna.Transitional(false), idna.VerifyDNSLength(true))

// isInvisibleRune reports characters that render as nothing and so make one
// address look like another: every format character (Unicode category Cf:
// zero-width space, joiners, word joiner, soft hyphen, byte order mark,
// bidirectional marks), and the few letters and marks that display as
// blank (Hangul fillers, the combining grapheme joiner, Khmer inherent
// vowels).
func isInvisibleRune(r rune) bool {
	switch r {
	case '\u034F', '\u115F', '\u1160', '\u17B4', '\u17B5', '\u3164', '\uFFA0':
		return true
	}
	return unicode.Is(unicode.Cf, r)
}

// isWidthVariant reports the fullwidth and halfwidth forms (East Asian width
// F or H: "ａ" for "a", "ｶ" for "カ"), which an input method may produce but
// a mailbox almost never has. In the domain IDNA maps them; in the local
// part they are refused rather than folded, since folding would change whose
// mailbox the address names.
func isWidthVariant(r rune) bool {
	switch width.LookupRune(r).Kind() {
	case width.EastAsianFullwidth, width.EastAsianHalfwidth:
		return true
	}
	return false
}

// nonASCIILocalPart reports whether the part of the address before its last
// "@" has a character outside ASCII: such an address can receive mail only
// through a relay that supports SMTPUTF8 (RFC 6531).
func nonASCIILocalPart(email string) bool {
	at := strings.LastIndexByte(email, '@')
	if at < 0 {
		at = len(email)
	}
	for i := 0; i < at; i++ {
		if email[i] >= utf8.RuneSelf {
			return true
		}
	}
	return false
}

// errUTF8LocalPart answers a registration of an address with a non-ASCII
// local part when Config.ASCIILocalPartOnly is set.
func errUTF8LocalPart() error {
	return Errorf(CodeInvalidRequest, "Addresses with non-ASCII characters before the @ cannot receive mail here: the mail relay does not support them. Please register an address whose part before the @ has only ASCII letters, digits and punctuation.")
}

// validName trims a name and checks it is 1–100 characters of printable text.
func validName(field, s string) (string, error) {
	if !utf8.ValidString(s) {
		return "", Errorf(CodeInvalidRequest, "%s is not valid UTF-8.", field)
	}
	// Control characters are refused before trimming, so a trailing CR/LF,
	// the mark of a header-injection attempt, is not silently dropped.
	if strings.ContainsFunc(s, isForbiddenRune) {
		return "", Errorf(CodeInvalidRequest, "%s contains control characters.", field)
	}
	s = strings.TrimSpace(s)
	switch n := utf8.RuneCountInString(s); {
	case n == 0:
		return "", Errorf(CodeInvalidRequest, "%s is required.", field)
	case n > MaxNameLength:
		return "", Errorf(CodeInvalidRequest, "%s is longer than %d characters.", field, MaxNameLength)
	}
	return s, nil
}

// isForbiddenRune reports the characters refused in names and addresses:
// C0/C1 controls and DEL (CR and LF among them), the Unicode line and
// paragraph separators, and the bidirectional overrides and isolates that
// can make a name display as something else in a mail. Joiners (ZWJ, ZWNJ),
// which some scripts and emoji need, are allowed.
func isForbiddenRune(r rune) bool {
	switch {
	case unicode.IsControl(r), r == '\u2028', r == '\u2029':
		return true
	case r >= '\u202A' && r <= '\u202E', r >= '\u2066' && r <= '\u2069':
		return true
	}
	return false
}

func validCode(s string) (string, error) {
	s = strings.TrimSpace(s)
	// The exact length is CODE_DIGITS, which the handler checks: the body
	// alone is checked against every length a code can have.
	if len(s) < MinCodeDigits || len(s) > MaxCodeDigits || strings.ContainsFunc(s, func(r rune) bool { return r < '0' || r > '9' }) {
		return "", Errorf(CodeInvalidRequest, "code must be %d to %d digits.", MinCodeDigits, MaxCodeDigits)
	}
	return s, nil
}

// validator is a request body type.
type validator interface{ validate() error }

// decodeRequest reads and validates a JSON request body into v: the content
// type must be application/json (415), the body at most MaxBodyBytes (413),
// exactly one JSON object with only known fields of the right types (400).
func decodeRequest(w http.ResponseWriter, r *http.Request, v validator) error {
	if err := checkContentType(r.Header.Get("Content-Type")); err != nil {
		return err
	}
	if r.ContentLength > MaxBodyBytes {
		drainTooLarge(w, r, false)
		return Errorf(CodeBodyTooLarge, "The request body is larger than %d bytes.", MaxBodyBytes)
	}
	body := http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	if err := decodeJSON(body, v); err != nil {
		if e, ok := errors.AsType[*Error](err); ok && e.Code == CodeBodyTooLarge {
			drainTooLarge(w, r, true)
		}
		return err
	}
	return v.validate()
}

func checkContentType(ct string) error {
	if ct == "" {
		return Errorf(CodeUnsupportedMediaType, "Content-Type must be application/json.")
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return Errorf(CodeUnsupportedMediaType, "Content-Type must be application/json.")
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return Errorf(CodeUnsupportedMediaType, "The only charset accepted is utf-8.")
	}
	return nil
}

// decodeJSON decodes exactly one JSON object from body into v. Its error
// details name fields and offsets, never values.
func decodeJSON(body io.Reader, v any) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	// One document only: trailing data is as malformed as a truncated one.
	if _, err := dec.Token(); err != io.EOF {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return jsonError(err)
		}
		return Errorf(CodeInvalidRequest, "The body must hold exactly one JSON object.")
	}
	return nil
}

func jsonError(err error) error {
	var (
		mbe *http.MaxBytesError
		se  *json.SyntaxError
		te  *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &mbe):
		return Errorf(CodeBodyTooLarge, "The request body is larger than %d bytes.", MaxBodyBytes)
	case errors.Is(err, io.EOF):
		return Errorf(CodeInvalidRequest, "The body is empty; a JSON object is required.")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return Errorf(CodeInvalidRequest, "The body is truncated JSON.")
	case errors.As(err, &se):
		return Errorf(CodeInvalidRequest, "The body is not valid JSON (at byte %d).", se.Offset)
	case errors.As(err, &te):
		if te.Field == "" {
			return Errorf(CodeInvalidRequest, "The body must be a JSON object.")
		}
		return Errorf(CodeInvalidRequest, "Field %s must be a %s.", quoteField(te.Field), te.Type)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// encoding/json has no typed error for this one.
		return Errorf(CodeInvalidRequest, "Unknown field %s.", quoteField(strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)))
	}
	return Errorf(CodeInvalidRequest, "The body is not a valid JSON request.")
}

// quoteField quotes a field name taken from the request, cut short: the
// name is the client's, and is echoed only so they can fix their request.
func quoteField(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	return fmt.Sprintf("%q", strings.ToValidUTF8(s, "?"))
}

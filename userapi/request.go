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
	// CodeLength is the number of digits in a code.
	CodeLength = 6
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

// validEmail returns the normalized address. It must be one bare address as
// net/mail parses it: no display name, no comments, no list. Details never
// quote the input (it is personal data and may be logged by a proxy).
func validEmail(s string) (string, error) {
	switch {
	case !utf8.ValidString(s):
		return "", Errorf(CodeInvalidRequest, "email is not valid UTF-8.")
	// Before trimming, as for names: a CR or LF is refused, not trimmed.
	case strings.ContainsFunc(s, isForbiddenRune):
		return "", Errorf(CodeInvalidRequest, "email contains control characters.")
	}
	n := events.NormalizeEmail(s)
	switch {
	case n == "":
		return "", Errorf(CodeInvalidRequest, "email is required.")
	case len(n) > MaxEmailLength:
		return "", Errorf(CodeInvalidRequest, "email is longer than %d bytes.", MaxEmailLength)
	}
	a, err := mail.ParseAddress(n)
	if err != nil || a.Name != "" || !strings.EqualFold(a.Address, n) {
		return "", Errorf(CodeInvalidRequest, "email is not a single valid e-mail address.")
	}
	return n, nil
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
	if len(s) != CodeLength || strings.ContainsFunc(s, func(r rune) bool { return r < '0' || r > '9' }) {
		return "", Errorf(CodeInvalidRequest, "code must be %d digits.", CodeLength)
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

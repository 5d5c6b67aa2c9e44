package userapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/countersign/countersign/problem"
)

// ProblemBase prefixes every problem type URI (package problem's Base).
const ProblemBase = problem.Base

// Code is the kind of an application error. Each code has one problem type
// URI, one title and one HTTP status (see problems).
type Code string

// Error codes. The problem type URI of a code is ProblemBase + code.
const (
	CodeInvalidRequest       Code = "invalid-request"
	CodeInvalidCode          Code = "invalid-code"
	CodeTooManyAttempts      Code = "too-many-attempts"
	CodeResendTooSoon        Code = "resend-too-soon"
	CodeRateLimited          Code = "rate-limited"
	CodeUnsupportedMediaType Code = "unsupported-media-type"
	CodeBodyTooLarge         Code = "body-too-large"
	CodeMethodNotAllowed     Code = "method-not-allowed"
	CodeNotFound             Code = "not-found"
	CodeUnavailable          Code = "unavailable"
	CodeInternal             Code = "internal"
)

type problemKind struct {
	status int
	title  string
}

var problems = map[Code]problemKind{
	CodeInvalidRequest:       {http.StatusBadRequest, "Invalid request"},
	CodeInvalidCode:          {http.StatusBadRequest, "Invalid or expired code"},
	CodeTooManyAttempts:      {http.StatusTooManyRequests, "Too many attempts"},
	CodeResendTooSoon:        {http.StatusTooManyRequests, "Code sent too recently"},
	CodeRateLimited:          {http.StatusTooManyRequests, "Too many requests"},
	CodeUnsupportedMediaType: {http.StatusUnsupportedMediaType, "Unsupported media type"},
	CodeBodyTooLarge:         {http.StatusRequestEntityTooLarge, "Request body too large"},
	CodeMethodNotAllowed:     {http.StatusMethodNotAllowed, "Method not allowed"},
	CodeNotFound:             {http.StatusNotFound, "Not found"},
	CodeUnavailable:          {http.StatusServiceUnavailable, "Service unavailable"},
	CodeInternal:             {http.StatusInternalServerError, "Internal error"},
}

// Codes lists every error code, for documentation checks.
func Codes() []Code {
	out := make([]Code, 0, len(problems))
	for c := range problems {
		out = append(out, c)
	}
	return out
}

// Type returns the problem type URI of c.
func (c Code) Type() string { return problem.Type(string(c)) }

// Status returns the HTTP status of c (500 for an unknown code).
func (c Code) Status() int {
	if k, ok := problems[c]; ok {
		return k.status
	}
	return http.StatusInternalServerError
}

// Error is an application error: what the client is told (Code and Detail)
// plus, for server-side failures, the cause that is logged and never shown.
// Detail is sent to the client as written, so it must never carry a code,
// an address or any other input.
type Error struct {
	Code   Code
	Detail string

	// RetryAfter, when positive, is sent as the Retry-After header, rounded
	// up to whole seconds.
	RetryAfter time.Duration

	// Allow lists the methods of the resource, sent as Allow with 405.
	Allow []string

	// Err is the internal cause of a 5xx, logged by the error writer.
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Detail, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Detail)
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with a formatted detail.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Detail: fmt.Sprintf(format, args...)}
}

// Problem is an RFC 9457 problem details document (package problem's).
type Problem = problem.Problem

// ContentTypeProblem is the media type of every error response.
const ContentTypeProblem = problem.ContentType

// writeError is the one place where an error becomes an HTTP response: it
// maps err to a status and a problem document, and logs it when the server,
// not the client, is at fault. Errors that are not an *Error are internal
// (500) and their text is never sent. Logged errors are built by this
// package and carry user ids at most, never a code or an address.
func writeError(w http.ResponseWriter, r *http.Request, logger *slog.Logger, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Code: CodeInternal, Detail: "The server failed to handle the request.", Err: err}
	}
	kind, ok := problems[e.Code]
	if !ok {
		kind = problems[CodeInternal]
	}
	if kind.status >= 500 {
		logger.LogAttrs(r.Context(), slog.LevelError, "request failed",
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.Int("status", kind.status),
			slog.String("problem", string(e.Code)),
			slog.Any("err", e.Err))
	}
	h := w.Header()
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int(math.Ceil(e.RetryAfter.Seconds()))))
	}
	if len(e.Allow) > 0 {
		h.Set("Allow", strings.Join(e.Allow, ", "))
	}
	problem.Write(w, Problem{
		Type:     e.Code.Type(),
		Title:    kind.title,
		Status:   kind.status,
		Detail:   e.Detail,
		Instance: r.URL.Path,
	})
}

// writeJSON sends v as the whole response. Responses are never cached: they
// describe one person's registration.
func writeJSON(w http.ResponseWriter, contentType string, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		// Only our own response types reach here; they always encode.
		body = []byte(`{"type":"` + CodeInternal.Type() + `","title":"Internal error","status":500,"detail":"encode response"}`)
		contentType, status = ContentTypeProblem, http.StatusInternalServerError
	}
	problem.WriteJSON(w, contentType, status, body)
}

package userapi

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gorilla/mux"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/templates"
)

// The hosted pages: plain HTML forms over the same steps as the JSON API
// (register, verify, resend), plus the verification link. They work without
// JavaScript and without cookies (the one cookie only saves typing the
// address again), answer every POST with a redirect (303) on success and
// the same page with the problem explained otherwise, and refuse posts
// from other sites (http.CrossOriginProtection).
//
// Routes (Config.Pages):
//
//	GET  /                  registration form
//	POST /                  register → 303 /check
//	GET  /check             "check your inbox": code form, resend, time left
//	POST /check             verify a code → 303 /verified
//	POST /resend            a new code → 303 /check?resent=1
//	GET  /confirm/{token}   the link's page: a "Confirm my address" button;
//	                        opening it changes nothing
//	POST /confirm/{token}   verify by link → 303 /verified
//	GET  /verified          done
//	GET  /static/{file}     the stylesheet and the script

// pendingCookie remembers, in the browser that registered, the address and
// when its code expires, so the code page need not ask for the address
// again. It holds nothing secret: the server trusts it for nothing but
// filling a form field and showing a time.
const pendingCookie = "countersign_pending"

// linkTokenBytes is the link token's entropy: 144 bits, 24 base64url
// characters.
const linkTokenBytes = 18

// maxFormBytes bounds a page's form body.
const maxFormBytes = 16 << 10

// contentSecurityPolicy allows the page's own stylesheet, script and forms
// and nothing else: no inline code, no other origin, no framing.
const contentSecurityPolicy = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"

// validatePages checks PUBLIC_URL when the pages are on.
func (c Config) validatePages() error {
	if !c.Pages {
		return nil
	}
	return ValidatePublicURL(c.PublicURL)
}

// ValidatePublicURL checks a PUBLIC_URL value: an absolute http or https
// URL with a host, and no user, query or fragment. Errors name PUBLIC_URL.
func ValidatePublicURL(v string) error {
	if v == "" {
		return fmt.Errorf("%s is required when %s is on: the address people open the pages at, such as https://accounts.example.com", EnvPublicURL, EnvPages)
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return fmt.Errorf("%s=%q: want an absolute http(s) URL without query or fragment, such as https://accounts.example.com", EnvPublicURL, v)
	}
	return nil
}

// pageRoutes adds the pages to r. limit wraps a handler in the per-client
// rate limit (or nothing when it is off).
func (s *Server) pageRoutes(r *mux.Router) {
	if !s.cfg.Pages {
		return
	}
	cop := http.NewCrossOriginProtection()
	if u, err := url.Parse(s.cfg.PublicURL); err == nil {
		// Behind a proxy that rewrites Host, the public origin is still ours.
		_ = cop.AddTrustedOrigin(u.Scheme + "://" + u.Host)
	}
	cop.SetDenyHandler(http.HandlerFunc(s.handleCrossOrigin))
	limit := func(h http.HandlerFunc) http.Handler {
		if s.limiter == nil {
			return h
		}
		return rateLimit(s.limiter, s.cfg.TrustedProxies, s.logger, s.pageError)(h)
	}
	page := func(h http.Handler) http.Handler { return pageHeaders(cop.Handler(h)) }

	r.Handle("/", page(http.HandlerFunc(s.handleRegisterPage))).Methods(http.MethodGet)
	r.Handle("/", page(limit(s.handleRegisterForm))).Methods(http.MethodPost)
	r.Handle("/check", page(http.HandlerFunc(s.handleCheckPage))).Methods(http.MethodGet)
	r.Handle("/check", page(limit(s.handleCheckForm))).Methods(http.MethodPost)
	r.Handle("/resend", page(limit(s.handleResendForm))).Methods(http.MethodPost)
	r.Handle(events.ConfirmPath+"{token}", page(limit(s.handleConfirmPage))).Methods(http.MethodGet)
	r.Handle(events.ConfirmPath+"{token}", page(limit(s.handleConfirmForm))).Methods(http.MethodPost)
	r.Handle("/verified", page(http.HandlerFunc(s.handleVerifiedPage))).Methods(http.MethodGet)
	static := http.StripPrefix("/static/", http.FileServerFS(templates.Static()))
	r.Handle("/static/{file}", pageHeaders(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		static.ServeHTTP(w, r)
	}))).Methods(http.MethodGet)
}

// pageHeaders sets the headers every page and asset carries.
func pageHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// locale is the page's language: the lang form field or query parameter
// (the visible switch), else the browser's Accept-Language.
func locale(r *http.Request) string {
	l := r.URL.Query().Get("lang")
	if r.PostForm != nil && r.PostForm.Get("lang") != "" {
		l = r.PostForm.Get("lang")
	}
	if l != "" {
		return templates.NormalizeLocale(l)
	}
	return templates.MatchAcceptLanguage(r.Header.Get("Accept-Language"))
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, name string, p templates.Page) {
	if p.Locale == "" {
		p.Locale = locale(r)
	}
	if p.Path == "" {
		p.Path = r.URL.Path
	}
	p.Now = time.Now()
	body, err := s.pages.Render(name, p)
	if err != nil {
		s.logger.ErrorContext(r.Context(), "render page", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// redirect answers a successful POST: 303 to path, in the page's language.
func redirect(w http.ResponseWriter, r *http.Request, path, lang string, extra ...string) {
	q := url.Values{"lang": {lang}}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	http.Redirect(w, r, path+"?"+q.Encode(), http.StatusSeeOther)
}

// parseForm reads a urlencoded form of at most maxFormBytes.
func parseForm(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	_ = r.ParseForm()
}

// fieldErrors collects one catalogue key per field, in form order.
type fieldErrors struct {
	byField map[string]string
	order   []string
}

func (f *fieldErrors) add(field, key string) {
	if f.byField == nil {
		f.byField = map[string]string{}
	}
	f.byField[field] = key
	f.order = append(f.order, field)
}

func (f *fieldErrors) put(p *templates.Page) { p.Errors, p.ErrorOrder = f.byField, f.order }

func pageEmail(f *fieldErrors, raw string) string {
	if strings.TrimSpace(raw) == "" {
		f.add("email", "error.email.missing")
		return ""
	}
	n, err := validEmail(raw)
	if err != nil {
		f.add("email", "error.email.invalid")
		return strings.TrimSpace(raw)
	}
	return n
}

func pageName(f *fieldErrors, field, raw string) string {
	n, err := validName(field, raw)
	switch {
	case err == nil:
		return n
	case strings.TrimSpace(raw) == "":
		f.add(field, "error."+field+".missing")
	case utf8.RuneCountInString(strings.TrimSpace(raw)) > MaxNameLength:
		f.add(field, "error.name.long")
	default:
		f.add(field, "error.name.invalid")
	}
	return strings.TrimSpace(raw)
}

func (s *Server) handleRegisterPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, templates.PageRegister, templates.Page{})
}

func (s *Server) handleRegisterForm(w http.ResponseWriter, r *http.Request) {
	parseForm(w, r)
	lang := locale(r)
	var f fieldErrors
	req := RegisterRequest{
		Email:     pageEmail(&f, r.PostFormValue("email")),
		FirstName: pageName(&f, "first_name", r.PostFormValue("first_name")),
		LastName:  pageName(&f, "last_name", r.PostFormValue("last_name")),
	}
	if f.byField["email"] == "" && s.cfg.ASCIILocalPartOnly && nonASCIILocalPart(req.Email) {
		f.add("email", "error.email.utf8")
	}
	p := templates.Page{Locale: lang, Path: "/", Email: req.Email, FirstName: req.FirstName, LastName: req.LastName}
	if f.order != nil {
		f.put(&p)
		s.render(w, r, http.StatusUnprocessableEntity, templates.PageRegister, p)
		return
	}
	stored, err := s.register(r.Context(), req, lang)
	if err != nil {
		s.formError(w, r, err, templates.PageRegister, p, "error.register.soon")
		return
	}
	s.setPending(w, stored.Email, stored.ExpiresAt)
	redirect(w, r, "/check", lang)
}

// formError shows page again with what went wrong: soonKey explains a
// *TooSoon answer, with the seconds to wait.
func (s *Server) formError(w http.ResponseWriter, r *http.Request, err error, name string, p templates.Page, soonKey string) {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Code: CodeInternal, Err: err}
	}
	status := e.Code.Status()
	switch e.Code {
	case CodeResendTooSoon:
		p.Alert, p.AlertArg = soonKey, max(1, int(e.RetryAfter.Round(time.Second).Seconds()))
		w.Header().Set("Retry-After", strconv.Itoa(p.AlertArg.(int)))
	case CodeInvalidCode:
		var f fieldErrors
		f.add("code", "error.code.invalid")
		f.put(&p)
	case CodeTooManyAttempts:
		var f fieldErrors
		f.add("code", "error.code.attempts")
		f.put(&p)
	default:
		if status >= 500 {
			s.logFailure(r, status, e)
		}
		p.Alert = "error.unavailable"
	}
	s.render(w, r, status, name, p)
}

func (s *Server) logFailure(r *http.Request, status int, e *Error) {
	s.logger.LogAttrs(r.Context(), slog.LevelError, "request failed",
		slog.String("method", r.Method),
		slog.String("path", safePath(r)),
		slog.Int("status", status),
		slog.String("problem", string(e.Code)),
		slog.Any("err", e.Err))
}

// safePath is the request path for logs: a link token is cut off.
func safePath(r *http.Request) string {
	if strings.HasPrefix(r.URL.Path, events.ConfirmPath) {
		return events.ConfirmPath + "…"
	}
	return r.URL.Path
}

// pageError answers a failure outside a form's own logic (the rate limit)
// with a page.
func (s *Server) pageError(w http.ResponseWriter, r *http.Request, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Code: CodeInternal, Err: err}
	}
	p := templates.Page{Title: "refused.title", Alert: "error.unavailable"}
	if e.Code == CodeRateLimited {
		p.Alert = "error.rate"
		if e.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(max(1, int(e.RetryAfter.Seconds()))))
		}
	} else if e.Code.Status() >= 500 {
		s.logFailure(r, e.Code.Status(), e)
	}
	s.render(w, r, e.Code.Status(), templates.PageMessage, p)
}

func (s *Server) handleCrossOrigin(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusForbidden, templates.PageMessage, templates.Page{
		Title: "refused.title", Alert: "error.crossorigin", AlertArg: s.cfg.PublicURL + "/",
	})
}

// setPending stores the address and its code's expiry in the cookie.
func (s *Server) setPending(w http.ResponseWriter, email string, expires time.Time) {
	http.SetCookie(w, &http.Cookie{
		Name:     pendingCookie,
		Value:    base64.RawURLEncoding.EncodeToString([]byte(email)) + "." + strconv.FormatInt(expires.Unix(), 10),
		Path:     "/",
		MaxAge:   int(time.Until(expires).Seconds()) + 1,
		HttpOnly: true,
		Secure:   strings.HasPrefix(s.cfg.PublicURL, "https:"),
		SameSite: http.SameSiteLaxMode,
	})
}

func (s *Server) clearPending(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: pendingCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: strings.HasPrefix(s.cfg.PublicURL, "https:"), SameSite: http.SameSiteLaxMode})
}

// pending reads the cookie; zero values when it is absent or malformed.
func pending(r *http.Request) (email string, expires time.Time) {
	c, err := r.Cookie(pendingCookie)
	if err != nil {
		return "", time.Time{}
	}
	e64, exp, ok := strings.Cut(c.Value, ".")
	b, err1 := base64.RawURLEncoding.DecodeString(e64)
	n, err2 := strconv.ParseInt(exp, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return "", time.Time{}
	}
	addr, err := validEmail(string(b))
	if err != nil {
		return "", time.Time{}
	}
	return addr, time.Unix(n, 0)
}

func (s *Server) handleCheckPage(w http.ResponseWriter, r *http.Request) {
	email, expires := pending(r)
	p := templates.Page{Email: email, ExpiresAt: expires}
	if !expires.After(time.Now()) {
		p.ExpiresAt = time.Time{}
	}
	if r.URL.Query().Get("resent") == "1" {
		p.Notice = "check.resent"
	}
	s.render(w, r, http.StatusOK, templates.PageCheck, p)
}

func (s *Server) handleCheckForm(w http.ResponseWriter, r *http.Request) {
	parseForm(w, r)
	lang := locale(r)
	var f fieldErrors
	email := pageEmail(&f, r.PostFormValue("email"))
	rawCode := strings.TrimSpace(r.PostFormValue("code"))
	code, err := validCode(rawCode)
	switch {
	case rawCode == "":
		f.add("code", "error.code.missing")
	case err != nil:
		f.add("code", "error.code.format")
	}
	_, expires := pending(r)
	p := templates.Page{Locale: lang, Path: "/check", Email: email}
	if expires.After(time.Now()) {
		p.ExpiresAt = expires
	}
	if f.order != nil {
		f.put(&p)
		s.render(w, r, http.StatusUnprocessableEntity, templates.PageCheck, p)
		return
	}
	if err := s.verify(r.Context(), VerifyRequest{Email: email, Code: code}, lang); err != nil {
		s.formError(w, r, err, templates.PageCheck, p, "error.resend.soon")
		return
	}
	s.clearPending(w)
	redirect(w, r, "/verified", lang)
}

func (s *Server) handleResendForm(w http.ResponseWriter, r *http.Request) {
	parseForm(w, r)
	lang := locale(r)
	var f fieldErrors
	email := pageEmail(&f, r.PostFormValue("email"))
	p := templates.Page{Locale: lang, Path: "/check", Email: email}
	if f.order != nil {
		f.put(&p)
		s.render(w, r, http.StatusUnprocessableEntity, templates.PageCheck, p)
		return
	}
	if err := s.resend(r.Context(), ResendRequest{Email: email}, lang); err != nil {
		s.formError(w, r, err, templates.PageCheck, p, "error.resend.soon")
		return
	}
	// The expiry a new code would have, whether or not one was sent: the
	// page must not tell which.
	s.setPending(w, email, time.Now().Add(s.cfg.CodeTTL))
	redirect(w, r, "/check", lang, "resent", "1")
}

// linkToken returns the {token} of the path when it has the form of one.
func linkToken(r *http.Request) (string, bool) {
	t := mux.Vars(r)["token"]
	b, err := base64.RawURLEncoding.DecodeString(t)
	return t, err == nil && len(b) == linkTokenBytes
}

// handleConfirmPage shows the link's page. It only reads: a mail scanner
// or a link preview fetching it verifies nothing and burns nothing.
func (s *Server) handleConfirmPage(w http.ResponseWriter, r *http.Request) {
	token, ok := linkToken(r)
	if ok {
		switch live, err := s.linkLive(r.Context(), token); {
		case err != nil:
			s.pageError(w, r, err)
			return
		case !live:
			ok = false
		}
	}
	if !ok {
		s.render(w, r, http.StatusGone, templates.PageConfirm, templates.Page{})
		return
	}
	s.render(w, r, http.StatusOK, templates.PageConfirm, templates.Page{Token: token})
}

func (s *Server) handleConfirmForm(w http.ResponseWriter, r *http.Request) {
	parseForm(w, r)
	lang := locale(r)
	token, ok := linkToken(r)
	if !ok {
		s.render(w, r, http.StatusGone, templates.PageConfirm, templates.Page{Locale: lang})
		return
	}
	err := s.verifyLink(r.Context(), token, lang)
	var e *Error
	switch {
	case err == nil:
		s.clearPending(w)
		redirect(w, r, "/verified", lang)
	case errors.As(err, &e) && e.Code == CodeInvalidCode:
		s.render(w, r, http.StatusGone, templates.PageConfirm, templates.Page{Locale: lang})
	default:
		s.formError(w, r, err, templates.PageConfirm, templates.Page{Locale: lang, Token: token}, "error.unavailable")
	}
}

func (s *Server) handleVerifiedPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, templates.PageVerified, templates.Page{})
}

// newLink issues the link token of a code just stored as p: random, kept
// in the store only as its MAC, pointing at p's version. Nil when the
// pages are off (no page would answer the link).
func (s *Server) newLink(ctx context.Context, p Pending) (*events.SealedCode, error) {
	if !s.cfg.Pages {
		return nil, nil
	}
	b := make([]byte, linkTokenBytes)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("generate link token: %w", err)
	}
	token := base64.RawURLEncoding.EncodeToString(b)
	if err := s.store.PutLink(ctx, s.keyring.LinkMACs(token)[0], p.Email, p.Version, p.ExpiresAt); err != nil {
		// Nothing was published yet: the caller may undo the store change
		// (undoSend rolls back on ErrNotPublished).
		return nil, &Error{Code: CodeUnavailable, Detail: "The request could not be completed; retry later.",
			Err: errors.Join(events.ErrNotPublished, fmt.Errorf("store link: %w", err))}
	}
	sealed, err := s.keyring.SealLinkToken(token, p.UserID, p.Email)
	if err != nil {
		return nil, fmt.Errorf("user %s: %w", p.UserID, err)
	}
	return &sealed, nil
}

// findLink returns the address and version a link token belongs to,
// trying the MAC under every key (a rotation keeps old links working).
func (s *Server) findLink(ctx context.Context, token string) (email string, version uint64, err error) {
	for _, mac := range s.keyring.LinkMACs(token) {
		email, version, err = s.store.Link(ctx, mac)
		if !errors.Is(err, ErrNotFound) {
			return email, version, err
		}
	}
	return "", 0, ErrNotFound
}

// linkLive reports whether the link still verifies: its code is the
// current one of a pending record. It changes nothing.
func (s *Server) linkLive(ctx context.Context, token string) (bool, error) {
	email, version, err := s.findLink(ctx, token)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, storeError(err)
	}
	p, err := s.store.Get(ctx, email)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, storeError(err)
	}
	return p.Version == version, nil
}

// verifyLink verifies the address a link belongs to: the confirm button's
// POST. It does not count against the code's attempts (a 144-bit token
// cannot be guessed) and works while those are used up; it consumes the
// record exactly as a right code does, so the address is verified once and
// user_account_verified published once, whichever way comes first.
func (s *Server) verifyLink(ctx context.Context, token, locale string) error {
	email, version, err := s.findLink(ctx, token)
	if err != nil {
		return storeError(err)
	}
	consumed, err := s.store.Consume(ctx, Pending{Email: email, Version: version})
	if err != nil {
		return storeError(err)
	}
	return s.publishVerified(ctx, consumed, locale)
}

// wantsPage: a browser asking for a page that does not exist gets one back,
// not problem+json; API clients (and /api/ paths) keep their problems.
func (s *Server) wantsPage(r *http.Request) bool {
	return s.cfg.Pages && r.Method == http.MethodGet && !strings.HasPrefix(r.URL.Path, "/api/") &&
		strings.Contains(r.Header.Get("Accept"), "text/html")
}

func (s *Server) notFoundPage(w http.ResponseWriter, r *http.Request) {
	pageHeaders(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.render(w, r, http.StatusNotFound, templates.PageMessage, templates.Page{Title: "notfound.title", Alert: "error.notfound", Path: "/"})
	})).ServeHTTP(w, r)
}

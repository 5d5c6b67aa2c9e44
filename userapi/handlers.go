package userapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/templates"
)

// Response bodies.
type (
	// RegisterResponse is the 202 body of POST /api/register.
	RegisterResponse struct {
		Status    string    `json:"status"` // "pending_verification"
		ExpiresAt time.Time `json:"expires_at"`
	}
	// StatusResponse is the body of the other successful responses.
	StatusResponse struct {
		Status string `json:"status"`
	}
)

const contentTypeJSON = "application/json"

// storeTimeout bounds undo steps (Rollback, Restore), which run after the
// request's own context may have ended.
const storeTimeout = 5 * time.Second

// handleRegister asks the store for a code for the address and mails the
// one it says to mail (user_account_created, with the sealed code): a new
// code, or the same code again while it is alive, so re-registering never
// resets the attempts nor changes the names. 202 is sent only after the
// broker acknowledged the event; otherwise the answer is 503 (see mail). When there is nothing to mail (a mail went
// out less than RESEND_INTERVAL ago, the address's failure budget is spent,
// or the address is an account already) the answer is the same 202 after
// about the time a mail takes, so neither the body nor the timing tells
// whether the address is an account. For an account, the owner may be sent
// a notice instead of a code (notice.go).
func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) {
	var req RegisterRequest
	if err := decodeRequest(w, r, &req); err != nil {
		s.error(w, r, err)
		return
	}
	if s.cfg.ASCIILocalPartOnly && nonASCIILocalPart(req.Email) {
		s.error(w, r, errUTF8LocalPart())
		return
	}
	stored, err := s.register(r.Context(), req, apiLocale(r))
	if err != nil {
		s.error(w, r, err)
		return
	}
	writeJSON(w, contentTypeJSON, http.StatusAccepted, RegisterResponse{Status: "pending_verification", ExpiresAt: stored.ExpiresAt})
}

// apiLocale is the language of the mail a JSON API request causes: the
// supported locale its Accept-Language header prefers (an app calling the
// API from a browser passes the person's), or "" without the header, which
// the notifier reads as English.
func apiLocale(r *http.Request) string {
	h := r.Header.Get("Accept-Language")
	if h == "" {
		return ""
	}
	return templates.MatchAcceptLanguage(h)
}

// register is what POST /api/register and the registration page share:
// req is valid; locale ("" for the API without Accept-Language) travels in
// the event. The Pending it returns holds only the address and the expiry
// to show, which is a fresh code's when nothing was mailed, so that it
// tells nothing.
func (s *Server) register(ctx context.Context, req RegisterRequest, locale string) (Pending, error) {
	if err := s.publisherDown(); err != nil {
		return Pending{}, err
	}
	if err := s.checkPendingRoom(ctx); err != nil { // PENDING_MAX (issue 14)
		return Pending{}, err
	}
	now := time.Now()
	c, code, err := s.newCode(req.Email, now)
	if err != nil {
		return Pending{}, err
	}
	written, err := s.store.Register(ctx, Pending{
		Email:     req.Email,
		UserID:    uuid.NewString(),
		FirstName: req.FirstName,
		LastName:  req.LastName,
		MACKeyID:  c.MACKeyID,
		MAC:       c.MAC,
		Sealed:    c.Sealed,
		ExpiresAt: c.ExpiresAt,
		SentAt:    c.SentAt,
	}, s.cfg.limits())
	if err != nil {
		return Pending{}, storeError(err)
	}
	if written.Outcome == OutcomeAccount {
		err = s.notice(ctx, req.Email, locale)
	} else {
		err = s.mail(ctx, written, locale, c, code)
	}
	if err != nil {
		return Pending{}, err
	}
	shown := Pending{Email: req.Email, ExpiresAt: c.ExpiresAt}
	if !written.Pending.ExpiresAt.IsZero() {
		shown.ExpiresAt = written.Pending.ExpiresAt
	}
	return shown, nil
}

// newCode draws a code for email and returns what the store keeps of it
// (its MAC and its sealed form, never the code), and the code, for mail to
// send without opening the sealed form again when the store keeps this one.
func (s *Server) newCode(email string, now time.Time) (NewCode, string, error) {
	code, err := newCode(s.cfg.CodeDigits)
	if err != nil {
		return NewCode{}, "", err
	}
	keyID, mac := s.keyring.CodeMAC(code, "", email)
	sealed, err := s.keyring.SealStored(code, email)
	if err != nil {
		return NewCode{}, "", fmt.Errorf("seal code: %w", err)
	}
	return NewCode{MACKeyID: keyID, MAC: mac, Sealed: sealed, ExpiresAt: now.Add(s.cfg.CodeTTL), SentAt: now}, code, nil
}

// mail publishes the code the store said to send: drawn is the code this
// request drew (and c its stored form), used as it is when the store kept
// it rather than an earlier one. When that fails the store's change is
// undone if the event was certainly not written, and kept when it may
// still arrive (undoSend). With nothing to send it waits
// about as long as sending takes (maskLatency).
func (s *Server) mail(ctx context.Context, w Written, locale string, c NewCode, drawn string) error {
	if !w.Sends() {
		if w.Outcome == OutcomeLocked {
			s.logger.InfoContext(ctx, "no code sent: the address's failure budget is spent", "user_id", w.Pending.UserID)
		}
		s.maskLatency(ctx)
		return nil
	}
	// Mail budgets (issue 14): past one, the same answer, and no mail; the
	// store is put back as it was, as if nothing had been asked.
	held, refund, err := s.spendMail(ctx, w.Pending)
	if err != nil || held {
		s.rollback(ctx, w.Pending, w.Replaced)
		if err != nil {
			return err
		}
		s.maskLatency(ctx)
		return nil
	}
	code := drawn
	if w.Outcome != OutcomeIssued || !bytes.Equal(w.Pending.Sealed.Nonce, c.Sealed.Nonce) {
		code, err = s.keyring.OpenStored(w.Pending.Sealed, w.Pending.Email)
	}
	if err != nil {
		// Nothing was published: the store and the budget are put back.
		refund()
		s.rollback(ctx, w.Pending, w.Replaced)
		return fmt.Errorf("user %s: open the stored code: %w", w.Pending.UserID, err)
	}
	if err := s.sendCode(ctx, w.Pending, code, locale); err != nil {
		if errors.Is(err, events.ErrNotPublished) {
			refund() // not mailed: the budget is given back
		}
		s.undoSend(ctx, err, w.Pending, w.Replaced)
		return err
	}
	s.logger.InfoContext(ctx, "code sent", "user_id", w.Pending.UserID, "same_code", w.Outcome == OutcomeResent)
	return nil
}

// handleVerify checks a code and, when it is right, consumes the pending
// registration, which makes the address an account, and publishes
// user_account_verified. A wrong code, an unknown address, an account, an
// expired registration and an address whose failure budget is spent get
// the same 400, so the answer never tells whether an address is pending;
// only a code whose attempts are used up answers differently (429).
func (s *Server) handleVerify(w http.ResponseWriter, r *http.Request) {
	var req VerifyRequest
	if err := decodeRequest(w, r, &req); err != nil {
		s.error(w, r, err)
		return
	}
	if err := s.verify(r.Context(), req, apiLocale(r)); err != nil {
		s.error(w, r, err)
		return
	}
	writeJSON(w, contentTypeJSON, http.StatusOK, StatusResponse{Status: "verified"})
}

// verify is what POST /api/verify and the code page share.
func (s *Server) verify(ctx context.Context, req VerifyRequest, locale string) error {
	if len(req.Code) != s.cfg.CodeDigits {
		return Errorf(CodeInvalidRequest, "code must be %d digits.", s.cfg.CodeDigits)
	}
	if err := s.publisherDown(); err != nil {
		return err
	}
	// The code's MACs under every key: the same work whatever the store
	// finds, so the cases take the same time.
	p, ok, err := s.store.Check(ctx, req.Email, s.keyring.CodeMACs(req.Code, "", req.Email), s.cfg.limits())
	if err != nil {
		return storeError(err)
	}
	if !ok {
		if p.Attempts >= s.cfg.CodeMaxAttempts {
			// Worth an operator's eye: many of these are someone guessing.
			s.logger.WarnContext(ctx, "verification attempts used up", "user_id", p.UserID)
		}
		return errInvalidCode
	}
	// The record is consumed: of any number of right codes checked at
	// once, this one alone got ok. If publishing certainly fails, the
	// attempt failed for want of the broker, not for the code: it is given
	// back, and the person can verify again with the same code.
	consumed := p
	consumed.Attempts--
	return s.publishVerified(ctx, consumed, locale)
}

// publishVerified publishes user_account_verified for a consumed record.
// When the broker certainly did not write it (events.ErrNotPublished) the
// record is put back (Restore), so the same code or link works again. When
// the outcome is unknown (a timeout) the address stays an account: the
// event may still arrive, and putting the record back could let a second
// verify publish a second user_account_verified for the address. The
// person then gets a 503 and, if the event never arrives, registers again
// once a restart rebuilds the accounts from the log (docs/security.md).
func (s *Server) publishVerified(ctx context.Context, consumed Pending, locale string) error {
	e, err := events.NewUserAccountVerified(events.UserAccountVerified{
		UserID:     consumed.UserID,
		Email:      consumed.Email,
		FirstName:  consumed.FirstName,
		LastName:   consumed.LastName,
		VerifiedAt: time.Now(),
		Locale:     locale,
	})
	if err == nil {
		err = s.publish(ctx, e, consumed.UserID)
	}
	if err != nil {
		if errors.Is(err, events.ErrNotPublished) {
			s.restore(ctx, consumed)
		} else {
			s.logger.WarnContext(ctx, "verified event's fate unknown: the address stays an account", "user_id", consumed.UserID)
		}
		return err
	}
	s.logger.InfoContext(ctx, "address verified", "user_id", consumed.UserID)
	return nil
}

// handleResend mails the code of a pending address again (a new one when
// its attempts are used up). It answers 202 whether or not the address is
// pending, an account, or out of its failure budget, and takes about as
// long either way (see maskLatency), so neither the status nor the timing
// tells. It does tell in one case the contract asks for: 429 within
// RESEND_INTERVAL of the last mail. While the brokers are down it answers
// 503 for every address, pending or not (failFast), so that tells nothing
// either.
func (s *Server) handleResend(w http.ResponseWriter, r *http.Request) {
	var req ResendRequest
	if err := decodeRequest(w, r, &req); err != nil {
		s.error(w, r, err)
		return
	}
	if err := s.resend(r.Context(), req, apiLocale(r)); err != nil {
		s.error(w, r, err)
		return
	}
	writeJSON(w, contentTypeJSON, http.StatusAccepted, StatusResponse{Status: "accepted"})
}

// resend is what POST /api/resend and the code page's resend button share.
// It returns nil whether or not the address is pending.
func (s *Server) resend(ctx context.Context, req ResendRequest, locale string) error {
	if err := s.publisherDown(); err != nil {
		return err
	}
	c, code, err := s.newCode(req.Email, time.Now())
	if err != nil {
		return err
	}
	written, err := s.store.Resend(ctx, req.Email, c, s.cfg.limits())
	switch {
	case errors.Is(err, ErrNotFound):
		s.maskLatency(ctx)
		return nil
	case err != nil:
		return storeError(err)
	}
	return s.mail(ctx, written, locale, c, code)
}

func (s *Server) handleHealthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, contentTypeJSON, http.StatusOK, StatusResponse{Status: "ok"})
}

func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	if !s.accountsLoaded() {
		s.error(w, r, errAccountsLoading)
		return
	}
	if s.ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		if err := s.ready(ctx); err != nil {
			s.error(w, r, &Error{Code: CodeUnavailable, Detail: "The message broker or the pending store is not reachable.", Err: fmt.Errorf("readiness: %w", err)})
			return
		}
	}
	writeJSON(w, contentTypeJSON, http.StatusOK, StatusResponse{Status: "ready"})
}

var errInvalidCode = Errorf(CodeInvalidCode, "The code is wrong or has expired, or the address has no pending registration.")

// storeError turns a store error into the client's answer.
func storeError(err error) error {
	var soon *TooSoonError
	switch {
	case errors.As(err, &soon):
		return &Error{Code: CodeResendTooSoon, Detail: "A code was sent to this address recently; retry later.", RetryAfter: soon.RetryAfter}
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrLocked):
		return errInvalidCode
	case errors.Is(err, ErrTooManyAttempts):
		return Errorf(CodeTooManyAttempts, "Too many wrong codes: request a new code.")
	}
	return &Error{Code: CodeUnavailable, Detail: "The request could not be completed; retry later.", Err: fmt.Errorf("store: %w", err)}
}

// sendCode seals code for p and publishes user_account_created. The plain
// code goes no further than this call. Every field the mail shows or relies
// on is bound into the seal (Keyring.Seal). With the pages on, a link token
// is issued with the code (newLink) and sealed next to it.
func (s *Server) sendCode(ctx context.Context, p Pending, code, locale string) error {
	d := events.UserAccountCreated{
		UserID:    p.UserID,
		Email:     p.Email,
		FirstName: p.FirstName,
		LastName:  p.LastName,
		ExpiresAt: p.ExpiresAt,
		Locale:    locale,
	}
	sealed, err := s.keyring.Seal(code, d)
	if err != nil {
		return fmt.Errorf("user %s: %w", p.UserID, err)
	}
	link, err := s.newLink(ctx, p)
	if err != nil {
		return err
	}
	d.EncryptedCode, d.EncryptedLinkToken = sealed, link
	e, err := events.NewUserAccountCreated(d)
	if err != nil {
		return fmt.Errorf("user %s: %w", p.UserID, err)
	}
	start := time.Now()
	err = s.publish(ctx, e, p.UserID)
	if err == nil {
		s.observeCreatedLatency(time.Since(start))
	}
	return err
}

// publish waits up to PublishTimeout for the broker's acknowledgement. The
// wait is detached from the client's connection: a client hanging up must
// not leave an event whose fate the store does not reflect, so only the
// timeout (after which the store change is undone) ends it early.
func (s *Server) publish(ctx context.Context, e events.Event, userID string) error {
	return s.publishAs(ctx, e, "user "+userID)
}

// publishAs is publish for an event about no user id; subject names it in
// the error (never the address).
func (s *Server) publishAs(ctx context.Context, e events.Event, subject string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.PublishTimeout)
	defer cancel()
	start := time.Now()
	err := s.publisher.Publish(ctx, e)
	s.metrics.observePublish(e.Type, start, err)
	if err != nil {
		return &Error{
			Code:       CodeUnavailable,
			Detail:     "The request could not be completed; retry later.",
			RetryAfter: publishRetryAfter,
			Err:        fmt.Errorf("%s: %w", subject, err),
		}
	}
	return nil
}

func (s *Server) rollback(ctx context.Context, written Pending, replaced *Pending) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	if err := s.store.Rollback(ctx, written, replaced); err != nil {
		s.logger.ErrorContext(ctx, "undo pending registration after failed publish", "user_id", written.UserID, "err", err)
	}
}

func (s *Server) restore(ctx context.Context, p Pending) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	if err := s.store.Restore(ctx, p); err != nil {
		s.logger.ErrorContext(ctx, "restore pending registration after failed publish", "user_id", p.UserID, "err", err)
	}
}

// observeCreatedLatency feeds the moving average maskLatency sleeps for.
func (s *Server) observeCreatedLatency(d time.Duration) {
	for {
		old := s.publishEWMA.Load()
		next := int64(d)
		if old != 0 {
			next = old + (int64(d)-old)/8
		}
		if s.publishEWMA.CompareAndSwap(old, next) {
			return
		}
	}
}

// maskLatency waits about as long as publishing a code takes, so that a
// resend for an address that is not pending is not told apart by its
// speed. It is best effort: the average, with jitter, not each request's
// real latency.
func (s *Server) maskLatency(ctx context.Context) {
	avg := time.Duration(s.publishEWMA.Load())
	if avg <= 0 {
		return
	}
	d := min(avg/2+time.Duration(rand.Int64N(int64(avg))), s.cfg.PublishTimeout)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

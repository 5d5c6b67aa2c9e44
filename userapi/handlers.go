package userapi

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/countersign/countersign/events"
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

// handleRegister creates or replaces the pending registration of an
// address and publishes user_account_created with the sealed code. 202 is
// sent only after the broker acknowledged the event; otherwise the answer
// is 503 and the store is put back as it was when the event was certainly
// not written, or kept when it may still arrive (see undoSend).
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
	if err := s.publisherDown(); err != nil {
		s.error(w, r, err)
		return
	}
	if err := s.checkPendingRoom(r.Context()); err != nil { // PENDING_MAX (issue 14)
		s.error(w, r, err)
		return
	}
	code, err := newCode()
	if err != nil {
		s.error(w, r, err)
		return
	}
	now := time.Now()
	keyID, mac := s.keyring.CodeMAC(code, "", req.Email)
	stored, replaced, err := s.store.Register(r.Context(), Pending{
		Email:     req.Email,
		UserID:    uuid.NewString(),
		FirstName: req.FirstName,
		LastName:  req.LastName,
		MACKeyID:  keyID,
		MAC:       mac,
		ExpiresAt: now.Add(s.cfg.CodeTTL),
		SentAt:    now,
	}, s.cfg.ResendInterval)
	if err != nil {
		s.error(w, r, storeError(err))
		return
	}
	// Mail budgets (issue 14): past one, the same 202, and no mail.
	held, refund, err := s.spendMail(r.Context(), stored)
	if err != nil || held {
		s.rollback(r.Context(), stored, replaced)
		if err != nil {
			s.error(w, r, err)
		} else {
			s.maskLatency(r.Context())
			writeJSON(w, contentTypeJSON, http.StatusAccepted, RegisterResponse{Status: "pending_verification", ExpiresAt: stored.ExpiresAt})
		}
		return
	}
	if err := s.sendCode(r.Context(), stored, code); err != nil {
		if errors.Is(err, events.ErrNotPublished) {
			refund() // not mailed: the budget is given back
		}
		s.undoSend(r.Context(), err, stored, replaced)
		s.error(w, r, err)
		return
	}
	s.logger.InfoContext(r.Context(), "code sent", "user_id", stored.UserID, "replaced", replaced != nil)
	writeJSON(w, contentTypeJSON, http.StatusAccepted, RegisterResponse{Status: "pending_verification", ExpiresAt: stored.ExpiresAt})
}

// handleVerify checks a code and, when it is right, consumes the pending
// registration and publishes user_account_verified. A wrong code, an
// unknown address and an expired registration get the same 400, so the
// answer never tells whether an address is pending; only a registration
// whose attempts are used up answers differently (429).
func (s *Server) handleVerify(w http.ResponseWriter, r *http.Request) {
	var req VerifyRequest
	if err := decodeRequest(w, r, &req); err != nil {
		s.error(w, r, err)
		return
	}
	if err := s.publisherDown(); err != nil {
		s.error(w, r, err)
		return
	}
	p, err := s.store.Attempt(r.Context(), req.Email, s.cfg.CodeMaxAttempts)
	if errors.Is(err, ErrNotFound) {
		// The MAC a known address would cost, so the two cases take the
		// same time.
		s.keyring.CodeMAC(req.Code, "", req.Email)
	}
	if err != nil {
		s.error(w, r, storeError(err))
		return
	}
	if !s.keyring.VerifyCodeMAC(p.MACKeyID, p.MAC, req.Code, "", req.Email) {
		if p.Attempts >= s.cfg.CodeMaxAttempts {
			// Worth an operator's eye: many of these are someone guessing.
			s.logger.WarnContext(r.Context(), "verification attempts used up", "user_id", p.UserID)
		}
		s.error(w, r, errInvalidCode)
		return
	}
	// Only one Consume of this version succeeds: of any number of correct
	// concurrent verifies, one publishes, the others see ErrNotFound.
	consumed, err := s.store.Consume(r.Context(), req.Email, p.Version)
	if err != nil {
		s.error(w, r, storeError(err))
		return
	}
	e, err := events.NewUserAccountVerified(events.UserAccountVerified{
		UserID:     consumed.UserID,
		Email:      consumed.Email,
		FirstName:  consumed.FirstName,
		LastName:   consumed.LastName,
		VerifiedAt: time.Now(),
	})
	if err == nil {
		err = s.publish(r.Context(), e, consumed.UserID)
	}
	if err != nil {
		// The attempt failed for want of the broker, not for the code: it is
		// given back, and the person can verify again with the same code.
		consumed.Attempts--
		s.restore(r.Context(), consumed)
		s.error(w, r, err)
		return
	}
	s.logger.InfoContext(r.Context(), "address verified", "user_id", consumed.UserID)
	writeJSON(w, contentTypeJSON, http.StatusOK, StatusResponse{Status: "verified"})
}

// handleResend issues a new code for a pending address. It answers 202
// whether or not the address is pending, and takes about as long either
// way (see maskLatency), so neither the status nor the timing tells. It
// does tell in one case the contract asks for: 429 within RESEND_INTERVAL
// of the last code. While the brokers are down it answers 503 for every
// address, pending or not (failFast), so that tells nothing either.
func (s *Server) handleResend(w http.ResponseWriter, r *http.Request) {
	var req ResendRequest
	if err := decodeRequest(w, r, &req); err != nil {
		s.error(w, r, err)
		return
	}
	if err := s.publisherDown(); err != nil {
		s.error(w, r, err)
		return
	}
	code, err := newCode()
	if err != nil {
		s.error(w, r, err)
		return
	}
	now := time.Now()
	keyID, mac := s.keyring.CodeMAC(code, "", req.Email)
	stored, replaced, err := s.store.Resend(r.Context(), req.Email, NewCode{
		MACKeyID:  keyID,
		MAC:       mac,
		ExpiresAt: now.Add(s.cfg.CodeTTL),
		SentAt:    now,
	}, s.cfg.ResendInterval)
	switch {
	case errors.Is(err, ErrNotFound):
		s.maskLatency(r.Context())
	case err != nil:
		s.error(w, r, storeError(err))
		return
	default:
		// Mail budgets (issue 14): past one, the same 202, and no mail.
		held, refund, err := s.spendMail(r.Context(), stored)
		if err != nil || held {
			s.rollback(r.Context(), stored, replaced)
			if err != nil {
				s.error(w, r, err)
				return
			}
			s.maskLatency(r.Context())
			break
		}
		if err := s.sendCode(r.Context(), stored, code); err != nil {
			if errors.Is(err, events.ErrNotPublished) {
				refund() // not mailed: the budget is given back
			}
			s.undoSend(r.Context(), err, stored, replaced)
			s.error(w, r, err)
			return
		}
		s.logger.InfoContext(r.Context(), "code sent", "user_id", stored.UserID, "resend", true)
	}
	writeJSON(w, contentTypeJSON, http.StatusAccepted, StatusResponse{Status: "accepted"})
}

func (s *Server) handleHealthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, contentTypeJSON, http.StatusOK, StatusResponse{Status: "ok"})
}

func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
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
	case errors.Is(err, ErrNotFound):
		return errInvalidCode
	case errors.Is(err, ErrTooManyAttempts):
		return Errorf(CodeTooManyAttempts, "Too many wrong codes: request a new code.")
	}
	return &Error{Code: CodeUnavailable, Detail: "The request could not be completed; retry later.", Err: fmt.Errorf("store: %w", err)}
}

// sendCode seals code for p and publishes user_account_created. The plain
// code goes no further than this call.
func (s *Server) sendCode(ctx context.Context, p Pending, code string) error {
	d := events.UserAccountCreated{
		UserID:    p.UserID,
		Email:     p.Email,
		FirstName: p.FirstName,
		LastName:  p.LastName,
		ExpiresAt: p.ExpiresAt,
	}
	sealed, err := s.keyring.Seal(code, d)
	if err != nil {
		return fmt.Errorf("user %s: %w", p.UserID, err)
	}
	d.EncryptedCode = sealed
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
			Err:        fmt.Errorf("user %s: %w", userID, err),
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

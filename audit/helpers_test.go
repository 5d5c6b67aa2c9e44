package audit_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/pgtest"
	"github.com/countersign/countersign/events"
)

// backend is a database the store is tested on.
type backend struct {
	name string
	// url returns a fresh, empty database for the test.
	url func(t *testing.T) string
}

var backends = []backend{
	{"sqlite", func(t *testing.T) string { return "sqlite://" + t.TempDir() + "/audit.db" }},
	{"postgres", func(t *testing.T) string { return pgtest.Start(t).URL() }},
}

// forEachBackend runs fn as a subtest on every backend.
func forEachBackend(t *testing.T, fn func(t *testing.T, url string)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { fn(t, b.url(t)) })
	}
}

func openStore(t testing.TB, url string) *audit.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := audit.Open(ctx, url)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func created(t testing.TB, email string) events.Event {
	t.Helper()
	e, err := events.NewUserAccountCreated(events.UserAccountCreated{
		UserID: uuid.NewString(), Email: email, FirstName: "Ada", LastName: "Lovelace",
		ExpiresAt:     time.Now().Add(15 * time.Minute),
		EncryptedCode: events.SealedCode{KeyID: "k1", Nonce: []byte("nonce-123456"), Ciphertext: []byte("sealed-ciphertext")},
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func verified(t testing.TB, email, userID string) events.Event {
	t.Helper()
	e, err := events.NewUserAccountVerified(events.UserAccountVerified{
		UserID: userID, Email: email, FirstName: "Ada", LastName: "Lovelace", VerifiedAt: time.Now(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func deleted(t testing.TB, email, userID string) events.Event {
	t.Helper()
	data, _ := json.Marshal(map[string]any{"user_id": userID, "email": email, "deleted_at": time.Now().UTC()})
	return events.Event{SpecVersion: events.SpecVersion, ID: uuid.NewString(), Source: events.Source,
		Type: audit.TopicUserAccountDeleted, Time: time.Now().UTC(), DataContentType: events.DataContentType, Data: data, Key: email}
}

// exists is a user_account_exists event: no user id, no names.
func exists(t testing.TB, email string) events.Event {
	t.Helper()
	e, err := events.NewUserAccountExists(events.UserAccountExists{Email: email, AttemptedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func userID(t testing.TB, e events.Event) string {
	t.Helper()
	var d struct {
		UserID string `json:"user_id"`
	}
	if err := json.Unmarshal(e.Data, &d); err != nil {
		t.Fatal(err)
	}
	return d.UserID
}

func count(t testing.TB, s *audit.Store, query string, args ...any) int {
	t.Helper()
	var n int
	if err := s.DB().QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// rowCounts returns the number of audit_events rows and of distinct
// event ids.
func rowCounts(t testing.TB, s *audit.Store) (rows, distinct int) {
	t.Helper()
	return count(t, s, `SELECT count(*) FROM audit_events`), count(t, s, `SELECT count(DISTINCT event_id) FROM audit_events`)
}

func mustf(t testing.TB, cond bool, format string, args ...any) {
	t.Helper()
	if !cond {
		t.Fatalf(format, args...)
	}
}

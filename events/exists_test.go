package events_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/events"
)

// user_account_exists carries the address, when, and the page's locale:
// nothing the person who tried typed besides the address.
func TestUserAccountExistsRoundTrip(t *testing.T) {
	at := time.Date(2026, 5, 4, 11, 12, 13, 0, time.FixedZone("CEST", 2*3600))
	e, err := events.NewUserAccountExists(events.UserAccountExists{Email: "  Ada@Example.COM ", AttemptedAt: at, Locale: "zh-CN"})
	if err != nil {
		t.Fatal(err)
	}
	if e.Type != events.TopicUserAccountExists || e.Key != "ada@example.com" || e.ID == "" || e.Source != events.Source {
		t.Fatalf("event %+v: want type %s, key = the normalized address", e, events.TopicUserAccountExists)
	}
	doc, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := events.Decode(doc)
	if err != nil {
		t.Fatal(err)
	}
	d, err := got.UserAccountExists()
	if err != nil {
		t.Fatal(err)
	}
	if d.Email != "ada@example.com" || !d.AttemptedAt.Equal(at) || d.AttemptedAt.Location() != time.UTC || d.Locale != "zh-CN" {
		t.Errorf("data %+v", d)
	}
	for _, name := range []string{"first_name", "last_name", "user_id"} {
		if strings.Contains(string(e.Data), name) {
			t.Errorf("data %s carries %s", e.Data, name)
		}
	}
	if _, err := got.UserAccountCreated(); err == nil {
		t.Error("a user_account_exists event decodes as user_account_created")
	}
}

func TestUserAccountExistsRejected(t *testing.T) {
	if _, err := events.NewUserAccountExists(events.UserAccountExists{AttemptedAt: time.Now()}); !errors.Is(err, events.ErrInvalidEvent) {
		t.Errorf("no email: %v", err)
	}
	if _, err := events.NewUserAccountExists(events.UserAccountExists{Email: "a@example.com"}); !errors.Is(err, events.ErrInvalidEvent) {
		t.Errorf("no attempted_at: %v", err)
	}
	doc := func() map[string]any {
		return map[string]any{
			"specversion": "1.0", "id": "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f", "source": "countersign/userapi",
			"type": "user_account_exists", "time": "2026-05-04T09:12:33Z", "datacontenttype": "application/json",
			"data": map[string]any{"email": piiEmail, "attempted_at": "2026-05-04T09:12:33Z"},
		}
	}
	if _, err := events.Decode(marshalDoc(t, doc())); err != nil {
		t.Fatalf("valid document refused: %v", err)
	}
	for name, mutate := range map[string]func(map[string]any){
		"missing email":             func(m map[string]any) { delete(dataOf(m), "email") },
		"empty email":               func(m map[string]any) { dataOf(m)["email"] = "" },
		"missing attempted_at":      func(m map[string]any) { delete(dataOf(m), "attempted_at") },
		"attempted_at not RFC 3339": func(m map[string]any) { dataOf(m)["attempted_at"] = piiEmail },
		"data as string":            func(m map[string]any) { m["data"] = piiEmail },
	} {
		m := doc()
		mutate(m)
		if p := decodeProblem(marshalDoc(t, m)); p != "" {
			t.Errorf("%s: %s", name, p)
		}
	}
}

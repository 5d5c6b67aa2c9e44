package notifier_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/notifier"
)

// TestEditedEventIsDeadLetteredAndSendsNothing replays a real
// user_account_created with edits, as the abuse review did with kcat: the
// first name replaced by the attacker's text, or the expiry set to next
// year. The seal binds those fields, so the code does not open: the event
// goes to the dead-letter topic and no mail is sent. The untouched event,
// published last under the same key (so handled after the edited ones),
// is mailed, which shows the edited ones were handled, not pending.
func TestEditedEventIsDeadLetteredAndSendsNothing(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, notifier.Config{})
	email := eventstest.UniqueEmail(t)
	d := events.UserAccountCreated{UserID: "u-" + eventstest.Suffix(), Email: email, FirstName: "Ada", LastName: "Lovelace",
		ExpiresAt: time.Now().Add(15 * time.Minute)}
	sealed, err := h.keyring.Seal("271828", d)
	if err != nil {
		t.Fatal(err)
	}
	d.EncryptedCode = sealed
	real, err := events.NewUserAccountCreated(d)
	if err != nil {
		t.Fatal(err)
	}
	edits := map[string]func(map[string]any){
		"first_name": func(m map[string]any) { m["first_name"] = "Click https://evil.example to keep your account" },
		"last_name":  func(m map[string]any) { m["last_name"] = "Support team" },
		"expires_at": func(m map[string]any) {
			m["expires_at"] = d.ExpiresAt.AddDate(1, 0, 0).UTC().Format(time.RFC3339Nano)
		},
		"user_id": func(m map[string]any) { m["user_id"] = "u-someone-else" },
	}
	for _, edit := range edits {
		var data map[string]any
		if err := json.Unmarshal(real.Data, &data); err != nil {
			t.Fatal(err)
		}
		edit(data)
		forged := real
		if forged.Data, err = json.Marshal(data); err != nil {
			t.Fatal(err)
		}
		// A replay keeps the id too; the dedupe must not be what stops it.
		eventstest.Publish(t, h.producer, forged)
	}
	eventstest.Publish(t, h.producer, real)

	dl := eventstest.ReadTopic(t, h.brokers, kafka.DeadLetterTopic(r.group), len(edits), 60*time.Second, eventstest.ByKey(email))
	for _, rec := range dl {
		if reason, _ := eventstest.Header(rec, kafka.HeaderDLQError); !strings.Contains(reason, "cannot be opened") {
			t.Errorf("dlq-error %q, want the seal's refusal", reason)
		}
	}
	h.smtp.WaitFor(t, email, 1, 60*time.Second)
	time.Sleep(300 * time.Millisecond)
	got := h.smtp.MessagesTo(email)
	if len(got) != 1 {
		t.Fatalf("%d mails, want 1 (the untouched event's)", len(got))
	}
	text, err := got[0].TextPart()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, "271828") || strings.Contains(text, "evil.example") || strings.Contains(text, "Support team") {
		t.Errorf("the mail is not the untouched event's:\n%s", text)
	}
}

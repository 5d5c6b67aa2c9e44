package main_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/mail/smtptest"
)

// The production topology in processes: `countersign userapi` and
// `countersign notifier` sharing only Kafka and CODE_ENCRYPTION_KEYS, the
// notifier mailing a real SMTP server with templates overridden from
// TEMPLATES_DIR. The code in the mail is the one the user API sealed into the
// event, and it verifies.
func TestUserAPIAndNotifierProcessesOverSMTP(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	brokers := eventstest.Brokers(t)
	entry, err := events.GenerateKeyEntry()
	if err != nil {
		t.Fatal(err)
	}
	keys, err := events.ParseKeyring(entry)
	if err != nil {
		t.Fatal(err)
	}
	group := eventstest.UniqueGroup(t)
	// On a shared cluster, start after the history other tests left.
	eventstest.GroupAtEnd(t, brokers, group)
	smtp := smtptest.Start(t)

	tplDir := t.TempDir()
	const subject = "ACME: your code, {{.FirstName}}"
	if err := os.MkdirAll(filepath.Join(tplDir, "email", "verification"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tplDir, "email", "verification", "subject.gotmpl"), []byte(subject), 0o644); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	httpAddr, opsAddr, apiOps := freeAddr(t), freeAddr(t), freeAddr(t)
	common := []string{"KAFKA_BROKERS=" + brokers, "CODE_ENCRYPTION_KEYS=" + entry, "LOG_LEVEL=info", "PUBLIC_URL=http://" + httpAddr}
	api := start(t, dir, append([]string{"HTTP_ADDR=" + httpAddr, "METRICS_ADDR=" + apiOps}, common...), "userapi")
	ntf := start(t, dir, append([]string{
		"NOTIFIER_GROUP_ID=" + group,
		"SMTP_HOST=127.0.0.1", "SMTP_PORT=" + strconv.Itoa(smtp.Port()), "SMTP_TLS=none",
		"TEMPLATES_DIR=" + tplDir, "METRICS_ADDR=" + opsAddr,
	}, common...), "notifier")
	base := "http://" + httpAddr
	waitHTTP(t, api, base+"/readyz", 90*time.Second)
	waitHTTP(t, ntf, "http://"+opsAddr+"/readyz", 90*time.Second)

	email := eventstest.UniqueEmail(t)
	status, body := postJSON(t, base+"/api/register", fmt.Sprintf(`{"email":%q,"first_name":"Grace","last_name":"Hopper"}`, email))
	if status != http.StatusAccepted {
		t.Fatalf("register: %d %v", status, body)
	}
	mail := waitMail(t, smtp, email, 1, 60*time.Second)[0]
	if got := mail.Subject(); got != "ACME: your code, Grace" {
		t.Errorf("subject %q: TEMPLATES_DIR's subject.gotmpl was not used", got)
	}
	text, err := mail.TextPart()
	if err != nil {
		t.Fatal(err)
	}
	m := codeRE.FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no 6-digit code in the mail (the embedded body, as TEMPLATES_DIR has none):\n%s", text)
	}
	code := m[1]

	// The event on the topic holds that code, sealed for this user and
	// address; the plain code is nowhere in the record.
	rec := eventstest.ReadTopic(t, brokers, events.TopicUserAccountCreated, 1, 30*time.Second, eventstest.ByKey(email))[0]
	if strings.Contains(string(rec.Value), code) {
		t.Error("the plain code is in the event")
	}
	created, err := eventstest.Decode(t, rec).UserAccountCreated()
	if err != nil {
		t.Fatal(err)
	}
	if sealed, err := keys.Open(created); err != nil || sealed != code {
		t.Errorf("the event's sealed code opens to %q (%v); the mail says %q", sealed, err, code)
	}

	if status, body := postJSON(t, base+"/api/verify", fmt.Sprintf(`{"email":%q,"code":%q}`, email, code)); status != http.StatusOK {
		t.Fatalf("verify with the mailed code: %d %v", status, body)
	}
	confirmation := waitMail(t, smtp, email, 2, 60*time.Second)[1]
	if !strings.Contains(strings.ToLower(confirmation.Subject()), "verified") {
		t.Errorf("second mail %q is not the confirmation", confirmation.Subject())
	}
	for _, p := range []*proc{api, ntf} {
		if strings.Contains(p.output(), code) {
			t.Errorf("the code appears in a process's output")
		}
	}

	// The notifier serves the kit's lag on METRICS_ADDR, for the partitions
	// it was assigned, and both processes their readiness.
	waitScrape(t, "http://"+opsAddr+"/metrics", `countersign_consumer_lag_records{group="`+group+`",partition="0",topic="user_account_created"}`, 60*time.Second)
	waitScrape(t, "http://"+opsAddr+"/metrics", "countersign_ready 1", 30*time.Second)
	// The user API's on its METRICS_ADDR: never on the public HTTP_ADDR.
	waitScrape(t, "http://"+apiOps+"/metrics", "countersign_ready 1", 30*time.Second)
}

// waitScrape polls url until its body contains want.
func waitScrape(t *testing.T, url, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var body []byte
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(body), want) {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Errorf("%s has no %s within %s; it serves:\n%s", url, want, timeout, body)
}

// waitMail waits until the SMTP server holds n mails to addr.
func waitMail(t *testing.T, s *smtptest.Server, addr string, n int, timeout time.Duration) []smtptest.Received {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if got := mailsTo(s, addr); len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d mails to %s after %v, want %d", len(mailsTo(s, addr)), addr, timeout, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/mail/smtptest"
)

// syncBuffer is a bytes.Buffer safe for Main's writers and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// mainRun is Main running in the test process.
type mainRun struct {
	out    syncBuffer // stdout and stderr
	cancel context.CancelFunc
	done   chan int
}

// mustRunMain starts Main in the test process with exactly env as its
// environment, as WTF Dial's MustRunMain does; stop ends it like SIGTERM
// and returns the exit code. The test's cleanup stops it too.
func mustRunMain(t *testing.T, env []string, args ...string) *mainRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	m := &mainRun{cancel: cancel, done: make(chan int, 1)}
	go func() { m.done <- Main(ctx, args, env, &m.out, &m.out) }()
	t.Cleanup(func() {
		m.stop(t)
		if t.Failed() {
			t.Logf("countersign %s output:\n%s", strings.Join(args, " "), m.out.String())
		}
	})
	return m
}

func (m *mainRun) stop(t *testing.T) int {
	m.cancel()
	select {
	case code := <-m.done:
		m.done <- code
		return code
	case <-time.After(90 * time.Second):
		t.Fatal("Main did not return within 90s of its context's end")
		return -1
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func post(t *testing.T, url, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// waitMail polls dir for an .eml file to addr whose subject contains
// subject.
func waitMail(t *testing.T, m *mainRun, dir, addr, subject string) smtptest.Received {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		files, _ := filepath.Glob(filepath.Join(dir, "*.eml"))
		for _, f := range files {
			data, _ := os.ReadFile(f)
			r := smtptest.Received{Data: data}
			if h, err := r.Header(); err == nil && strings.Contains(h.Get("To"), addr) && strings.Contains(strings.ToLower(r.Subject()), subject) {
				return r
			}
		}
		select {
		case code := <-m.done:
			m.done <- code
			t.Fatalf("Main returned %d while waiting for mail", code)
		default:
		}
	}
	t.Fatalf("no mail to %s with subject containing %q in %s", addr, subject, dir)
	return smtptest.Received{}
}

// TestMainDevInProcess runs `countersign dev` through Main in the test
// process, on free ports with an embedded broker (or the test cluster):
// register over HTTP, read the code from the outbox .eml, verify, see the
// verified mail, and stop with exit code 0. TestDevEndToEnd does the same
// with the built binary.
func TestMainDevInProcess(t *testing.T) {
	dir := t.TempDir()
	outbox := filepath.Join(dir, "outbox")
	base := "http://" + freePort(t)
	auditDB := filepath.Join(dir, "audit.db")
	env := []string{"HTTP_ADDR=" + strings.TrimPrefix(base, "http://"), "METRICS_ADDR=" + freePort(t), "MAIL_OUTBOX_DIR=" + outbox, "LOG_LEVEL=warn",
		"AUDIT_DATABASE_URL=sqlite://" + auditDB}
	if eventstest.RealBroker() {
		env = append(env, "KAFKA_BROKERS="+os.Getenv(eventstest.EnvBrokers),
			"NOTIFIER_GROUP_ID="+eventstest.FreshGroup(t, os.Getenv(eventstest.EnvBrokers)), "RECOMMENDER_GROUP_ID="+eventstest.FreshGroup(t, os.Getenv(eventstest.EnvBrokers)))
	} else {
		env = append(env, "EMBEDDED_KAFKA_ADDR="+freePort(t))
	}
	m := mustRunMain(t, env, "dev")

	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if resp, err := http.Get(base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case code := <-m.done:
			m.done <- code
			t.Fatalf("Main returned %d before the API was ready", code)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the user API was not ready within 90s")
		}
	}

	email := eventstest.UniqueEmail(t)
	if status, body := post(t, base+"/api/register", fmt.Sprintf(`{"email":%q,"first_name":"Ada","last_name":"Lovelace"}`, email)); status != http.StatusAccepted {
		t.Fatalf("register: %d %v", status, body)
	}
	text, err := waitMail(t, m, outbox, email, "verify").TextPart()
	if err != nil {
		t.Fatal(err)
	}
	code := regexp.MustCompile(`\b\d{6}\b`).FindString(text)
	if code == "" {
		t.Fatalf("no 6-digit code in the mail:\n%s", text)
	}
	if status, body := post(t, base+"/api/verify", fmt.Sprintf(`{"email":%q,"code":%q}`, email, code)); status != http.StatusOK || body["status"] != "verified" {
		t.Fatalf("verify: %d %v", status, body)
	}
	waitMail(t, m, outbox, email, "verified")
	if strings.Contains(m.out.String(), code) {
		t.Errorf("the code %s is in Main's output", code)
	}
	// The audit ran too. Its database is new, so it reads the topics from
	// their beginning: on a shared real cluster that is every other test's
	// history first, hence the generous wait.
	store, err := audit.Open(context.Background(), "sqlite://"+auditDB)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	rows := func() int {
		var n int
		if err := store.DB().QueryRow(`SELECT count(*) FROM audit_events WHERE email = ?`, email).Scan(&n); err != nil {
			t.Logf("audit_events: %v", err)
		}
		return n
	}
	eventstest.Eventually(t, 5*time.Minute, func() bool { return rows() == 2 })
	if exit := m.stop(t); exit != 0 {
		t.Errorf("exit code %d after the context ended, want 0", exit)
	}
	if n := rows(); n != 2 {
		t.Errorf("audit_events rows about %s after shutdown: %d, want 2 (registered, verified)", email, n)
	}
}

// NOTIFIER_GROUP_ID names the dead-letter topic, so a value no topic name
// can hold is refused at start, naming the variable, before anything waits
// for Kafka (which is not reachable here).
func TestMainRefusesABadNotifierGroupID(t *testing.T) {
	entry, err := events.GenerateKeyEntry()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out syncBuffer
	exit := Main(ctx, []string{"notifier"}, []string{
		"CODE_ENCRYPTION_KEYS=" + entry, "KAFKA_BROKERS=127.0.0.1:1", "NOTIFIER_GROUP_ID=a b", "METRICS_ADDR=off",
	}, &out, &out)
	if exit != 1 || !strings.Contains(out.String(), `NOTIFIER_GROUP_ID="a b"`) {
		t.Errorf("exit %d, output:\n%s\nwant exit 1 and an error naming NOTIFIER_GROUP_ID", exit, out.String())
	}
	if ctx.Err() != nil || strings.Contains(out.String(), "not reachable") {
		t.Errorf("the start waited for Kafka before refusing the setting:\n%s", out.String())
	}
}

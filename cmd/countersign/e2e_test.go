package main_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/mail/smtptest"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds ./cmd/countersign once per test run: the end-to-end tests
// drive the real binary, as an operator would.
func binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "countersign-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "countersign")
		args := []string{"build", "-o", binPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// devKafka is where a `countersign dev` under test gets its Kafka: an
// embedded broker on a free port, or, when KAFKA_TEST_BROKERS names a real
// cluster, that cluster with notifier and recommender groups of the test's
// own that start at the topics' end (eventstest.FreshGroup), so the history
// other tests left there is not this test's business. It returns the
// brokers' address and the variables to add.
func devKafka(t testing.TB) (brokers string, env []string) {
	t.Helper()
	if !eventstest.RealBroker() {
		brokers = freeAddr(t)
		return brokers, []string{"EMBEDDED_KAFKA_ADDR=" + brokers}
	}
	brokers = os.Getenv(eventstest.EnvBrokers)
	return brokers, []string{"KAFKA_BROKERS=" + brokers,
		"NOTIFIER_GROUP_ID=" + eventstest.FreshGroup(t, brokers), "RECOMMENDER_GROUP_ID=" + eventstest.FreshGroup(t, brokers)}
}

// proc is a running countersign process with its output captured.
type proc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	stdout bytes.Buffer
	stderr bytes.Buffer
	done   chan error
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stdout.String() + p.stderr.String()
}

// start runs the binary in dir with exactly env (plus PATH and HOME).
func start(t testing.TB, dir string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	p := &proc{cmd: cmd, done: make(chan error, 1)}
	cmd.Stdout = lockedWriter{&p.mu, &p.stdout}
	cmd.Stderr = lockedWriter{&p.mu, &p.stderr}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("countersign %s output:\n%s", strings.Join(args, " "), p.output())
		}
	})
	return p
}

// run runs the binary to completion.
func run(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	cmd.Dir = t.TempDir()
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

func postJSON(t *testing.T, url, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return resp.StatusCode, m
}

func waitHTTP(t testing.TB, p *proc, url string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case err := <-p.done:
			p.done <- err // for the cleanup, which waits on it
			t.Fatalf("countersign exited early: %v\n%s", err, p.output())
		default:
		}
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s not ready within %v", url, timeout)
}

// outboxMail waits for an .eml file to addr whose subject contains subject.
func outboxMail(t *testing.T, dir, addr, subject string, timeout time.Duration) smtptest.Received {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		files, _ := filepath.Glob(filepath.Join(dir, "*.eml"))
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			m := smtptest.Received{Data: data}
			h, err := m.Header()
			if err != nil {
				continue
			}
			if strings.Contains(h.Get("To"), addr) && strings.Contains(strings.ToLower(m.Subject()), subject) {
				return m
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no mail to %s with subject containing %q in %s within %v", addr, subject, dir, timeout)
	return smtptest.Received{}
}

var codeRE = regexp.MustCompile(`\b(\d{6})\b`)

// TestDevEndToEnd: build the binary, start `countersign dev` on free ports,
// register over HTTP, read the code from the outbox .eml, verify, see the
// verified mail, register the account again and see the notice, and read
// the topics back with a Kafka client.
func TestDevEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	outbox := filepath.Join(dir, "outbox")
	httpAddr, opsAddr := freeAddr(t), freeAddr(t)
	// The dev inbox on a free port too: its default, 127.0.0.1:8025, may be
	// taken on a shared machine.
	env := []string{"HTTP_ADDR=" + httpAddr, "METRICS_ADDR=" + opsAddr, "MAIL_OUTBOX_DIR=" + outbox, "LOG_LEVEL=info", "DEV_INBOX_ADDR=" + freeAddr(t)}
	// Issue 7: dev on a real cluster passes the same test.
	brokers, kafkaEnv := devKafka(t)
	env = append(env, kafkaEnv...)
	p := start(t, dir, env, "dev")
	base := "http://" + httpAddr
	waitHTTP(t, p, base+"/readyz", 90*time.Second)
	if out := p.output(); !strings.Contains(out, base) || !strings.Contains(out, "curl") || !strings.Contains(out, opsAddr) {
		t.Errorf("dev did not print where it listens and a curl line:\n%s", out)
	}
	// Issue 14: /metrics on METRICS_ADDR, not on the public HTTP_ADDR.
	if status := getStatus(t, base+"/metrics"); status != http.StatusNotFound {
		t.Errorf("GET /metrics on HTTP_ADDR = %d, want 404", status)
	}
	if status := getStatus(t, "http://"+opsAddr+"/metrics"); status != http.StatusOK {
		t.Errorf("GET /metrics on METRICS_ADDR = %d, want 200", status)
	}

	email := eventstest.UniqueEmail(t)
	status, body := postJSON(t, base+"/api/register", fmt.Sprintf(`{"email":%q,"first_name":"Ada","last_name":"Lovelace"}`, strings.ToUpper(email)))
	if status != http.StatusAccepted || body["status"] != "pending_verification" {
		t.Fatalf("register: %d %v", status, body)
	}
	mail := outboxMail(t, outbox, email, "verify", 60*time.Second)
	text, err := mail.TextPart()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mail.HTMLPart(); err != nil {
		t.Errorf("verification mail has no HTML part: %v", err)
	}
	m := codeRE.FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no 6-digit code in the mail:\n%s", text)
	}
	code := m[1]
	if strings.Contains(p.output(), code) {
		t.Errorf("the code %s appears in the process output", code)
	}

	wrong := "000000"
	if code == wrong {
		wrong = "000001"
	}
	if status, _ := postJSON(t, base+"/api/verify", fmt.Sprintf(`{"email":%q,"code":%q}`, email, wrong)); status != http.StatusBadRequest {
		t.Errorf("wrong code: %d, want 400", status)
	}
	if status, body := postJSON(t, base+"/api/verify", fmt.Sprintf(`{"email":%q,"code":%q}`, email, code)); status != http.StatusOK || body["status"] != "verified" {
		t.Fatalf("verify: %d %v", status, body)
	}
	outboxMail(t, outbox, email, "verified", 60*time.Second)
	outboxMail(t, outbox, email, "getting started", 60*time.Second)

	// Issue 13 point 3: registering the account again answers as for a new
	// address and mails the owner a notice, without the attempt's names.
	status, body = postJSON(t, base+"/api/register", fmt.Sprintf(`{"email":%q,"first_name":"Mallory","last_name":"Evil"}`, email))
	if status != http.StatusAccepted || body["status"] != "pending_verification" || body["expires_at"] == nil {
		t.Fatalf("register the account again: %d %v, want the 202 of a new address", status, body)
	}
	notice := outboxMail(t, outbox, email, "someone tried to register", 60*time.Second)
	noticeText, err := notice.TextPart()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(noticeText, "You already have an account") || strings.Contains(noticeText, "Mallory") || codeRE.MatchString(noticeText) {
		t.Errorf("notice: want \"You already have an account\", no attempt names, no code:\n%s", noticeText)
	}
	if recs := readWithKcat(t, brokers, events.TopicUserAccountExists, email); len(recs) != 1 || strings.Contains(recs[0], "Mallory") {
		t.Errorf("%s: %d records keyed %s, want 1 without the attempt's names: %q", events.TopicUserAccountExists, len(recs), email, recs)
	}

	// Both topics hold the events, keyed by the normalized address, read by
	// a client independent of the binary.
	for _, topic := range []string{events.TopicUserAccountCreated, events.TopicUserAccountVerified} {
		recs := readWithKcat(t, brokers, topic, email)
		if len(recs) != 1 {
			t.Errorf("%s: %d records keyed %s, want 1", topic, len(recs), email)
			continue
		}
		e, err := events.Decode([]byte(recs[0]))
		if err != nil {
			t.Errorf("%s: %v", topic, err)
			continue
		}
		if e.Type != topic || strings.Contains(recs[0], code) {
			t.Errorf("%s: type %s, or the plain code is in the event", topic, e.Type)
		}
	}

	// SIGTERM: a graceful stop, exit code 0.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, p.output())
		}
	case <-time.After(60 * time.Second):
		t.Errorf("no exit within 60s of SIGTERM")
	}
}

// readWithKcat reads topic with kcat when it is installed (CI installs it)
// and with librdkafka otherwise, returning the values keyed key.
func readWithKcat(t *testing.T, brokers, topic, key string) []string {
	t.Helper()
	if _, err := exec.LookPath("kcat"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("kcat is not installed (.ci/run installs it)")
		}
		t.Log("kcat not installed: reading with librdkafka instead")
		var out []string
		for _, m := range eventstest.ReadTopic(t, brokers, topic, 1, 30*time.Second, eventstest.ByKey(key)) {
			out = append(out, string(m.Value))
		}
		return out
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kcat", "-b", brokers, "-C", "-t", topic, "-o", "beginning", "-e", "-q",
		"-f", "%k\t%h\t%s\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kcat: %v", err)
	}
	var vals []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		k, rest, _ := strings.Cut(sc.Text(), "\t")
		headers, value, _ := strings.Cut(rest, "\t")
		if k != key {
			continue
		}
		if !strings.Contains(headers, "content-type=application/cloudevents+json") {
			t.Errorf("%s record headers %q lack the CloudEvents content-type", topic, headers)
		}
		vals = append(vals, value)
	}
	return vals
}

func TestHelpListsSettings(t *testing.T) {
	for cmd, want := range map[string][]string{
		"userapi":     {"HTTP_ADDR", "CODE_TTL", "15m", "KAFKA_BROKERS", "CODE_ENCRYPTION_KEYS", "RATE_LIMIT_PER_IP"},
		"notifier":    {"NOTIFIER_GROUP_ID", "notification-service", "NOTIFIER_COMMIT_EVERY", "SMTP_TLS", "MAIL_OUTBOX_DIR"},
		"recommender": {"RECOMMENDER_GROUP_ID", "recommendation-service", "SMTP_HOST"},
		"dev":         {"EMBEDDED_KAFKA_ADDR", "127.0.0.1:9092", "HTTP_ADDR", "127.0.0.1:8080"},
	} {
		out, code := run(t, nil, cmd, "-h")
		if code != 0 {
			t.Errorf("%s -h: exit %d", cmd, code)
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("%s -h does not mention %s:\n%s", cmd, w, out)
			}
		}
	}
	if out, code := run(t, nil, "frobnicate"); code != 2 || !strings.Contains(out, "unknown command") {
		t.Errorf("unknown command: exit %d\n%s", code, out)
	}
}

func TestKeygen(t *testing.T) {
	out, code := run(t, nil, "keygen")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	if _, err := events.ParseKeyring(strings.TrimSpace(out)); err != nil {
		t.Errorf("keygen printed %q, which does not parse: %v", out, err)
	}
}

func TestBadSettingsStopTheStart(t *testing.T) {
	key := "CODE_ENCRYPTION_KEYS=k1:" + strings.Repeat("A", 43) + "="
	cases := []struct {
		cmd  string
		env  []string
		want []string
	}{
		{"userapi", []string{key, "KAFKA_BROKERS=127.0.0.1:1", "CODE_TTL=soon"}, []string{"CODE_TTL", "duration"}},
		{"userapi", []string{"KAFKA_BROKERS=127.0.0.1:1"}, []string{"CODE_ENCRYPTION_KEYS", "keygen"}},
		{"userapi", []string{"KAFKA_BROKERS=127.0.0.1:1", "CODE_ENCRYPTION_KEYS=k1:notbase64!"}, []string{"CODE_ENCRYPTION_KEYS", "base64"}},
		{"userapi", []string{key}, []string{"KAFKA_BROKERS"}},
		{"notifier", []string{key, "KAFKA_BROKERS=127.0.0.1:1", "SMTP_TLS=sometimes"}, []string{"SMTP_TLS", "mandatory, opportunistic, none"}},
		{"notifier", []string{key, "KAFKA_BROKERS=127.0.0.1:1", "NOTIFIER_COMMIT_EVERY=0"}, []string{"NOTIFIER_COMMIT_EVERY"}},
		{"notifier", []string{"KAFKA_BROKERS=127.0.0.1:1"}, []string{"CODE_ENCRYPTION_KEYS"}},
		{"notifier", []string{key, "KAFKA_BROKERS=127.0.0.1:1", "NOTIFIER_GROUP_ID=a b"}, []string{`NOTIFIER_GROUP_ID="a b"`}},
		{"dev", []string{"LOG_LEVEL=loud"}, []string{"LOG_LEVEL"}},
		{"userapi", []string{key, "KAFKA_BROKERS=127.0.0.1:1", "KAFKA_TOPIC_PARTITIONS=many"}, []string{"KAFKA_TOPIC_PARTITIONS"}},
		// Wrong values that parse: reported before waiting for Kafka, which
		// is not reachable here.
		{"userapi", []string{key, "KAFKA_BROKERS=127.0.0.1:1", "CODE_TTL=48h"}, []string{"CODE_TTL", "1s to 24h"}},
		{"userapi", []string{key, "KAFKA_BROKERS=127.0.0.1:1", "HTTP_ADDR=localhost"}, []string{"HTTP_ADDR", "host:port"}},
		{"userapi", []string{key, "KAFKA_BROKERS=127.0.0.1:1", "PENDING_STORE=mysql://db"}, []string{"PENDING_STORE", "redis://"}},
		{"userapi", []string{key, "KAFKA_BROKERS=127.0.0.1:1"}, []string{"PUBLIC_URL", "PAGES"}},
		{"userapi", []string{key, "KAFKA_BROKERS=127.0.0.1:1", "PUBLIC_URL=accounts.example.com"}, []string{"PUBLIC_URL", "absolute"}},
		{"userapi", []string{key, "KAFKA_BROKERS=127.0.0.1:1", "PAGES=maybe"}, []string{"PAGES", "true or false"}},
		{"notifier", []string{key, "KAFKA_BROKERS=127.0.0.1:1", "SUPPORT_EMAIL=Help <h@x.example>"}, []string{"SUPPORT_EMAIL"}},
		// Issue 14.
		{"userapi", []string{key, "KAFKA_BROKERS=127.0.0.1:1", "TRUST_PROXY_HEADERS=true"}, []string{"TRUST_PROXY_HEADERS", "TRUSTED_PROXIES"}},
		{"userapi", []string{key, "KAFKA_BROKERS=127.0.0.1:1", "TRUSTED_PROXIES=10.0.0.0/33"}, []string{"TRUSTED_PROXIES", "CIDR"}},
		{"userapi", []string{key, "KAFKA_BROKERS=127.0.0.1:1", "CODE_MAX_SENDS_PER_DAY=0"}, []string{"CODE_MAX_SENDS_PER_DAY"}},
		{"userapi", []string{key, "KAFKA_BROKERS=127.0.0.1:1", "PENDING_MAX=none"}, []string{"PENDING_MAX"}},
		{"dev", []string{"KAFKA_BROKERS=127.0.0.1:1", "PUBLISH_TIMEOUT=1ms"}, []string{"PUBLISH_TIMEOUT"}},
		{"dev", []string{"KAFKA_BROKERS=127.0.0.1:1", "NOTIFIER_COMMIT_EVERY=0"}, []string{"NOTIFIER_COMMIT_EVERY"}},
	}
	for _, tc := range cases {
		// Well within the minute the services wait for Kafka: a wrong
		// setting is reported before anything connects.
		out, code := runWithin(t, 30*time.Second, tc.env, tc.cmd)
		if code == 0 {
			t.Errorf("%s with %v started", tc.cmd, tc.env)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s with %v: message does not name %q:\n%s", tc.cmd, tc.env, w, out)
			}
		}
		if strings.Contains(out, "goroutine ") {
			t.Errorf("%s: a stack trace instead of a message:\n%s", tc.cmd, out)
		}
	}
}

func getStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

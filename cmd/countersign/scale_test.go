package main_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/mail/smtptest"
	"github.com/countersign/countersign/notifier"
	"github.com/countersign/countersign/userapi/redistest"
)

// The scale-out tests run the real binary as several processes sharing the
// engines a deployment scales on: one Kafka (embedded, or
// KAFKA_TEST_BROKERS) and one redis-server. They are the slow tests of the
// package, each bounded well under a minute after the binary is built.

// newKey returns a CODE_ENCRYPTION_KEYS entry and its keyring: every
// process of a deployment shares one.
func newKey(t *testing.T) (string, *events.Keyring) {
	t.Helper()
	entry, err := events.GenerateKeyEntry()
	if err != nil {
		t.Fatal(err)
	}
	keys, err := events.ParseKeyring(entry)
	if err != nil {
		t.Fatal(err)
	}
	return entry, keys
}

// codeFromEvent reads the user_account_created event keyed email from the
// topic and opens its sealed code, as the notifier would.
func codeFromEvent(t *testing.T, brokers string, keys *events.Keyring, email string, nth int) string {
	t.Helper()
	msgs := eventstest.ReadTopic(t, brokers, events.TopicUserAccountCreated, nth, 30*time.Second, eventstest.ByKey(email))
	e := eventstest.Decode(t, msgs[nth-1])
	d, err := e.UserAccountCreated()
	if err != nil {
		t.Fatal(err)
	}
	code, err := keys.Open(d)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

type apiClient struct {
	t *testing.T
	c *http.Client
}

func newAPIClient(t *testing.T) apiClient {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 200
	c := &http.Client{Timeout: 30 * time.Second, Transport: tr}
	t.Cleanup(c.CloseIdleConnections)
	return apiClient{t, c}
}

// post sends body and returns the status and the Content-Type; a transport
// error is status 0.
func (a apiClient) post(url, body string) (int, string) {
	resp, err := a.c.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		a.t.Errorf("POST %s: %v", url, err)
		return 0, ""
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type")
}

func registerBody(email string) string {
	return fmt.Sprintf(`{"email":%q,"first_name":"Ada","last_name":"Lovelace"}`, email)
}

func verifyBody(email, code string) string {
	return fmt.Sprintf(`{"email":%q,"code":%q}`, email, code)
}

func wrongCode(code string) string {
	if code == "000000" {
		return "000001"
	}
	return "000000"
}

// TestScaleUserAPIReplicasShareRedis: two `countersign userapi` processes on
// one Redis, no sticky sessions. Register on one and verify on the other;
// the resend interval and the attempt limit hold across both; of 400
// concurrent right verifies spread over both, exactly one succeeds and one
// user_account_verified is published; with Redis gone both answer 503
// problem+json at once.
func TestScaleUserAPIReplicasShareRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two user API processes and redis-server")
	}
	const password = "pa55-never-logged"
	rds := redistest.Start(t, redistest.WithPassword(password))
	brokers := eventstest.Brokers(t)
	entry, keys := newKey(t)
	common := []string{
		"KAFKA_BROKERS=" + brokers,
		"CODE_ENCRYPTION_KEYS=" + entry,
		"PENDING_STORE=" + rds.URL(),
		"RATE_LIMIT_PER_IP=0",
		"CODE_MAX_ATTEMPTS=100",
		"VERIFY_MAX_FAILURES_PER_DAY=100",
		"LOG_LEVEL=info",
		// The replicas sit behind one public address; each issues links
		// the other can follow (one Redis).
		"PUBLIC_URL=https://accounts.example.com",
	}
	dir := t.TempDir()
	var procs []*proc
	var base []string
	for range 2 {
		addr := freeAddr(t)
		procs = append(procs, start(t, dir, append(common, "HTTP_ADDR="+addr, "METRICS_ADDR="+freeAddr(t)), "userapi"))
		base = append(base, "http://"+addr)
	}
	for i, p := range procs {
		waitHTTP(t, p, base[i]+"/readyz", 90*time.Second)
	}
	a, b := base[0], base[1]
	api := newAPIClient(t)

	t.Run("RegisterOnOneVerifyOnTheOther", func(t *testing.T) {
		email := eventstest.UniqueEmail(t)
		if st, _ := api.post(a+"/api/register", registerBody(email)); st != http.StatusAccepted {
			t.Fatalf("register on A: %d", st)
		}
		code := codeFromEvent(t, brokers, keys, email, 1)
		// The resend interval is one for both replicas: a register again
		// on B is a double click (202, nothing sent), a resend is refused.
		if st, _ := api.post(b+"/api/register", registerBody(email)); st != http.StatusAccepted {
			t.Errorf("register again on B within RESEND_INTERVAL: %d, want 202", st)
		}
		if st, _ := api.post(b+"/api/resend", fmt.Sprintf(`{"email":%q}`, email)); st != http.StatusTooManyRequests {
			t.Errorf("resend on B within RESEND_INTERVAL: %d, want 429", st)
		}
		if st, _ := api.post(b+"/api/verify", verifyBody(email, wrongCode(code))); st != http.StatusBadRequest {
			t.Errorf("wrong code on B: %d, want 400", st)
		}
		if st, _ := api.post(b+"/api/verify", verifyBody(email, code)); st != http.StatusOK {
			t.Fatalf("right code on B: %d, want 200", st)
		}
		if st, _ := api.post(a+"/api/verify", verifyBody(email, code)); st != http.StatusBadRequest {
			t.Errorf("same code again on A: %d, want 400", st)
		}
	})

	t.Run("AttemptsCountedAcrossReplicas", func(t *testing.T) {
		email := eventstest.UniqueEmail(t)
		if st, _ := api.post(b+"/api/register", registerBody(email)); st != http.StatusAccepted {
			t.Fatalf("register on B: %d", st)
		}
		code := codeFromEvent(t, brokers, keys, email, 1)
		for i := range 100 {
			url := []string{a, b}[i%2]
			if st, _ := api.post(url+"/api/verify", verifyBody(email, wrongCode(code))); st != http.StatusBadRequest {
				t.Fatalf("wrong code %d: %d, want 400", i+1, st)
			}
		}
		// 50 wrong codes on each replica used up the 100 of the address.
		if st, _ := api.post(a+"/api/verify", verifyBody(email, code)); st != http.StatusTooManyRequests {
			t.Errorf("right code after 100 wrong ones: %d, want 429", st)
		}
	})

	t.Run("ConcurrentVerifiesOneSuccess", func(t *testing.T) {
		email := eventstest.UniqueEmail(t)
		if st, _ := api.post(a+"/api/register", registerBody(email)); st != http.StatusAccepted {
			t.Fatalf("register on A: %d", st)
		}
		code := codeFromEvent(t, brokers, keys, email, 1)
		const n = 400
		var mu sync.Mutex
		statuses := map[int]int{}
		perReplica := [2]int{}
		var wg sync.WaitGroup
		gate := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-gate
				st, _ := api.post(base[i%2]+"/api/verify", verifyBody(email, code))
				mu.Lock()
				statuses[st]++
				if st == http.StatusOK {
					perReplica[i%2]++
				}
				mu.Unlock()
			}()
		}
		close(gate)
		wg.Wait()
		t.Logf("%d concurrent verifies over 2 replicas: %v (200s by replica %v)", n, statuses, perReplica)
		if statuses[http.StatusOK] != 1 {
			t.Errorf("%d verifies got 200, want exactly 1", statuses[http.StatusOK])
		}
		for st, c := range statuses {
			if st != http.StatusOK && st != http.StatusBadRequest && st != http.StatusTooManyRequests {
				t.Errorf("%d verifies got %d", c, st)
			}
		}
		got := eventstest.CountTopic(t, brokers, events.TopicUserAccountVerified, 3*time.Second, eventstest.ByKey(email))
		if len(got) != 1 {
			t.Errorf("%d user_account_verified events for the address, want 1", len(got))
		}
	})

	// Issue 13: registers (with other names) and right-code verifies of one
	// address at once, over both replicas, give one account, ever.
	t.Run("RushOfRegistersAndVerifiesOneAccount", func(t *testing.T) {
		email := eventstest.UniqueEmail(t)
		if st, _ := api.post(b+"/api/register", registerBody(email)); st != http.StatusAccepted {
			t.Fatalf("register on B: %d", st)
		}
		code := codeFromEvent(t, brokers, keys, email, 1)
		evil := fmt.Sprintf(`{"email":%q,"first_name":"Mallory","last_name":"Evil"}`, email)
		const n = 400
		var mu sync.Mutex
		statuses := map[string]int{}
		var wg sync.WaitGroup
		gate := make(chan struct{})
		for i := range n {
			path, body := "/api/verify", verifyBody(email, code)
			if i%4 >= 2 {
				path, body = "/api/register", evil
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-gate
				st, _ := api.post(base[i%2]+path, body)
				mu.Lock()
				statuses[fmt.Sprintf("%s %d", path, st)]++
				mu.Unlock()
			}()
		}
		close(gate)
		wg.Wait()
		t.Logf("%d concurrent registers and verifies over 2 replicas: %v", n, statuses)
		if statuses["/api/verify 200"] != 1 {
			t.Errorf("%d verifies got 200, want exactly 1", statuses["/api/verify 200"])
		}
		if statuses["/api/register 202"] != n/2 {
			t.Errorf("%d registers got 202, want all %d", statuses["/api/register 202"], n/2)
		}
		// Afterwards too: the code again, a register on each replica.
		for _, u := range base {
			if st, _ := api.post(u+"/api/verify", verifyBody(email, code)); st != http.StatusBadRequest {
				t.Errorf("the code again after the rush: %d, want 400", st)
			}
			if st, _ := api.post(u+"/api/register", evil); st != http.StatusAccepted {
				t.Errorf("register of the account: %d, want 202", st)
			}
		}
		got := eventstest.CountTopic(t, brokers, events.TopicUserAccountVerified, 3*time.Second, eventstest.ByKey(email))
		if len(got) != 1 {
			t.Errorf("%d user_account_verified events for the address, want 1", len(got))
		}
		if d, err := eventstest.Decode(t, got[0]).UserAccountVerified(); err != nil || d.FirstName != "Ada" {
			t.Errorf("verified %+v, %v: want the owner's names", d, err)
		}
		if created := eventstest.CountTopic(t, brokers, events.TopicUserAccountCreated, time.Second, eventstest.ByKey(email)); len(created) != 1 {
			t.Errorf("%d user_account_created events, want 1 (the rest within RESEND_INTERVAL, or for an account)", len(created))
		}
	})

	t.Run("RedisDown503", func(t *testing.T) {
		email := eventstest.UniqueEmail(t)
		rds.Stop()
		for _, req := range []struct{ url, body string }{
			{a + "/api/register", registerBody(email)},
			{b + "/api/verify", verifyBody(email, "123456")},
			{b + "/api/resend", fmt.Sprintf(`{"email":%q}`, email)},
		} {
			began := time.Now()
			st, ct := api.post(req.url, req.body)
			if took := time.Since(began); took > 5*time.Second {
				t.Errorf("%s took %v with Redis down", req.url, took)
			}
			if st != http.StatusServiceUnavailable || ct != "application/problem+json" {
				t.Errorf("%s with Redis down: %d %s, want 503 application/problem+json", req.url, st, ct)
			}
		}
		for _, u := range base {
			resp, err := api.c.Get(u + "/readyz")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Errorf("%s/readyz with Redis down: %d, want 503", u, resp.StatusCode)
			}
		}
	})

	for i, p := range procs {
		out := p.output()
		if strings.Contains(out, password) {
			t.Errorf("replica %d logged the Redis password:\n%s", i, out)
		}
		if strings.Contains(out, "goroutine ") || strings.Contains(out, "panic") {
			t.Errorf("replica %d printed a stack trace:\n%s", i, out)
		}
		if !strings.Contains(out, "pending_store=redis://127.0.0.1") {
			t.Errorf("replica %d does not log which store it uses:\n%s", i, out)
		}
	}
}

// describeGroup returns each member's partitions, as topic/partition.
func describeGroup(t testing.TB, brokers, group string) [][]string {
	t.Helper()
	a, err := ckafka.NewAdminClient(&ckafka.ConfigMap{"bootstrap.servers": brokers, "log_level": 3})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := a.DescribeConsumerGroups(ctx, []string{group})
	if err != nil {
		t.Fatal(err)
	}
	var out [][]string
	for _, g := range res.ConsumerGroupDescriptions {
		for _, m := range g.Members {
			var ps []string
			for _, tp := range m.Assignment.TopicPartitions {
				ps = append(ps, fmt.Sprintf("%s/%d", *tp.Topic, tp.Partition))
			}
			sort.Strings(ps)
			out = append(out, ps)
		}
	}
	return out
}

// mailsSent scrapes a notifier's countersign_notifier_mails_sent_total.
func mailsSent(t *testing.T, metricsAddr string) int {
	t.Helper()
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", metricsAddr, err)
	}
	defer resp.Body.Close()
	total := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "countersign_notifier_mails_sent_total{") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			total += int(v)
		}
	}
	return total
}

// TestScaleNotifiersShareTheGroup: three `countersign notifier` processes in
// one consumer group share the nine partitions (three topics of three) and all
// send mail. One is stopped with SIGTERM, then another killed with SIGKILL;
// each time the group hands the partitions to those left, and every event
// published before, between and after gets its mail, with duplicates bounded
// by the commit interval.
func TestScaleNotifiersShareTheGroup(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three notifier processes")
	}
	brokers := eventstest.Brokers(t)
	smtp := smtptest.Start(t)
	entry, keys := newKey(t)
	group := eventstest.UniqueGroup(t)
	kcfg := eventstest.Config(t, brokers)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, kcfg, events.Topics...); err != nil {
		t.Fatal(err)
	}
	producer, err := kafka.NewProducer(kcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = producer.Close(ctx)
	})
	partitions := 0
	for range notifier.Topics {
		partitions += 3 // KAFKA_TOPIC_PARTITIONS default, as EnsureTopics made them
	}

	eventstest.GroupAtEnd(t, brokers, group)

	const commitEvery = 5
	dir := t.TempDir()
	var procs []*proc
	var metrics []string
	for range 3 {
		m := freeAddr(t)
		metrics = append(metrics, m)
		procs = append(procs, start(t, dir, []string{
			"KAFKA_BROKERS=" + brokers,
			"CODE_ENCRYPTION_KEYS=" + entry,
			"NOTIFIER_GROUP_ID=" + group,
			"NOTIFIER_COMMIT_EVERY=" + strconv.Itoa(commitEvery),
			"SMTP_HOST=127.0.0.1", "SMTP_PORT=" + strconv.Itoa(smtp.Port()), "SMTP_TLS=none",
			"METRICS_ADDR=" + m,
			"MAIL_OUTBOX_DIR=" + filepath.Join(dir, "unused-outbox"),
		}, "notifier"))
	}
	assigned := eventstest.WaitGroup(t, brokers, group, 3, partitions, 60*time.Second)
	t.Logf("three notifiers: partitions per member %v", assigned)
	// Each topic is spread on its own: every notifier sends code mails, not
	// just confirmations (the range assignor; see events/subscriber.go).
	for _, ps := range describeGroup(t, brokers, group) {
		created := 0
		for _, p := range ps {
			if strings.HasPrefix(p, events.TopicUserAccountCreated+"/") {
				created++
			}
		}
		if created != 1 {
			t.Errorf("a notifier holds %v: %d user_account_created partitions, want 1 of the 3", ps, created)
		}
	}

	var addrs []string
	publish := func(n int) {
		t.Helper()
		for range n {
			email := eventstest.UniqueEmail(t)
			addrs = append(addrs, email)
			userID := "u-" + eventstest.Suffix()
			cd := events.UserAccountCreated{
				UserID: userID, Email: email, FirstName: "Ada", LastName: "Lovelace",
				ExpiresAt: time.Now().Add(15 * time.Minute),
			}
			sealed, err := keys.Seal("123456", cd)
			if err != nil {
				t.Fatal(err)
			}
			cd.EncryptedCode = sealed
			created, err := events.NewUserAccountCreated(cd)
			if err != nil {
				t.Fatal(err)
			}
			verified, err := events.NewUserAccountVerified(events.UserAccountVerified{
				UserID: userID, Email: email, FirstName: "Ada", LastName: "Lovelace", VerifiedAt: time.Now(),
			})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range []events.Event{created, verified} {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				err = producer.Publish(ctx, e)
				cancel()
				if err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	// everyMailed waits until every event published so far has its mail:
	// the code and the confirmation for each address.
	everyMailed := func(timeout time.Duration) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for {
			got := map[string]int{}
			for _, m := range smtp.Messages() {
				kind := "code"
				if strings.Contains(strings.ToLower(m.Subject()), "verified") {
					kind = "confirmation"
				}
				for _, to := range m.To {
					got[to+" "+kind]++
				}
			}
			var missing []string
			for _, a := range addrs {
				for _, kind := range []string{"code", "confirmation"} {
					if got[a+" "+kind] == 0 {
						missing = append(missing, a+" "+kind)
					}
				}
			}
			if len(missing) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d events have no mail after %v", len(missing), 2*len(addrs), timeout)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// Sixty addresses, a code and a confirmation each: every one of the six
	// partitions gets events.
	publish(60)
	everyMailed(30 * time.Second)
	for i, m := range metrics {
		// A member of a stable group answers /readyz.
		if resp, err := http.Get("http://" + m + "/readyz"); err != nil {
			t.Errorf("notifier %d: GET /readyz: %v", i, err)
		} else {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("notifier %d: GET /readyz = %d, want 200", i, resp.StatusCode)
			}
		}
		if n := mailsSent(t, m); n == 0 {
			t.Errorf("notifier %d sent no mail: the group does not share the work", i)
		} else {
			t.Logf("notifier %d sent %d mails", i, n)
		}
	}

	// SIGTERM: a graceful leave. The group rebalances to two members.
	if err := procs[0].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-procs[0].done:
		procs[0].done <- err
		if err != nil {
			t.Errorf("notifier exit after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("notifier did not exit within 30s of SIGTERM")
	}
	publish(30)
	assigned = eventstest.WaitGroup(t, brokers, group, 2, partitions, 30*time.Second)
	t.Logf("after SIGTERM: partitions per member %v", assigned)
	everyMailed(30 * time.Second)

	// SIGKILL: no goodbye, no last commit. The group notices after the
	// session timeout (10s) and the survivor takes every partition.
	_ = procs[1].cmd.Process.Kill()
	publish(30)
	assigned = eventstest.WaitGroup(t, brokers, group, 1, partitions, 40*time.Second)
	t.Logf("after SIGKILL: partitions per member %v", assigned)
	everyMailed(30 * time.Second)

	time.Sleep(500 * time.Millisecond)
	// On a shared cluster the new group also reads other tests' history:
	// only mails to this test's addresses count.
	ours := map[string]bool{}
	for _, a := range addrs {
		ours[a] = true
	}
	mails := 0
	for _, m := range smtp.Messages() {
		for _, to := range m.To {
			if ours[to] {
				mails++
			}
		}
	}
	dups := mails - 2*len(addrs)
	t.Logf("%d events, %d mails (%d sent again after the SIGKILL)", 2*len(addrs), mails, dups)
	// A crashed member's partitions are re-read from the last finished
	// commit: kafka.SubscriberConfig.CommitEvery bounds that below
	// 2×CommitEvery; the other two stops re-send nothing.
	if dups >= 2*commitEvery {
		t.Errorf("%d duplicate mails, want fewer than twice the commit interval %d", dups, commitEvery)
	}
}

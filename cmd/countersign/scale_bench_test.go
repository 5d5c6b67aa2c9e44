package main_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/notifier"
	"github.com/countersign/countersign/userapi/redistest"
)

// The scale benchmarks measure what docs/scaling.md reports: requests per
// second through 1 and 2 user API processes, and mails per second through 1
// and 3 notifier processes, everything on this machine (the load generator,
// the broker and Redis included), with the CPU time each kind of process
// spent per request or mail. Run them without -race:
//
//	go test -run '^$' -bench 'ScaleUserAPI' -benchtime 20000x -count 3 ./cmd/countersign/
//	go test -run '^$' -bench 'ScaleNotifiers/smtp=instant' -benchtime 5000x -count 3 ./cmd/countersign/
//	go test -run '^$' -bench 'ScaleNotifiers/smtp=20ms' -benchtime 600x -count 2 ./cmd/countersign/
//
// b.N is the number of requests (or mails). Nothing is asserted about speed.

// BenchmarkScaleUserAPI: POST /api/register (store write plus a Kafka
// publish acknowledged by the broker) and a wrong-code POST /api/verify
// (store only), spread round-robin over the replicas by 32 clients.
func BenchmarkScaleUserAPI(b *testing.B) {
	for _, tc := range []struct {
		store    string
		replicas int
	}{{"memory", 1}, {"redis", 1}, {"redis", 2}} {
		b.Run(fmt.Sprintf("store=%s/replicas=%d", tc.store, tc.replicas), func(b *testing.B) {
			base, cpu := startUserAPIs(b, tc.store, tc.replicas)
			b.Run("register", func(b *testing.B) {
				prefix := eventstest.Suffix()
				load(b, base, cpu, func(i int) (string, string) {
					return "/api/register", registerBody(fmt.Sprintf("bench-%s-%d@example.com", prefix, i))
				}, http.StatusAccepted)
			})
			b.Run("verify-wrong-code", func(b *testing.B) {
				// Unknown addresses: Attempt finds nothing, the MAC is still
				// computed, the answer is 400.
				prefix := eventstest.Suffix()
				load(b, base, cpu, func(i int) (string, string) {
					return "/api/verify", verifyBody(fmt.Sprintf("bench-%s-%d@example.com", prefix, i), "000000")
				}, http.StatusBadRequest)
			})
		})
	}
}

func startUserAPIs(b *testing.B, store string, replicas int) ([]string, *cpuMeter) {
	b.Helper()
	brokers := eventstest.Brokers(b)
	entry, err := events.GenerateKeyEntry()
	if err != nil {
		b.Fatal(err)
	}
	cpu := &cpuMeter{pids: map[string][]int{}}
	// PAGES=false keeps the figures comparable with docs/benchmarks.md,
	// measured before the pages: with them on, each code also writes its
	// link (one more store write per register and resend).
	env := []string{"KAFKA_BROKERS=" + brokers, "CODE_ENCRYPTION_KEYS=" + entry, "RATE_LIMIT_PER_IP=0", "LOG_LEVEL=warn", "PAGES=false"}
	if store == "redis" {
		rds := redistest.Start(b)
		cpu.pids["redis"] = []int{rds.PID()}
		env = append(env, "PENDING_STORE="+rds.URL())
	}
	dir := b.TempDir()
	var base []string
	for range replicas {
		addr := freeAddr(b)
		p := benchStart(b, dir, append(env, "HTTP_ADDR="+addr, "METRICS_ADDR=off"), "userapi")
		benchWaitReady(b, p, "http://"+addr+"/readyz")
		base = append(base, "http://"+addr)
		cpu.pids["userapi"] = append(cpu.pids["userapi"], p.cmd.Process.Pid)
	}
	return base, cpu
}

// cpuMeter reads the CPU time (user + system) of processes by role; "bench"
// is this process: the load generator, and the embedded broker when there
// is no KAFKA_TEST_BROKERS.
type cpuMeter struct{ pids map[string][]int }

func (m *cpuMeter) read() map[string]time.Duration {
	out := map[string]time.Duration{}
	for role, pids := range m.pids {
		for _, pid := range pids {
			out[role] += procCPU(pid)
		}
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		out["bench"] = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return out
}

// procCPU is utime + stime of pid from /proc (clock ticks of 10ms).
func procCPU(pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// load sends b.N requests from 32 goroutines, request i to replica i mod n,
// and reports requests per second and the CPU each role spent per request.
func load(b *testing.B, base []string, cpu *cpuMeter, req func(i int) (path, body string), want int) {
	const clients = 32
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = clients
	c := &http.Client{Timeout: 30 * time.Second, Transport: tr}
	defer c.CloseIdleConnections()
	var next atomic.Int64
	var bad atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	cpuBefore := cpu.read()
	began := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				path, body := req(i)
				resp, err := c.Post(base[i%len(base)]+path, "application/json", strings.NewReader(body))
				if err != nil {
					bad.Add(1)
					continue
				}
				resp.Body.Close()
				if resp.StatusCode != want {
					bad.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(began)
	cpuAfter := cpu.read()
	b.StopTimer()
	if n := bad.Load(); n > 0 {
		b.Errorf("%d of %d requests did not get %d", n, b.N, want)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	for role, after := range cpuAfter {
		b.ReportMetric(float64((after-cpuBefore[role]).Microseconds())/float64(b.N), "cpu-µs-"+role+"/req")
	}
}

// BenchmarkScaleNotifiers: b.N user_account_created events published at
// once to a group of 1 or 3 notifier processes that were already sharing
// the partitions; measured from the first publish to the last mail the SMTP
// sink (in this process) accepted. The sink answers at once (smtp=instant),
// or after 20ms per message (smtp=20ms) as a relay across a network does.
//
// Topics have 3 partitions each (KAFKA_TOPIC_PARTITIONS' default), or 12.
func BenchmarkScaleNotifiers(b *testing.B) {
	for _, delay := range []time.Duration{0, 20 * time.Millisecond} {
		name := "instant"
		if delay > 0 {
			name = delay.String()
		}
		for _, partitions := range []int{3, 12} {
			for _, instances := range []int{1, 3} {
				b.Run(fmt.Sprintf("smtp=%s/partitions=%d/instances=%d", name, partitions, instances), func(b *testing.B) {
					benchNotifiers(b, instances, partitions, delay)
				})
			}
		}
	}
}

func benchNotifiers(b *testing.B, instances, partitions int, delay time.Duration) {
	brokers := eventstest.Brokers(b)
	sink := startSink(b, delay)
	entry, err := events.GenerateKeyEntry()
	if err != nil {
		b.Fatal(err)
	}
	keys, err := events.ParseKeyring(entry)
	if err != nil {
		b.Fatal(err)
	}
	if eventstest.RealBroker() && partitions != 3 {
		b.Skip("needs topics of its own partition count: runs on the embedded broker only")
	}
	kcfg := eventstest.Config(b, brokers)
	kcfg.Partitions = partitions
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, kcfg, events.Topics...); err != nil {
		b.Fatal(err)
	}
	producer, err := kafka.NewProducer(kcfg)
	if err != nil {
		b.Fatal(err)
	}
	defer producer.Close(context.Background())
	group := eventstest.UniqueGroup(b)
	eventstest.GroupAtEnd(b, brokers, group)
	dir := b.TempDir()
	cpu := &cpuMeter{pids: map[string][]int{}}
	for range instances {
		p := benchStart(b, dir, []string{
			"KAFKA_BROKERS=" + brokers, "CODE_ENCRYPTION_KEYS=" + entry, "NOTIFIER_GROUP_ID=" + group,
			"SMTP_HOST=127.0.0.1", "SMTP_PORT=" + strconv.Itoa(sink.port), "SMTP_TLS=none",
			"METRICS_ADDR=off", "LOG_LEVEL=warn",
		}, "notifier")
		cpu.pids["notifier"] = append(cpu.pids["notifier"], p.cmd.Process.Pid)
	}
	eventstest.WaitGroup(b, brokers, group, instances, len(notifier.Topics)*partitions, 60*time.Second)
	b.Logf("assignment: %v", describeGroup(b, brokers, group))

	evs := make([]events.Event, b.N)
	for i := range evs {
		email := fmt.Sprintf("bench-%s-%d@example.com", eventstest.Suffix(), i)
		cd := events.UserAccountCreated{
			UserID: "u", Email: email, FirstName: "Ada", LastName: "Lovelace",
			ExpiresAt: time.Now().Add(time.Hour),
		}
		sealed, err := keys.Seal("123456", cd)
		if err != nil {
			b.Fatal(err)
		}
		cd.EncryptedCode = sealed
		evs[i], err = events.NewUserAccountCreated(cd)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	cpuBefore := cpu.read()
	began := time.Now()
	var wg sync.WaitGroup
	for _, e := range evs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := producer.Publish(context.Background(), e); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(5 * time.Minute)
	for sink.received.Load() < int64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d mails within 5m", sink.received.Load(), b.N)
		}
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(began)
	cpuAfter := cpu.read()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "mails/s")
	for role, after := range cpuAfter {
		b.ReportMetric(float64((after-cpuBefore[role]).Microseconds())/float64(b.N), "cpu-µs-"+role+"/mail")
	}
}

// sink is an SMTP server that counts messages and takes delay to accept
// each one.
type sink struct {
	port     int
	delay    time.Duration
	received atomic.Int64
}

func startSink(b *testing.B, delay time.Duration) *sink {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &sink{port: ln.Addr().(*net.TCPAddr).Port, delay: delay}
	srv := smtp.NewServer(s)
	srv.Domain = "localhost"
	srv.ErrorLog = log.New(io.Discard, "", 0)
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Close() })
	return s
}

func (s *sink) NewSession(*smtp.Conn) (smtp.Session, error) { return sinkSession{s}, nil }

type sinkSession struct{ s *sink }

func (sinkSession) Mail(string, *smtp.MailOptions) error { return nil }
func (sinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (ss sinkSession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	time.Sleep(ss.s.delay)
	ss.s.received.Add(1)
	return nil
}
func (sinkSession) Reset()        {}
func (sinkSession) Logout() error { return nil }

// benchStart is start (e2e_test.go) that stops the process gracefully at
// the end, so a benchmark's notifiers commit and leave the group.
func benchStart(b *testing.B, dir string, env []string, args ...string) *proc {
	b.Helper()
	p := start(b, dir, env, args...)
	b.Cleanup(func() { // runs before start's own cleanup, which kills
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-p.done:
			p.done <- err
		case <-time.After(20 * time.Second):
		}
	})
	return p
}

func benchWaitReady(b *testing.B, p *proc, url string) {
	b.Helper()
	waitHTTP(b, p, url, 90*time.Second)
}

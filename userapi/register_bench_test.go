package userapi_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/userapi"
)

// BenchmarkRegister drives POST /api/register over HTTP on loopback with 64
// concurrent clients, a unique address per request, against the user API
// with its memory store, the rate limit off, and a real idempotent acks=all
// producer on the broker (embedded, or KAFKA_TEST_BROKERS): each 202 comes
// after the broker's acknowledgement. It reports requests/s and the 99th
// percentile latency; ns/op is the inverse of requests/s. The clients run in
// this process and share the CPU with the server, as cmd/loadgen's do. For
// the figure against the machine's ceiling, run cmd/loadgen -mode all. Run:
//
//	go test -run '^$' -bench Register -benchtime 20000x ./userapi/
func BenchmarkRegister(b *testing.B) {
	const clients = 64
	brokers := eventstest.Brokers(b)
	kcfg := eventstest.Config(b, brokers)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, kcfg, events.Topics...); err != nil {
		b.Fatal(err)
	}
	producer, err := kafka.NewProducer(kcfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = producer.Close(ctx)
	})
	keys, err := events.NewRandomKeyring()
	if err != nil {
		b.Fatal(err)
	}
	srv, err := userapi.NewServer(userapi.Config{HTTPAddr: "127.0.0.1:0", RateLimitPerIP: userapi.RateLimitOff},
		userapi.Deps{Publisher: producer, Keyring: keys, Logger: eventstest.Logger(b)})
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Open(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Close(ctx)
	})
	url := "http://" + srv.Addr() + "/api/register"
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		Proxy: nil, MaxIdleConns: clients, MaxIdleConnsPerHost: clients, DisableCompression: true,
	}}
	b.Cleanup(client.CloseIdleConnections)

	prefix := "bench-" + eventstest.Suffix() + "-"
	var seq atomic.Int64
	register := func() (time.Duration, error) {
		email := prefix + strconv.FormatInt(seq.Add(1), 10) + "@example.com"
		body := `{"email":"` + email + `","first_name":"Ada","last_name":"Lovelace"}`
		start := time.Now()
		resp, err := client.Post(url, "application/json", bytes.NewReader([]byte(body)))
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			return 0, &statusError{resp.StatusCode}
		}
		return time.Since(start), nil
	}
	// The first publish waits for the broker connection and metadata.
	if _, err := register(); err != nil {
		b.Fatal(err)
	}

	var (
		mu  sync.Mutex
		all []time.Duration
	)
	// RunParallel starts parallelism×GOMAXPROCS goroutines: 64 clients.
	procs := runtime.GOMAXPROCS(0)
	b.SetParallelism((clients + procs - 1) / procs)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		var lat []time.Duration
		for pb.Next() {
			d, err := register()
			if err != nil {
				b.Error(err)
				return
			}
			lat = append(lat, d)
		}
		mu.Lock()
		all = append(all, lat...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	if len(all) == 0 {
		return
	}
	slices.Sort(all)
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(all[(len(all)*99+99)/100-1].Microseconds())/1000, "p99_ms")
}

type statusError struct{ status int }

func (e *statusError) Error() string {
	return "register answered " + strconv.Itoa(e.status) + ", want 202"
}

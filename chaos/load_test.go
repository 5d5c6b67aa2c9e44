package chaos

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// outcome is one register request.
type outcome struct {
	email      string
	status     int // 0: no answer (timeout, connection refused)
	start, end time.Time
}

// loadGen posts registrations, a new address each, at a fixed rate from a
// fixed number of clients (open loop; a tick with every client busy is
// skipped, so an outage does not pile up requests to fire at its end).
type loadGen struct {
	prefix string
	urls   []string
	client *http.Client

	seq     atomic.Int64
	mu      sync.Mutex
	results []outcome
}

func newLoad(prefix string, urls []string) *loadGen {
	return &loadGen{prefix: prefix, urls: urls, client: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 64},
	}}
}

// run starts the load; the returned stop ends it and waits for the requests
// in flight.
func (g *loadGen) run(rate float64, clients int) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	tokens := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Duration(float64(time.Second) / rate))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				select {
				case tokens <- struct{}{}:
				default:
				}
			}
		}
	}()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tokens:
					g.register()
				}
			}
		}()
	}
	return func() { cancel(); wg.Wait() }
}

func (g *loadGen) register() {
	n := g.seq.Add(1)
	email := fmt.Sprintf("%s-%06d@chaos.example", g.prefix, n)
	url := g.urls[int(n)%len(g.urls)] + "/api/register"
	body := fmt.Sprintf(`{"email":%q,"first_name":"Ada","last_name":"Lovelace"}`, email)
	o := outcome{email: email, start: time.Now()}
	resp, err := g.client.Post(url, "application/json", strings.NewReader(body))
	if err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		o.status = resp.StatusCode
	}
	o.end = time.Now()
	g.mu.Lock()
	g.results = append(g.results, o)
	g.mu.Unlock()
}

func (g *loadGen) outcomes() []outcome {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]outcome(nil), g.results...)
}

package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// newClient returns an HTTP/1.1 client that keeps one connection per
// concurrent client alive, so the run measures requests, not TCP handshakes.
func newClient(conns int, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:               nil, // never send benchmark traffic through a proxy from the environment
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
	}
}

// post sends body as JSON and reads the answer to the end (so the connection
// is reused). It returns the status, or an error when there was no answer.
func post(ctx context.Context, c *http.Client, url string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// errKind names a transport error without addresses or ports, so that equal
// failures are counted together.
func errKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection reset"
	case errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, os.ErrDeadlineExceeded):
		return "no local port / deadline"
	}
	return "other: " + err.Error()
}

// errExhausted ends a closed-loop run early: the work list is used up.
var errExhausted = errors.New("no more work")

// request does one request; seq numbers requests from 0 in the order they
// were started. It returns the HTTP status or a transport error.
type request func(ctx context.Context, seq int) (status int, err error)

// runClosed keeps clients requests in flight for warmup+d (a closed loop:
// each client sends its next request when the last was answered). Requests
// started during the warm-up are not counted. A request returning
// errExhausted stops its client; the run then ends when every client has.
func runClosed(ctx context.Context, name string, clients int, warmup, d time.Duration, do request) Phase {
	start := time.Now()
	measureFrom := start.Add(warmup)
	end := measureFrom.Add(d)
	ctx, cancel := context.WithDeadline(ctx, end.Add(30*time.Second))
	defer cancel()

	type shard struct {
		lat    []time.Duration
		status map[int]int
		errs   map[string]int
		last   time.Time
	}
	shards := make([]shard, clients)
	var seq atomic.Int64
	var usage0 atomic.Pointer[usage]
	snap := time.AfterFunc(warmup, func() { u := readUsage(); usage0.Store(&u) })
	defer snap.Stop()
	var wg sync.WaitGroup
	for w := range clients {
		wg.Add(1)
		go func(sh *shard) {
			defer wg.Done()
			sh.status = map[int]int{}
			sh.errs = map[string]int{}
			sh.lat = make([]time.Duration, 0, 4096)
			for {
				t0 := time.Now()
				if !t0.Before(end) || ctx.Err() != nil {
					return
				}
				status, err := do(ctx, int(seq.Add(1)-1))
				if errors.Is(err, errExhausted) {
					return
				}
				t1 := time.Now()
				if t0.Before(measureFrom) {
					continue
				}
				sh.last = t1
				if err != nil {
					sh.errs[errKind(err)]++
					continue
				}
				sh.status[status]++
				sh.lat = append(sh.lat, t1.Sub(t0))
			}
		}(&shards[w])
	}
	wg.Wait()
	usage1 := readUsage()

	p := Phase{Name: name, Mode: "closed", Clients: clients, Status: map[int]int{}, Errors: map[string]int{}}
	var lat []time.Duration
	last := measureFrom
	for _, sh := range shards {
		lat = append(lat, sh.lat...)
		for k, v := range sh.status {
			p.Status[k] += v
			p.Requests += v
		}
		for k, v := range sh.errs {
			p.Errors[k] += v
			p.Requests += v
		}
		if sh.last.After(last) {
			last = sh.last
		}
	}
	// A run cut short by errExhausted lasts until its last answer.
	elapsed := min(d, last.Sub(measureFrom))
	if elapsed <= 0 {
		elapsed = time.Millisecond
	}
	p.Seconds = elapsed.Seconds()
	p.RPS = float64(p.Requests) / p.Seconds
	p.Latency = summarise(lat)
	if u0 := usage0.Load(); u0 != nil {
		p.setUsage(*u0, usage1)
	}
	return p
}

// sent is one open-loop request: when it was due, when its answer came, and
// the answer.
type sent struct {
	due    time.Time
	done   time.Time
	status int
	err    error
}

// runOpen sends requests at a fixed arrival rate for d, whatever the
// server's latency (an open loop), with at most maxInFlight outstanding.
// Each request's latency counts from the time it was due, not from when it
// was sent, so a stalled server or generator shows up in the latency instead
// of silently lowering the rate (coordinated omission). It returns the
// per-request results in schedule order, for the caller to join with mails.
func runOpen(ctx context.Context, name string, rate float64, d time.Duration, maxInFlight int, do request) (Phase, []sent) {
	n := int(rate * d.Seconds())
	results := make([]sent, n)
	interval := time.Duration(float64(time.Second) / rate)
	sem := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	late := 0
	usage0 := readUsage()
	start := time.Now()
	ctx, cancel := context.WithDeadline(ctx, start.Add(d+60*time.Second))
	defer cancel()

	for i := 0; i < n && ctx.Err() == nil; {
		now := time.Now()
		// Send everything that is due; then sleep until the next is.
		for ; i < n; i++ {
			due := start.Add(time.Duration(i) * interval)
			if due.After(now) {
				break
			}
			if now.Sub(due) > time.Millisecond {
				late++
			}
			results[i].due = due
			sem <- struct{}{}
			wg.Add(1)
			go func(r *sent, seq int) {
				defer wg.Done()
				defer func() { <-sem }()
				r.status, r.err = do(ctx, seq)
				r.done = time.Now()
			}(&results[i], i)
			now = time.Now()
		}
		if i < n {
			time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
		}
	}
	wg.Wait()
	usage1 := readUsage()

	p := Phase{Name: name, Mode: "open", Rate: rate, Seconds: d.Seconds(), Status: map[int]int{}, Errors: map[string]int{}, Late: late}
	lat := make([]time.Duration, 0, n)
	for _, r := range results {
		if r.due.IsZero() {
			continue // not sent: the run was cancelled
		}
		p.Requests++
		if r.err != nil {
			p.Errors[errKind(r.err)]++
			continue
		}
		p.Status[r.status]++
		lat = append(lat, r.done.Sub(r.due))
	}
	p.RPS = float64(p.Requests) / p.Seconds
	p.Latency = summarise(lat)
	p.setUsage(usage0, usage1)
	return p, results
}

// addresses makes the unique address of each request of a run.
type addresses struct{ prefix string }

func (a addresses) email(phase string, seq int) string {
	return a.prefix + "-" + phase + "-" + strconv.Itoa(seq) + "@example.com"
}

func registerBody(email string) []byte {
	b := make([]byte, 0, 96)
	b = append(b, `{"email":`...)
	b = strconv.AppendQuote(b, email)
	b = append(b, `,"first_name":"Ada","last_name":"Lovelace"}`...)
	return b
}

func verifyBody(email, code string) []byte {
	b := make([]byte, 0, 80)
	b = append(b, `{"email":`...)
	b = strconv.AppendQuote(b, email)
	b = append(b, `,"code":`...)
	b = strconv.AppendQuote(b, code)
	b = append(b, '}')
	return b
}

// usage is a snapshot of this process's CPU time (every thread: generator,
// servers, librdkafka's and the embedded broker's) and of the machine's.
type usage struct {
	at          time.Time
	process     time.Duration
	busy, total uint64 // /proc/stat jiffies, all CPUs; 0 when unreadable
}

func readUsage() usage {
	u := usage{at: time.Now()}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		u.process = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line)
		for i := 1; i < len(f); i++ {
			v, _ := strconv.ParseUint(f[i], 10, 64)
			u.total += v
			if i != 4 && i != 5 { // idle, iowait
				u.busy += v
			}
		}
	}
	return u
}

// setUsage fills the CPU figures of p from two snapshots around it.
func (p *Phase) setUsage(a, b usage) {
	if p.Requests > 0 {
		p.CPUPerRequest = float64((b.process - a.process).Microseconds()) / float64(p.Requests)
	}
	if wall := b.at.Sub(a.at); wall > 0 {
		p.ProcessCPUs = (b.process - a.process).Seconds() / wall.Seconds()
	}
	if b.total > a.total {
		p.MachineBusy = 100 * float64(b.busy-a.busy) / float64(b.total-a.total)
	}
}

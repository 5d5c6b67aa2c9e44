package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/kafka"
)

// The cost mode's verify workload (-workload verify): every verify request
// carries the right code for a pending registration, so each one publishes
// user_account_verified as a real one does. Before the rounds, loadgen
// registers -verify-n addresses per user API and per batch (one batch for
// the warm-up, one per round), reads their codes from user_account_created
// on the broker (it gave the user API its CODE_ENCRYPTION_KEYS, so it can
// open them), and writes the verify bodies to one file per wrk thread. The
// bare handler gets bodies of the same shape. A batch used up before the
// phase ends starts over; those repeats answer 400 and count as failed:
// raise -verify-n.

// wrkVerifyScript posts the bodies of the file args[1]-<thread>.txt, one
// per line, in order, starting over at the end.
const wrkVerifyScript = `
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function init(args)
  bodies = {}
  for l in io.lines(args[1] .. "-" .. tid .. ".txt") do bodies[#bodies + 1] = l end
  i = 0
end
function request()
  i = i + 1
  if i > #bodies then i = 1 end
  return wrk.format("POST", "/api/verify", {["Content-Type"] = "application/json"}, bodies[i])
end
` + wrkDone

// wrkThreads is wrk's -t: verify bodies are split into as many files.
const wrkThreads = 2

// verifyBatches prepares the verify bodies of every server and batch under
// dir and returns, per server label, the file prefix of each batch (index
// 0: warm-up, i: round i).
func verifyBatches(ctx context.Context, o options, dir string, keys *events.Keyring, servers []costServer, say func(string, ...any)) (map[string][]string, error) {
	batches := o.rounds + 1
	run := "v" + runID()
	email := func(label string, batch, i int) string {
		return fmt.Sprintf("%s-%s-%d-%d@example.com", run, label, batch, i)
	}
	client := newClient(o.clients, o.timeout)
	defer client.CloseIdleConnections()
	registered := 0
	for _, s := range servers {
		if s.label == "bare" {
			continue
		}
		say("verify: registering %d addresses at %s (%d batches of %d)", batches*o.verifyN, s.label, batches, o.verifyN)
		var next atomic.Int64
		total := batches * o.verifyN
		p := runClosed(ctx, "verify-pre", o.clients, 0, time.Hour, func(ctx context.Context, _ int) (int, error) {
			n := int(next.Add(1) - 1)
			if n >= total {
				return 0, errExhausted
			}
			return post(ctx, client, s.base+"/api/register", registerBody(email(s.label, n/o.verifyN, n%o.verifyN)))
		})
		if p.failed() > 0 {
			return nil, fmt.Errorf("verify: pre-registering at %s: status %s, errors %v", s.label, statusLine(p.Status), p.Errors)
		}
		registered += total
	}
	codes, err := readCodes(ctx, o.brokers, keys, run, registered)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, s := range servers {
		for b := range batches {
			prefix := filepath.Join(dir, fmt.Sprintf("verify-%s-%d", s.label, b))
			files := make([]*bufio.Writer, wrkThreads)
			var closers []io.Closer
			for t := range files {
				f, err := os.Create(fmt.Sprintf("%s-%d.txt", prefix, t))
				if err != nil {
					return nil, err
				}
				closers = append(closers, f)
				files[t] = bufio.NewWriter(f)
			}
			for i := range o.verifyN {
				code := "123456" // the bare handler checks nothing
				if s.label != "bare" {
					var ok bool
					if code, ok = codes[email(s.label, b, i)]; !ok {
						return nil, fmt.Errorf("verify: no code read for an address of %s", s.label)
					}
				}
				w := files[i%wrkThreads]
				_, _ = w.Write(verifyBody(email(s.label, b, i), code))
				_ = w.WriteByte('\n')
			}
			for t, w := range files {
				if err := w.Flush(); err != nil {
					return nil, err
				}
				if err := closers[t].Close(); err != nil {
					return nil, err
				}
			}
			out[s.label] = append(out[s.label], prefix)
		}
	}
	return out, nil
}

// readCodes consumes user_account_created from the start until it has
// opened n codes of addresses beginning with run.
func readCodes(ctx context.Context, brokers string, keys *events.Keyring, run string, n int) (map[string]string, error) {
	var mu sync.Mutex
	codes := make(map[string]string, n)
	done := make(chan struct{})
	h := func(_ context.Context, e events.Event) error {
		d, err := e.UserAccountCreated()
		if err != nil || !strings.HasPrefix(d.Email, run+"-") {
			return nil
		}
		code, err := keys.Open(d)
		if err != nil {
			return events.Permanent(err)
		}
		mu.Lock()
		defer mu.Unlock()
		codes[d.Email] = code
		if len(codes) == n {
			close(done)
		}
		return nil
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	w, err := kafka.NewWorker(kafka.Config{Brokers: brokers, Logger: quiet},
		kafka.WorkerConfig{GroupID: "loadgen-cost-" + run, CommitEvery: 10000, DedupeWindow: kafka.DedupeOff},
		[]string{events.TopicUserAccountCreated}, h)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- w.Run(wctx) }()
	select {
	case <-done:
	case err := <-errc:
		return nil, fmt.Errorf("verify: reading codes: %v", err)
	case <-time.After(5 * time.Minute):
		return nil, fmt.Errorf("verify: %d of %d codes read within 5 minutes", len(codes), n)
	}
	cancel()
	<-errc
	mu.Lock()
	defer mu.Unlock()
	return codes, nil
}

// goVerifyGenerator posts the bodies of the files prefix-<thread>.txt with
// loadgen's closed loop, each once; the phase ends early when they are used
// up.
func goVerifyGenerator(timeout time.Duration) generator {
	return func(ctx context.Context, base, prefix string, c int, d time.Duration) (load, error) {
		var bodies [][]byte
		for t := range wrkThreads {
			b, err := os.ReadFile(fmt.Sprintf("%s-%d.txt", prefix, t))
			if err != nil {
				return load{}, err
			}
			for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				bodies = append(bodies, []byte(l))
			}
		}
		client := newClient(c, timeout)
		defer client.CloseIdleConnections()
		var next atomic.Int64
		p := runClosed(ctx, "verify", c, 0, d, func(ctx context.Context, _ int) (int, error) {
			i := int(next.Add(1) - 1)
			if i >= len(bodies) {
				return 0, errExhausted
			}
			return post(ctx, client, base+"/api/verify", bodies[i])
		})
		return load{seconds: p.Seconds, requests: p.Requests, failed: p.failed(),
			p50: p.Latency.P50, p99: p.Latency.P99, max: p.Latency.Max}, nil
	}
}

// ceilingVerify has the fields of userapi.VerifyRequest.
type ceilingVerify struct {
	Email string `json:"email"`
	Code  string `json:"code"`
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/embedded"
)

// The cost mode measures what a register request costs the user API
// process, next to what it costs a bare handler, each in a process of its
// own, in the same run:
//
//	bare     `loadgen -serve bare`: net/http, decode the register JSON,
//	         answer 202 (the ceiling of the other modes, out of process)
//	broker   `loadgen -serve broker`: the embedded Kafka-protocol broker
//	userapi  `countersign userapi` (built from this module unless -countersign),
//	         rate limit off, memory store, idempotent acks=all producer on
//	         that broker: each 202 follows the broker's acknowledgement
//
// The generator is wrk (an independent client, when on PATH and -generator
// is auto or wrk) or loadgen's own closed loop (-generator go). Phases
// alternate round by round, the order rotating, so that bare and userapi
// see the same neighbours. CPU per request is the process's utime+stime
// (/proc/<pid>/stat, every thread: Go, librdkafka's, the kernel's work on
// its behalf) over the phase, divided by the requests answered in it.

// childEnv is set in the environment of the server processes loadgen
// starts; a test binary (TestMain) runs Main when it sees it.
const childEnv = "LOADGEN_CHILD"

// apiVariant is one user API binary with its extra environment: -api
// 'label=PATH KEY=value …' (repeatable) compares builds or settings side by
// side in the same rounds.
type apiVariant struct {
	label string
	path  string
	env   []string
}

type variants []apiVariant

func (v *variants) String() string { return fmt.Sprint(*v) }
func (v *variants) Set(s string) error {
	f := strings.Fields(s)
	if len(f) == 0 {
		return errors.New("want label=PATH [KEY=value …]")
	}
	label, path, ok := strings.Cut(f[0], "=")
	if !ok || label == "" {
		return errors.New("want label=PATH [KEY=value …] (PATH empty: built from this module)")
	}
	for _, kv := range f[1:] {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return fmt.Errorf("%q: want KEY=value", kv)
		}
	}
	*v = append(*v, apiVariant{label: label, path: path, env: f[1:]})
	return nil
}

// CostPhase is one measured phase of the cost mode.
type CostPhase struct {
	Round    int     `json:"round"`
	Target   string  `json:"target"` // "bare" or a variant's label
	Workload string  `json:"workload"`
	Seconds  float64 `json:"seconds"`
	Requests int     `json:"requests"`
	Failed   int     `json:"failed"`
	RPS      float64 `json:"requests_per_s"`
	P50      float64 `json:"p50_ms"`
	P99      float64 `json:"p99_ms"`
	Max      float64 `json:"max_ms"`
	// ServerCPU is the server process's CPU time per answered request, in
	// microseconds; BrokerCPU the broker process's.
	ServerCPU float64 `json:"server_cpu_us_per_request"`
	BrokerCPU float64 `json:"broker_cpu_us_per_request"`
	// MachineBusy is the non-idle share of the machine over the phase, the
	// generator and others' processes included.
	MachineBusy float64 `json:"machine_busy_percent"`
}

// CostSummary is median, min and max over the rounds.
type CostSummary struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

func summary(v []float64) CostSummary {
	if len(v) == 0 {
		return CostSummary{}
	}
	s := slices.Sorted(slices.Values(v))
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return CostSummary{Median: m, Min: s[0], Max: s[len(s)-1]}
}

// CostVariant sums up one user API variant over the rounds.
type CostVariant struct {
	Label string `json:"label"`
	// CPURatio is the variant's server CPU per request over bare's, per
	// round (the goal: at most 2.0); RPSRatio its requests/s over bare's
	// (the goal: at least 0.5).
	CPURatio  CostSummary `json:"cpu_ratio_to_bare"`
	RPSRatio  CostSummary `json:"rps_ratio_to_bare"`
	ServerCPU CostSummary `json:"server_cpu_us_per_request"`
	BrokerCPU CostSummary `json:"broker_cpu_us_per_request"`
	RPS       CostSummary `json:"requests_per_s"`
	P99       CostSummary `json:"p99_ms"`
	// VsFirst is the variant's server CPU per request over the first
	// variant's, per round (variants after the first only): the A/B figure
	// for a build or a setting.
	VsFirst *CostSummary `json:"cpu_ratio_to_first,omitempty"`
	// PeakRSS is the server process's peak resident memory (VmHWM) at the
	// end of the run, in MiB: a setting that trades memory for CPU shows
	// here.
	PeakRSS float64 `json:"peak_rss_mib,omitempty"`
}

// CostReport is what -mode cost prints with -json.
type CostReport struct {
	Machine   Machine       `json:"machine"`
	Generator string        `json:"generator"`
	Workload  string        `json:"workload"`
	Phases    []CostPhase   `json:"phases"`
	Bare      CostVariant   `json:"bare"`
	Variants  []CostVariant `json:"variants"`
}

// procCPU is a process's user+system CPU time, all threads, from
// /proc/<pid>/stat (in USER_HZ ticks, 100 per second on Linux).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields after it are
	// counted from its closing parenthesis.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("unexpected /proc/pid/stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc/pid/stat")
	}
	// f[0] is field 3 (state): utime is field 14, stime field 15.
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(ut+st) * (time.Second / 100), nil
}

// peakRSS is a process's peak resident set (VmHWM) in MiB, 0 when unknown.
func peakRSS(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// costServer is one server process of the cost mode and its base URL.
type costServer struct {
	label string
	base  string
	c     *child
}

// child is a server process started by the cost mode.
type child struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *tailBuffer
	addr  string
	done  chan struct{}
}

// tailBuffer keeps the last few KiB a child wrote to stderr, for errors.
type tailBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > 8<<10 {
		t.b = t.b[len(t.b)-8<<10:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// startChild runs path with args and env. With announce, the child prints
// "listening ADDR" as its first stdout line and that is its address.
func startChild(name, path string, args, env []string, announce bool) (*child, error) {
	c := &child{name: name, out: &tailBuffer{}, done: make(chan struct{})}
	c.cmd = exec.Command(path, args...)
	c.cmd.Env = append(os.Environ(), env...)
	c.cmd.Stderr = c.out
	// A child dies with loadgen, whatever way loadgen ends.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var err error
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	var stdout io.ReadCloser
	if announce {
		if stdout, err = c.cmd.StdoutPipe(); err != nil {
			return nil, err
		}
	} else {
		c.cmd.Stdout = c.out
	}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	if announce {
		line := make(chan string, 1)
		go func() {
			sc := bufio.NewScanner(stdout)
			if sc.Scan() {
				line <- sc.Text()
			}
			close(line)
			_, _ = io.Copy(io.Discard, stdout)
		}()
		select {
		case l := <-line:
			addr, ok := strings.CutPrefix(l, "listening ")
			if !ok {
				c.stop()
				return nil, fmt.Errorf("%s: unexpected first line %q; stderr:\n%s", name, l, c.out)
			}
			c.addr = addr
		case <-time.After(60 * time.Second):
			c.stop()
			return nil, fmt.Errorf("%s did not announce its address within 60s; stderr:\n%s", name, c.out)
		}
	}
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// stop asks the child to end (stdin closed and SIGTERM), then kills it
// after 15s.
func (c *child) stop() {
	_ = c.stdin.Close()
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// serveChild is `loadgen -serve bare|broker|userapi-no-broker`: it prints
// "listening ADDR" and serves until its stdin ends (loadgen closed it or
// died) or a signal. userapi-no-broker is the user API as `countersign
// userapi` wires it (package platform), whose publisher encodes each event
// and acknowledges it at once: the cost mode's -diagnose-no-broker, to
// tell what the user API costs without the producer and the broker.
func serveChild(ctx context.Context, what, brokers string, stdin io.Reader, stdout io.Writer) error {
	var addr string
	var stop func()
	switch what {
	case "bare":
		url, s, err := startCeiling()
		if err != nil {
			return err
		}
		addr, stop = strings.TrimPrefix(url, "http://"), s
	case "broker":
		b, err := embedded.Start("127.0.0.1:0")
		if err != nil {
			return err
		}
		addr, stop = b.Addr(), b.Close
	case "userapi-no-broker":
		quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
		st, err := startStack(ctx, brokers, nil, true, quiet)
		if err != nil {
			return err
		}
		addr, stop = strings.TrimPrefix(st.url, "http://"), st.close
	default:
		return fmt.Errorf("-serve %q: want bare, broker or userapi-no-broker", what)
	}
	defer stop()
	fmt.Fprintf(stdout, "listening %s\n", addr)
	eof := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, stdin); close(eof) }()
	select {
	case <-ctx.Done():
	case <-eof:
	}
	return nil
}

// buildCountersign builds ./cmd/countersign of this module into dir (with
// its default.pgo, as `go build` does).
func buildCountersign(ctx context.Context, dir string, progress func(string, ...any)) (string, error) {
	out := filepath.Join(dir, "countersign")
	progress("building countersign (go build -o %s github.com/countersign/countersign/cmd/countersign)", out)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/countersign/countersign/cmd/countersign")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build countersign: %v\n%s(or give a built binary with -api userapi=PATH)", err, b)
	}
	return out, nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// waitReady polls url until it answers 200.
func waitReady(ctx context.Context, c *child, url string) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if c.exited() {
			return fmt.Errorf("%s exited; stderr:\n%s", c.name, c.out)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s not ready at %s within 60s; stderr:\n%s", c.name, url, c.out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// wrkScript posts a register body with an address unique to the run,
// thread and request, and prints the summary on one line loadgen parses.
const wrkScript = `
-- threads counts in the main state; setup gives each thread its own
-- global tid (a local of the same name would shadow it in the thread).
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function init(args)
  prefix = args[1]
  n = 0
end
function request()
  n = n + 1
  local body = '{"email":"' .. prefix .. '-' .. tid .. '-' .. n .. '@example.com","first_name":"Ada","last_name":"Lovelace"}'
  return wrk.format("POST", "/api/register", {["Content-Type"] = "application/json"}, body)
end
` + wrkDone

// wrkDone prints wrk's summary on one line loadgen parses.
const wrkDone = `
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("LOADGEN %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
`

// load is what a generator reports of one phase.
type load struct {
	seconds       float64
	requests      int
	failed        int
	p50, p99, max float64 // ms
}

// generator drives one phase against base for d with c connections; tag
// makes its addresses unique.
type generator func(ctx context.Context, base, tag string, c int, d time.Duration) (load, error)

func wrkGenerator(wrk, script string) generator {
	return func(ctx context.Context, base, tag string, c int, d time.Duration) (load, error) {
		secs := max(1, int((d+time.Second-1)/time.Second))
		cmd := exec.CommandContext(ctx, wrk, "-t", "2", "-c", strconv.Itoa(c), "-d", strconv.Itoa(secs)+"s",
			"--timeout", "30s", "-s", script, base+"/api/register", "--", tag)
		out, err := cmd.Output()
		if err != nil {
			return load{}, fmt.Errorf("wrk: %v: %s", err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			rest, ok := strings.CutPrefix(line, "LOADGEN ")
			if !ok {
				continue
			}
			var v [10]float64
			f := strings.Fields(rest)
			if len(f) != len(v) {
				break
			}
			for i := range v {
				v[i], _ = strconv.ParseFloat(f[i], 64)
			}
			failed := int(v[2] + v[3] + v[4] + v[5] + v[6])
			return load{seconds: v[1] / 1e6, requests: int(v[0]), failed: failed,
				p50: v[7] / 1000, p99: v[8] / 1000, max: v[9] / 1000}, nil
		}
		return load{}, fmt.Errorf("wrk: no summary line in %q", out)
	}
}

func goGenerator(timeout time.Duration, workload string) generator {
	if workload == "verify" {
		return goVerifyGenerator(timeout)
	}
	return func(ctx context.Context, base, tag string, c int, d time.Duration) (load, error) {
		client := newClient(c, timeout)
		defer client.CloseIdleConnections()
		addrs := addresses{prefix: tag}
		p := runClosed(ctx, tag, c, 0, d, func(ctx context.Context, seq int) (int, error) {
			return post(ctx, client, base+"/api/register", registerBody(addrs.email("c", seq)))
		})
		return load{seconds: p.Seconds, requests: p.Requests, failed: p.failed(),
			p50: p.Latency.P50, p99: p.Latency.P99, max: p.Latency.Max}, nil
	}
}

// runCost is -mode cost.
func runCost(ctx context.Context, o options, progress io.Writer) (CostReport, error) {
	say := func(format string, args ...any) { fmt.Fprintf(progress, "loadgen: "+format+"\n", args...) }
	rep := CostReport{Workload: o.workload, Machine: Machine{
		CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), CPUModel: cpuModel(), GoVersion: runtime.Version(),
	}}
	self, err := os.Executable()
	if err != nil {
		return rep, err
	}
	dir, err := os.MkdirTemp("", "loadgen-cost-")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(dir)

	var gen generator
	rep.Generator = o.generator
	switch o.generator {
	case "auto", "wrk":
		wrk, err := exec.LookPath("wrk")
		if err != nil {
			if o.generator == "wrk" {
				return rep, errors.New("-generator wrk: wrk is not on PATH (Debian: apt-get install wrk)")
			}
			rep.Generator = "go"
			gen = goGenerator(o.timeout, o.workload)
			break
		}
		script := filepath.Join(dir, o.workload+".lua")
		text := wrkScript
		if o.workload == "verify" {
			text = wrkVerifyScript
		}
		if err := os.WriteFile(script, []byte(text), 0o600); err != nil {
			return rep, err
		}
		rep.Generator = "wrk (" + wrk + ", 2 threads)"
		gen = wrkGenerator(wrk, script)
	default:
		rep.Generator = "go (loadgen's closed loop, in the loadgen process)"
		gen = goGenerator(o.timeout, o.workload)
	}

	apis := o.apis
	if len(apis) == 0 {
		apis = variants{{label: "userapi"}}
	}
	var built string
	for i := range apis {
		if apis[i].path == "" {
			if built == "" {
				if built, err = buildCountersign(ctx, dir, say); err != nil {
					return rep, err
				}
			}
			apis[i].path = built
		}
	}

	var children []*child
	defer func() {
		for _, c := range slices.Backward(children) {
			c.stop()
		}
	}()
	var broker *child
	if o.brokers == "" {
		say("starting the broker process")
		if broker, err = startChild("broker", self, []string{"-serve", "broker"}, []string{childEnv + "=1"}, true); err != nil {
			return rep, err
		}
		children = append(children, broker)
		o.brokers = broker.addr
	}
	rep.Machine.Brokers = o.brokers
	bare, err := startChild("bare", self, []string{"-serve", "bare"}, []string{childEnv + "=1"}, true)
	if err != nil {
		return rep, err
	}
	children = append(children, bare)
	keys, err := events.GenerateKeyEntry()
	if err != nil {
		return rep, err
	}
	keyring, err := events.ParseKeyring(keys)
	if err != nil {
		return rep, err
	}
	servers := []costServer{{label: "bare", base: "http://" + bare.addr, c: bare}}
	for _, v := range apis {
		addr, err := freeAddr()
		if err != nil {
			return rep, err
		}
		env := []string{
			"KAFKA_BROKERS=" + o.brokers, "HTTP_ADDR=" + addr, "RATE_LIMIT_PER_IP=0",
			"PENDING_STORE=memory", "CODE_ENCRYPTION_KEYS=" + keys, "LOG_LEVEL=warn",
			// The JSON API alone, as docs/benchmarks.md measured it: with
			// the pages on, each code also writes its link to the store.
			"PAGES=false",
			// Not the default 127.0.0.1:9100: runs side by side would collide.
			"METRICS_ADDR=off",
		}
		for k, val := range o.kafkaProps {
			env = append(env, "KAFKA_"+strings.ToUpper(strings.ReplaceAll(k, ".", "_"))+"="+val)
		}
		env = append(env, v.env...)
		say("starting %s: %s %v", v.label, v.path, v.env)
		c, err := startChild(v.label, v.path, []string{"userapi"}, env, false)
		if err != nil {
			return rep, err
		}
		children = append(children, c)
		if err := waitReady(ctx, c, "http://"+addr+"/readyz"); err != nil {
			return rep, err
		}
		servers = append(servers, costServer{label: v.label, base: "http://" + addr, c: c})
	}
	if o.noBroker && o.workload == "verify" {
		return rep, errors.New("-diagnose-no-broker: register only (a verify workload needs the codes its events carry)")
	}
	if o.noBroker {
		say("starting no-broker: the user API in a loadgen process, events acknowledged without a producer")
		c, err := startChild("no-broker", self, []string{"-serve", "userapi-no-broker", "-brokers", o.brokers}, []string{childEnv + "=1"}, true)
		if err != nil {
			return rep, err
		}
		children = append(children, c)
		servers = append(servers, costServer{label: "no-broker", base: "http://" + c.addr, c: c})
	}
	// tag names a phase's addresses (register) or its file of bodies
	// (verify; batch 0 is the warm-up's).
	tag := func(s costServer, batch int) string {
		return fmt.Sprintf("r%s-%d-%s", runID(), batch, s.label)
	}
	if o.workload == "verify" {
		batches, err := verifyBatches(ctx, o, dir, keyring, servers, say)
		if err != nil {
			return rep, err
		}
		tag = func(s costServer, batch int) string { return batches[s.label][batch] }
	}
	rep.Machine.Target = fmt.Sprintf("%d server processes; generator %s", len(servers), rep.Generator)

	// Warm-up: connections, the producer's first batches, the JIT of the
	// broker's maps. Not measured.
	if o.warmup > 0 {
		for _, s := range servers {
			say("warm-up %s for %v", s.label, o.warmup)
			if _, err := gen(ctx, s.base, tag(s, 0), o.clients, o.warmup); err != nil {
				return rep, fmt.Errorf("warm-up %s: %w", s.label, err)
			}
		}
	}

	byLabel := map[string][]CostPhase{}
	for round := 1; round <= o.rounds && ctx.Err() == nil; round++ {
		// The order rotates so that no server is always measured first.
		order := slices.Clone(servers)
		k := (round - 1) % len(order)
		order = append(order[k:], order[:k]...)
		for _, s := range order {
			if s.c.exited() {
				return rep, fmt.Errorf("%s exited; stderr:\n%s", s.label, s.c.out)
			}
			say("round %d: %s, %d connections for %v", round, s.label, o.clients, o.duration)
			m0 := readUsage()
			s0, err1 := procCPU(s.c.pid())
			var b0 time.Duration
			if broker != nil {
				b0, _ = procCPU(broker.pid())
			}
			l, err := gen(ctx, s.base, tag(s, round), o.clients, o.duration)
			if err != nil {
				return rep, fmt.Errorf("round %d %s: %w", round, s.label, err)
			}
			s1, err2 := procCPU(s.c.pid())
			if err := errors.Join(err1, err2); err != nil {
				return rep, err
			}
			m1 := readUsage()
			p := CostPhase{Round: round, Target: s.label, Workload: o.workload, Seconds: l.seconds,
				Requests: l.requests, Failed: l.failed, P50: l.p50, P99: l.p99, Max: l.max}
			if l.seconds > 0 {
				p.RPS = float64(l.requests) / l.seconds
			}
			if ok := l.requests - l.failed; ok > 0 {
				p.ServerCPU = float64((s1 - s0).Microseconds()) / float64(ok)
				if broker != nil {
					b1, _ := procCPU(broker.pid())
					p.BrokerCPU = float64((b1 - b0).Microseconds()) / float64(ok)
				}
			}
			if m1.total > m0.total {
				p.MachineBusy = 100 * float64(m1.busy-m0.busy) / float64(m1.total-m0.total)
			}
			rep.Phases = append(rep.Phases, p)
			byLabel[s.label] = append(byLabel[s.label], p)
		}
	}
	sum := func(label string, bare []CostPhase) CostVariant {
		v := CostVariant{Label: label}
		var cpu, rr, srv, brk, rps, p99 []float64
		for i, p := range byLabel[label] {
			srv, brk = append(srv, p.ServerCPU), append(brk, p.BrokerCPU)
			rps, p99 = append(rps, p.RPS), append(p99, p.P99)
			// Ratios pair each round's phase with bare's of the same round.
			if i < len(bare) && bare[i].ServerCPU > 0 {
				cpu = append(cpu, p.ServerCPU/bare[i].ServerCPU)
			}
			if i < len(bare) && bare[i].RPS > 0 {
				rr = append(rr, p.RPS/bare[i].RPS)
			}
		}
		v.ServerCPU, v.BrokerCPU, v.RPS, v.P99 = summary(srv), summary(brk), summary(rps), summary(p99)
		v.CPURatio, v.RPSRatio = summary(cpu), summary(rr)
		return v
	}
	rep.Bare = sum("bare", nil)
	rep.Bare.PeakRSS = peakRSS(bare.pid())
	for i, s := range servers[1:] {
		v := sum(s.label, byLabel["bare"])
		v.PeakRSS = peakRSS(s.c.pid())
		if i > 0 {
			first := byLabel[servers[1].label]
			var r []float64
			for j, p := range byLabel[s.label] {
				if j < len(first) && first[j].ServerCPU > 0 {
					r = append(r, p.ServerCPU/first[j].ServerCPU)
				}
			}
			vs := summary(r)
			v.VsFirst = &vs
		}
		rep.Variants = append(rep.Variants, v)
	}
	return rep, ctx.Err()
}

func printCost(w io.Writer, rep CostReport) {
	m := rep.Machine
	fmt.Fprintf(w, "machine: %d CPUs (%s), %s\nbroker: %s; generator: %s; workload: %s\n\n",
		m.CPUs, m.CPUModel, m.GoVersion, m.Brokers, rep.Generator, rep.Workload)
	fmt.Fprintf(w, "%-5s %-12s %8s %8s %6s %7s %7s %7s %9s %9s %5s\n",
		"round", "server", "requests", "req/s", "failed", "p50 ms", "p99 ms", "max ms", "µs CPU", "broker µs", "busy")
	for _, p := range rep.Phases {
		fmt.Fprintf(w, "%-5d %-12s %8d %8.0f %6d %7.2f %7.2f %7.2f %9.1f %9.1f %4.0f%%\n",
			p.Round, p.Target, p.Requests, p.RPS, p.Failed, p.P50, p.P99, p.Max, p.ServerCPU, p.BrokerCPU, p.MachineBusy)
	}
	s := func(c CostSummary, f string) string {
		return fmt.Sprintf("median "+f+" (min "+f+", max "+f+")", c.Median, c.Min, c.Max)
	}
	fmt.Fprintf(w, "\nbare: req/s %s; µs CPU/request %s; p99 ms %s; peak RSS %.0f MiB\n", s(rep.Bare.RPS, "%.0f"), s(rep.Bare.ServerCPU, "%.1f"), s(rep.Bare.P99, "%.1f"), rep.Bare.PeakRSS)
	for _, v := range rep.Variants {
		fmt.Fprintf(w, "%s: req/s %s; µs CPU/request %s, broker %s; p99 ms %s; peak RSS %.0f MiB\n", v.Label,
			s(v.RPS, "%.0f"), s(v.ServerCPU, "%.1f"), s(v.BrokerCPU, "%.1f"), s(v.P99, "%.1f"), v.PeakRSS)
		fmt.Fprintf(w, "  %s/bare CPU per request: %s (goal ≤ 2.00); requests/s: %s (goal ≥ 0.50)\n", v.Label,
			s(v.CPURatio, "%.2f"), s(v.RPSRatio, "%.2f"))
		if v.VsFirst != nil {
			fmt.Fprintf(w, "  %s/%s CPU per request, round by round: %s\n", v.Label, rep.Variants[0].Label, s(*v.VsFirst, "%.3f"))
		}
	}
}

// costJSON prints rep as indented JSON.
func costJSON(w io.Writer, rep CostReport) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(rep)
}

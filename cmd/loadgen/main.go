// Command loadgen measures Countersign against the machine's own ceiling.
//
//	go run ./cmd/loadgen -mode all            # everything in-process
//	go run ./cmd/loadgen -mode register -target http://127.0.0.1:8080
//	go run ./cmd/loadgen -mode cost -rounds 5 -d 5s  # CPU per request, process by process
//
// Modes:
//
//	ceiling   a bare net/http handler that decodes the register JSON and
//	          answers 202: the most this generator can get from this machine
//	          for this request
//	register  POST /api/register, a unique address per request, -c clients in
//	          a closed loop for -d
//	mail      POST /api/register at a fixed -rate (open loop), each request
//	          followed to its mail at the SMTP sink: register→mail latency
//	verify    pre-register -verify-n addresses, read their codes from the
//	          mails, then POST /api/verify with the right codes, -c clients
//	all       ceiling, register, mail, verify, in one process, back to
//	          back; register and verify with their ratio to the ceiling
//	cost      the register goal of issue 18 (runs alone): `countersign
//	          userapi`, the bare handler and the embedded broker each in a
//	          process of its own, driven by wrk (or -generator go) in
//	          -rounds alternating rounds; CPU per request of each process
//	          from /proc/<pid>/stat, and userapi's against bare's, round by
//	          round, as medians with min and max. -api compares builds or
//	          settings side by side (see cost.go)
//
// Without -target, loadgen runs the platform in this process as `countersign
// dev` does: an embedded Kafka-protocol broker (or -brokers), the user API
// with the rate limit off (RATE_LIMIT_PER_IP=0), an idempotent acks=all
// producer, and, for mail and verify, the notifier sending over SMTP to a
// sink in this process. With -target it drives a running user API; mail and
// verify then need that deployment's notifier to send to loadgen's sink
// (-smtp-addr; set SMTP_HOST, SMTP_PORT and SMTP_TLS=none accordingly).
//
// The generator and the server share the machine: on 2 cores the generator
// takes a good part of the CPU. That is why every figure is also given as a
// ratio to the ceiling measured by the same generator in the same run.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/notifier"
)

func main() {
	os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	mode        string
	target      string
	brokers     string
	clients     int
	duration    time.Duration
	warmup      time.Duration
	rate        float64
	maxInFlight int
	mailTimeout time.Duration
	smtpAddr    string
	verifyN     int
	rounds      int
	commitEvery int
	noBroker    bool
	timeout     time.Duration
	jsonOut     bool
	cpuProfile  string
	logLevel    string
	kafkaProps  props
	serve       string
	generator   string
	apis        variants
	workload    string
}

// props collects -kafka name=value flags.
type props map[string]string

func (p props) String() string { return fmt.Sprint(map[string]string(p)) }
func (p props) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return errors.New("want name=value")
	}
	p[strings.TrimSpace(k)] = strings.TrimSpace(val)
	return nil
}

// Report is what -json prints.
type Report struct {
	Machine Machine `json:"machine"`
	Phases  []Phase `json:"phases"`
	// Ratios are register's requests/s over the ceiling's, one per round.
	Ratios []float64 `json:"ratios,omitempty"`
	// CPURatios are the ceiling's CPU time per request over register's,
	// one per round: the throughput ratio the two would have if both were
	// bound by this process's CPU alone. Neighbours on a shared machine
	// move it much less than they move requests/s.
	CPURatios []float64 `json:"cpu_ratios,omitempty"`
}

// Machine describes where the figures were measured.
type Machine struct {
	CPUs       int    `json:"cpus"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	CPUModel   string `json:"cpu_model"`
	GoVersion  string `json:"go_version"`
	Target     string `json:"target"`
	Brokers    string `json:"brokers"`
}

// Main runs loadgen and returns the exit code: 0 when every phase ran (slow
// or not: loadgen asserts no speed), 1 when a phase could not run or had no
// successful request, 2 for a usage error.
func Main(args []string, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.mode, "mode", "all", "register, mail, verify, ceiling or all, or a list such as ceiling,register")
	fs.StringVar(&o.target, "target", "", "base URL of a running user API (http://host:port); empty runs the platform in this process")
	fs.StringVar(&o.brokers, "brokers", "", "Kafka bootstrap servers for the in-process platform; empty starts an embedded broker")
	fs.IntVar(&o.clients, "c", 64, "concurrent clients (closed-loop modes)")
	fs.DurationVar(&o.duration, "d", 10*time.Second, "measured duration of each phase")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured warm-up before each closed-loop phase")
	fs.Float64Var(&o.rate, "rate", 1000, "arrival rate of the mail mode, registrations per second (open loop)")
	fs.IntVar(&o.maxInFlight, "max-inflight", 4096, "most outstanding requests in the open loop; beyond it requests wait, and their wait counts as latency")
	fs.DurationVar(&o.mailTimeout, "mail-timeout", 30*time.Second, "how long after the last registration to wait for mails; those not arrived by then are lost")
	fs.StringVar(&o.smtpAddr, "smtp-addr", "", "listen address of the SMTP sink (default a free loopback port; 127.0.0.1:2525 with -target)")
	fs.IntVar(&o.verifyN, "verify-n", 10000, "addresses to pre-register for the verify mode; it ends when their codes are used up (cost mode: per user API and per round)")
	fs.IntVar(&o.commitEvery, "notifier-commit-every", 0, "the in-process notifier's NOTIFIER_COMMIT_EVERY; 0 keeps its default")
	fs.BoolVar(&o.noBroker, "diagnose-no-broker", false, "diagnostic only: the in-process user API acknowledges events without the producer or the broker, to tell their share of a register request's cost (not the goal's acks=all); in the cost mode, an extra user API process that does so")
	fs.IntVar(&o.rounds, "rounds", 1, "how many times to alternate the ceiling and register phases")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "HTTP request timeout")
	fs.BoolVar(&o.jsonOut, "json", false, "print the results as JSON")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the measured phases (generator and in-process platform together) to this file")
	fs.StringVar(&o.logLevel, "log-level", "warn", "log level of the in-process platform (info logs a line per request)")
	o.kafkaProps = props{}
	fs.StringVar(&o.generator, "generator", "auto", "cost mode: wrk (an independent client), go (loadgen's own closed loop) or auto (wrk when on PATH)")
	fs.Var(&o.apis, "api", "cost mode: a user API to measure, 'label=PATH [KEY=value …]' (repeatable; PATH empty builds ./cmd/countersign); default one, built from this module")
	fs.StringVar(&o.workload, "workload", "register", "cost mode: register, or verify (right codes for -verify-n addresses per user API per round, registered beforehand)")
	fs.StringVar(&o.serve, "serve", "", "internal (cost mode's child processes): serve bare or broker until stdin ends")
	fs.Var(o.kafkaProps, "kafka", "librdkafka property for the in-process platform's clients, name=value (repeatable), as KAFKA_* variables set them: -kafka linger.ms=1")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "loadgen: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if o.serve != "" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := serveChild(ctx, o.serve, o.brokers, os.Stdin, stdout); err != nil {
			fmt.Fprintf(stderr, "loadgen -serve: %v\n", err)
			return 1
		}
		return 0
	}
	for _, m := range strings.Split(o.mode, ",") {
		switch m {
		case "register", "mail", "verify", "ceiling", "all":
		case "cost":
			if o.mode != "cost" {
				fmt.Fprintln(stderr, "loadgen: -mode cost runs alone")
				return 2
			}
		default:
			fmt.Fprintf(stderr, "loadgen: -mode %q: want register, mail, verify, ceiling, all or cost, or a comma-separated list\n", o.mode)
			return 2
		}
	}
	if o.workload != "register" && o.workload != "verify" {
		fmt.Fprintf(stderr, "loadgen: -workload %q: want register or verify\n", o.workload)
		return 2
	}
	switch o.generator {
	case "auto", "wrk", "go":
	default:
		fmt.Fprintf(stderr, "loadgen: -generator %q: want auto, wrk or go\n", o.generator)
		return 2
	}
	if o.noBroker && o.target != "" {
		fmt.Fprintln(stderr, "loadgen: -diagnose-no-broker applies to the in-process platform only, not -target")
		return 2
	}
	if o.clients < 1 || o.duration <= 0 || o.rate <= 0 || o.maxInFlight < 1 || o.verifyN < 1 || o.rounds < 1 {
		fmt.Fprintln(stderr, "loadgen: -c, -d, -rate, -max-inflight, -verify-n and -rounds must be positive")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.mode == "cost" {
		rep, err := runCost(ctx, o, &syncWriter{w: stderr})
		if err != nil {
			fmt.Fprintf(stderr, "loadgen: %v\n", err)
			return 1
		}
		if o.jsonOut {
			costJSON(stdout, rep)
		} else {
			printCost(stdout, rep)
		}
		for _, p := range rep.Phases {
			if p.Requests-p.Failed <= 0 {
				fmt.Fprintf(stderr, "loadgen: round %d %s had no successful request\n", p.Round, p.Target)
				return 1
			}
		}
		return 0
	}
	rep, err := run(ctx, o, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "loadgen: %v\n", err)
		return 1
	}
	if o.jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	} else {
		m := rep.Machine
		fmt.Fprintf(stdout, "machine: %d CPUs (%s), GOMAXPROCS %d, %s; generator on the same host\ntarget: %s; brokers: %s\n\n",
			m.CPUs, m.CPUModel, m.GOMAXPROCS, m.GoVersion, m.Target, m.Brokers)
		printPhases(stdout, rep.Phases)
		if len(rep.Ratios) > 1 {
			r := slices.Sorted(slices.Values(rep.Ratios))
			fmt.Fprintf(stdout, "register/ceiling requests/s over %d rounds: median %.2f, min %.2f, max %.2f\n", len(r), r[len(r)/2], r[0], r[len(r)-1])
		}
		if len(rep.CPURatios) > 1 {
			r := slices.Sorted(slices.Values(rep.CPURatios))
			fmt.Fprintf(stdout, "ceiling/register CPU per request over %d rounds: median %.2f, min %.2f, max %.2f\n", len(r), r[len(r)/2], r[0], r[len(r)-1])
		}
	}
	for _, p := range rep.Phases {
		if p.ok() == 0 {
			fmt.Fprintf(stderr, "loadgen: phase %s had no successful request\n", p.Name)
			return 1
		}
	}
	return 0
}

// syncWriter serialises writes: the logger (from the platform's goroutines)
// and the generator's own progress lines share one writer.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func run(ctx context.Context, o options, progress io.Writer) (Report, error) {
	progress = &syncWriter{w: progress}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return Report{}, fmt.Errorf("-log-level %q: want debug, info, warn or error", o.logLevel)
	}
	logger := slog.New(slog.NewTextHandler(progress, &slog.HandlerOptions{Level: level}))
	say := func(format string, args ...any) { fmt.Fprintf(progress, "loadgen: "+format+"\n", args...) }

	rep := Report{Machine: Machine{
		CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), CPUModel: cpuModel(),
		GoVersion: runtime.Version(), Target: o.target, Brokers: o.brokers,
	}}
	modes := strings.Split(o.mode, ",")
	want := func(m string) bool { return slices.Contains(modes, m) || slices.Contains(modes, "all") }
	client := newClient(max(o.clients, 64), o.timeout)
	defer client.CloseIdleConnections()
	addrs := addresses{prefix: "lg" + events.NormalizeEmail(runID())}

	// The platform, in this process unless -target.
	var st *stack
	base := strings.TrimRight(o.target, "/")
	if base == "" && (want("register") || want("mail") || want("verify")) {
		say("starting the platform in this process")
		var err error
		if st, err = startStack(ctx, o.brokers, o.kafkaProps, o.noBroker, logger); err != nil {
			return rep, fmt.Errorf("start platform: %w", err)
		}
		defer st.close()
		base = st.url
		rep.Machine.Target = "in-process user API at " + st.url
		if o.brokers == "" {
			rep.Machine.Brokers = "embedded (in-process kfake) at " + st.cfg.Kafka.Brokers
		}
	}
	var sk *sink
	if want("mail") || want("verify") {
		addr := o.smtpAddr
		if addr == "" {
			addr = "127.0.0.1:0"
			if st == nil {
				addr = "127.0.0.1:2525"
			}
		}
		var err error
		if sk, err = startSink(addr); err != nil {
			return rep, fmt.Errorf("smtp sink: %w", err)
		}
		defer sk.close()
		if st == nil {
			say("SMTP sink on %s: the target's notifier must send there (SMTP_HOST, SMTP_PORT, SMTP_TLS=none)", sk.ln.Addr())
		}
	}
	// The in-process notifier starts only after the register phase, at the
	// end of the topics: it neither competes with that phase for the CPU
	// nor has its mails to send before the mail phase's.
	notifierUp := false
	startNotifier := func() error {
		if st == nil || notifierUp {
			return nil
		}
		notifierUp = true
		say("starting the notifier")
		if err := st.startNotifier(ctx, notifier.Config{WorkerConfig: kafka.WorkerConfig{GroupID: "loadgen-" + addrs.prefix, CommitEvery: o.commitEvery}}, sk); err != nil {
			return fmt.Errorf("start notifier: %w", err)
		}
		// Joining the consumer group and dialling SMTP take seconds; one
		// registration followed to its mail puts that behind us.
		probe := addrs.email("probe", 0)
		if status, err := post(ctx, client, base+"/api/register", registerBody(probe)); err != nil || status != 202 {
			return fmt.Errorf("notifier probe: register answered %d, %v", status, err)
		}
		if sk.waitFor([]string{probe}, time.Now().Add(60*time.Second)) != 1 {
			return errors.New("notifier probe: no mail within 60s")
		}
		return nil
	}

	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return rep, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return rep, err
		}
		defer pprof.StopCPUProfile()
	}

	register := func(url, phase string) request {
		return func(ctx context.Context, seq int) (int, error) {
			return post(ctx, client, url, registerBody(addrs.email(phase, seq)))
		}
	}
	// Ceiling and register alternate, round after round, so that both see
	// the same neighbours on a shared machine; each round's ratio compares
	// two phases seconds apart.
	// lastCeilingRPS is the latest ceiling measured, which verify's ratio
	// uses too: a verify request is a JSON POST of the same kind, a little
	// smaller.
	var lastCeilingRPS float64
	for round := 1; round <= o.rounds && ctx.Err() == nil; round++ {
		name := func(phase string) string {
			if o.rounds == 1 {
				return phase
			}
			return fmt.Sprintf("%s#%d", phase, round)
		}
		var ceilingRPS, ceilingCPU float64
		if want("ceiling") {
			url, stopCeiling, err := startCeiling()
			if err != nil {
				return rep, err
			}
			say("%s: %d clients for %v", name("ceiling"), o.clients, o.duration)
			p := runClosed(ctx, name("ceiling"), o.clients, o.warmup, o.duration, register(url+"/api/register", name("ceiling")))
			stopCeiling()
			p.Target = "bare net/http handler (in-process)"
			rep.Phases = append(rep.Phases, p)
			ceilingRPS, ceilingCPU = p.RPS, p.CPUPerRequest
			lastCeilingRPS = p.RPS
		}
		if want("register") && ctx.Err() == nil {
			say("%s: %d clients for %v", name("register"), o.clients, o.duration)
			p := runClosed(ctx, name("register"), o.clients, o.warmup, o.duration, register(base+"/api/register", name("register")))
			p.Target = base
			if ceilingRPS > 0 {
				p.Ratio = p.RPS / ceilingRPS
				rep.Ratios = append(rep.Ratios, p.Ratio)
			}
			if ceilingCPU > 0 && p.CPUPerRequest > 0 {
				rep.CPURatios = append(rep.CPURatios, ceilingCPU/p.CPUPerRequest)
			}
			rep.Phases = append(rep.Phases, p)
		}
	}
	if want("mail") && ctx.Err() == nil {
		if err := startNotifier(); err != nil {
			return rep, err
		}
		say("mail: %g registrations/s for %v, each followed to its mail", o.rate, o.duration)
		rep.Phases = append(rep.Phases, mailPhase(ctx, o, base, client, addrs, sk))
	}
	if want("verify") && ctx.Err() == nil {
		if err := startNotifier(); err != nil {
			return rep, err
		}
		p, err := verifyPhase(ctx, o, base, client, addrs, sk, say)
		if err != nil {
			return rep, err
		}
		if lastCeilingRPS > 0 {
			p.Ratio = p.RPS / lastCeilingRPS
		}
		rep.Phases = append(rep.Phases, p)
	}
	return rep, ctx.Err()
}

// mailPhase registers at a fixed rate and joins every accepted registration
// with the arrival of its mail at the sink.
func mailPhase(ctx context.Context, o options, base string, client *http.Client, addrs addresses, sk *sink) Phase {
	url := base + "/api/register"
	p, results := runOpen(ctx, "mail", o.rate, o.duration, o.maxInFlight, func(ctx context.Context, seq int) (int, error) {
		return post(ctx, client, url, registerBody(addrs.email("mail", seq)))
	})
	p.Target = base
	var accepted []string
	var due []time.Time
	for i, r := range results {
		if r.err == nil && r.status == 202 {
			accepted = append(accepted, addrs.email("mail", i))
			due = append(due, r.due)
		}
	}
	arrived := sk.waitFor(accepted, time.Now().Add(o.mailTimeout))
	lat := make([]time.Duration, 0, arrived)
	for i, a := range accepted {
		if t, ok := sk.arrival(a); ok {
			lat = append(lat, t.Sub(due[i]))
		}
	}
	l := summarise(lat)
	p.MailLatency = &l
	p.MailsWanted = len(accepted)
	p.MailsLost = len(accepted) - len(lat)
	return p
}

// verifyPhase pre-registers verifyN addresses, waits for their codes, and
// verifies them with -c clients until the codes are used up or -d passed.
func verifyPhase(ctx context.Context, o options, base string, client *http.Client, addrs addresses, sk *sink, say func(string, ...any)) (Phase, error) {
	say("verify: pre-registering %d addresses", o.verifyN)
	// Earlier phases may have left mails in flight; let them drain so the
	// codes below arrive at the notifier's full speed.
	sk.waitQuiet(time.Second, time.Now().Add(o.mailTimeout))
	var next atomic.Int64
	pre := runClosed(ctx, "verify-pre", o.clients, 0, time.Hour, func(ctx context.Context, _ int) (int, error) {
		i := int(next.Add(1) - 1)
		if i >= o.verifyN {
			return 0, errExhausted
		}
		return post(ctx, client, base+"/api/register", registerBody(addrs.email("verify", i)))
	})
	if pre.ok() == 0 {
		return pre, fmt.Errorf("verify: no registration accepted (%s %v)", statusLine(pre.Status), pre.Errors)
	}
	all := make([]string, o.verifyN)
	for i := range all {
		all[i] = addrs.email("verify", i)
	}
	got := sk.waitFor(all, time.Now().Add(o.mailTimeout+time.Duration(o.verifyN)*time.Millisecond))
	type pair struct{ email, code string }
	var work []pair
	for _, a := range all {
		if c := sk.code(a); c != "" {
			work = append(work, pair{a, c})
		}
	}
	say("verify: %d of %d mails arrived, %d codes read; verifying with %d clients", got, o.verifyN, len(work), o.clients)
	if len(work) == 0 {
		return pre, errors.New("verify: no code arrived at the SMTP sink")
	}
	next.Store(0)
	p := runClosed(ctx, "verify", o.clients, 0, o.duration, func(ctx context.Context, _ int) (int, error) {
		i := int(next.Add(1) - 1)
		if i >= len(work) {
			return 0, errExhausted
		}
		return post(ctx, client, base+"/api/verify", verifyBody(work[i].email, work[i].code))
	})
	p.Target = base
	return p, nil
}

// runID distinguishes this run's addresses and consumer group from those of
// earlier runs against the same deployment.
func runID() string {
	return fmt.Sprintf("%x", time.Now().UnixNano()&0xffffffffff)
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

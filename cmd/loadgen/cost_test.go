package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// TestMain lets the test binary stand in for loadgen in the cost mode's
// child processes (`loadgen -serve bare|broker`), which it starts from
// os.Executable with LOADGEN_CHILD set.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
	}
	code := m.Run()
	if built.path != "" {
		_ = os.RemoveAll(filepath.Dir(built.path))
	}
	os.Exit(code)
}

// TestCostModeSmoke runs -mode cost briefly: `countersign userapi` (built
// here), the bare handler and the broker each in a process of its own, two
// rounds with loadgen's own generator. It checks that every phase ran and
// every request was answered 202, and that the report pairs the rounds;
// never how fast.
func TestCostModeSmoke(t *testing.T) {
	for _, workload := range []string{"register", "verify"} {
		t.Run(workload, func(t *testing.T) { testCostMode(t, workload) })
	}
}

var built struct {
	once sync.Once
	path string
	err  error
	out  []byte
}

// countersignBinary builds cmd/countersign once per test run.
func countersignBinary(t *testing.T) string {
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "loadgen-test-")
		if err != nil {
			built.err = err
			return
		}
		built.path = filepath.Join(dir, "countersign")
		built.out, built.err = exec.Command("go", "build", "-o", built.path, "github.com/countersign/countersign/cmd/countersign").CombinedOutput()
	})
	if built.err != nil {
		t.Fatalf("go build countersign: %v\n%s", built.err, built.out)
	}
	return built.path
}

func testCostMode(t *testing.T, workload string) {
	bin := countersignBinary(t)
	args := []string{"-mode", "cost", "-json", "-generator", "go", "-api", "userapi=" + bin, "-workload", workload,
		"-rounds", "2", "-c", "4", "-d", "300ms", "-warmup", "200ms", "-verify-n", "50"}
	if b := os.Getenv("KAFKA_TEST_BROKERS"); b != "" {
		args = append(args, "-brokers", b)
	}
	apis := []string{"userapi"}
	if workload == "register" {
		// And the user API acknowledging events without a producer.
		args = append(args, "-diagnose-no-broker")
		apis = append(apis, "no-broker")
	}
	var stdout, stderr bytes.Buffer
	if code := Main(args, &stdout, &stderr); code != 0 {
		t.Fatalf("loadgen exited %d\nstderr:\n%s", code, stderr.String())
	}
	var rep CostReport
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("-json output: %v\n%s", err, stdout.String())
	}
	seen := map[string]int{}
	for _, p := range rep.Phases {
		seen[p.Target]++
		if p.Workload != workload || p.Requests == 0 || p.Failed != 0 || p.P99 < p.P50 {
			t.Errorf("round %d %s: %d requests, %d failed, p50 %v p99 %v", p.Round, p.Target, p.Requests, p.Failed, p.P50, p.P99)
		}
		if p.ServerCPU < 0 || p.BrokerCPU < 0 {
			t.Errorf("round %d %s: negative CPU %v, %v", p.Round, p.Target, p.ServerCPU, p.BrokerCPU)
		}
	}
	for _, s := range append([]string{"bare"}, apis...) {
		if seen[s] != 2 {
			t.Errorf("phases per server = %v, want 2 rounds of bare and %v", seen, apis)
		}
	}
	if len(rep.Variants) != len(apis) {
		t.Fatalf("variants = %+v, want %v", rep.Variants, apis)
	}
	for i, v := range rep.Variants {
		if v.Label != apis[i] || v.RPSRatio.Median <= 0 || (i > 0) != (v.VsFirst != nil) {
			t.Errorf("variant %+v, want %s with its ratio to bare (and to the first after it)", v, apis[i])
		}
	}
}

func TestVariantFlag(t *testing.T) {
	var v variants
	if err := v.Set("pgo=/bin/cs GOGC=200 KAFKA_LINGER_MS=5"); err != nil {
		t.Fatal(err)
	}
	if err := v.Set("built="); err != nil {
		t.Fatal(err)
	}
	if len(v) != 2 || v[0].label != "pgo" || v[0].path != "/bin/cs" || len(v[0].env) != 2 || v[1].path != "" {
		t.Errorf("variants = %+v", v)
	}
	for _, bad := range []string{"", "nolabel", "=x", "a=b NOTKV"} {
		if err := v.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
}

func TestProcCPU(t *testing.T) {
	if _, err := procCPU(os.Getpid()); err != nil {
		t.Fatal(err)
	}
}

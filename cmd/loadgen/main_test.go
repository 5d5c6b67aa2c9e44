package main

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
	"time"
)

// TestAllModesSmoke runs every mode briefly against the in-process platform,
// so the load generator keeps working. It asserts that each phase ran and
// every request and mail came through, never how fast.
func TestAllModesSmoke(t *testing.T) {
	args := []string{"-mode", "all", "-json", "-c", "8", "-d", "300ms", "-warmup", "100ms",
		"-rate", "100", "-verify-n", "20", "-mail-timeout", "60s"}
	if b := os.Getenv("KAFKA_TEST_BROKERS"); b != "" {
		args = append(args, "-brokers", b)
	}
	var stdout, stderr bytes.Buffer
	if code := Main(args, &stdout, &stderr); code != 0 {
		t.Fatalf("loadgen exited %d\nstderr:\n%s", code, stderr.String())
	}
	var rep Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("-json output: %v\n%s", err, stdout.String())
	}
	want := map[string]bool{"ceiling": false, "register": false, "mail": false, "verify": false}
	for _, p := range rep.Phases {
		want[p.Name] = true
		if p.ok() == 0 || p.failed() != 0 {
			t.Errorf("phase %s: %d ok, %d failed (status %v, errors %v)", p.Name, p.ok(), p.failed(), p.Status, p.Errors)
		}
		if p.Latency.Count == 0 || p.Latency.P99 < p.Latency.P50 || p.Latency.Max < p.Latency.P99 {
			t.Errorf("phase %s: latency %+v", p.Name, p.Latency)
		}
		if p.Name == "mail" && (p.MailLatency == nil || p.MailsLost != 0 || p.MailLatency.Count != p.MailsWanted) {
			t.Errorf("mail phase: %d of %d mails, %d lost", p.MailLatency.Count, p.MailsWanted, p.MailsLost)
		}
		if (p.Name == "register" || p.Name == "verify") && p.Ratio <= 0 {
			t.Errorf("%s phase has no ratio to the ceiling", p.Name)
		}
	}
	for name, seen := range want {
		if !seen {
			t.Errorf("no %s phase in %s", name, stdout.String())
		}
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{"-mode", "nope"}, {"-c", "0"}, {"extra"}} {
		var out bytes.Buffer
		if code := Main(args, &out, &out); code != 2 {
			t.Errorf("Main(%q) = %d, want 2", args, code)
		}
	}
	var out bytes.Buffer
	if code := Main([]string{"-h"}, &out, &out); code != 0 || !bytes.Contains(out.Bytes(), []byte("-mode")) {
		t.Errorf("-h: exit %d, output %q", code, out.String())
	}
}

func TestPercentile(t *testing.T) {
	l := summarise(durations(1, 100))
	if l.P50 != 50 || l.P90 != 90 || l.P99 != 99 || l.Max != 100 || l.Count != 100 {
		t.Errorf("summarise(1..100 ms) = %+v", l)
	}
	if one := summarise(durations(7, 7)); one.P50 != 7 || one.P99 != 7 {
		t.Errorf("one sample: %+v", one)
	}
}

// durations returns from..to milliseconds, in descending order.
func durations(from, to int) []time.Duration {
	var d []time.Duration
	for i := to; i >= from; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	return d
}

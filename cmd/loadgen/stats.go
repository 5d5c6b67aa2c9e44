package main

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"
)

// Latency summarises a set of durations. Percentiles are nearest-rank on the
// sorted sample: exact, and cheap at the volumes a 10 s run produces.
type Latency struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
	Mean  float64 `json:"mean_ms"`
}

func summarise(d []time.Duration) Latency {
	if len(d) == 0 {
		return Latency{}
	}
	slices.Sort(d)
	var sum time.Duration
	for _, v := range d {
		sum += v
	}
	return Latency{
		Count: len(d),
		P50:   ms(percentile(d, 50)),
		P90:   ms(percentile(d, 90)),
		P99:   ms(percentile(d, 99)),
		Max:   ms(d[len(d)-1]),
		Mean:  ms(sum / time.Duration(len(d))),
	}
}

// percentile returns the nearest-rank p-th percentile of sorted.
func percentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(p/100*float64(len(sorted))+0.999999) - 1
	rank = max(0, min(rank, len(sorted)-1))
	return sorted[rank]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Phase is the result of one measured phase.
type Phase struct {
	Name string `json:"name"`
	// Target is what was driven: a URL, or "in-process".
	Target   string  `json:"target"`
	Mode     string  `json:"load"` // "closed" (fixed concurrency) or "open" (fixed arrival rate)
	Clients  int     `json:"clients,omitempty"`
	Rate     float64 `json:"rate_per_s,omitempty"`
	Seconds  float64 `json:"seconds"`
	Requests int     `json:"requests"`
	RPS      float64 `json:"requests_per_s"`
	// Status counts answers by HTTP status; Errors counts requests that got
	// no answer (connection or timeout errors), by message.
	Status  map[int]int    `json:"status"`
	Errors  map[string]int `json:"errors,omitempty"`
	Latency Latency        `json:"latency"`
	// Ratio is RPS / the ceiling's RPS of the same run, when there was one.
	Ratio float64 `json:"ratio_to_ceiling,omitempty"`
	// CPUPerRequest is this process's CPU time (all threads: generator and
	// in-process servers alike) per request, in microseconds; ProcessCPUs
	// how many CPUs it kept busy on average; MachineBusy the share of the
	// machine's CPU time that was not idle, others' processes included. A
	// MachineBusy well under 100% with a low ProcessCPUs means the phase
	// was bound by waiting, not by CPU.
	CPUPerRequest float64 `json:"cpu_us_per_request,omitempty"`
	ProcessCPUs   float64 `json:"process_cpus,omitempty"`
	MachineBusy   float64 `json:"machine_busy_percent,omitempty"`

	// Mail phases: register→mail latency, and mails that did not arrive
	// within the deadline after the last request.
	MailLatency *Latency `json:"mail_latency,omitempty"`
	MailsWanted int      `json:"mails_wanted,omitempty"`
	MailsLost   int      `json:"mails_lost,omitempty"`
	// Late counts open-loop requests sent more than 1 ms after their
	// scheduled time: the generator could not keep the rate.
	Late int `json:"late,omitempty"`
}

func (p Phase) ok() int {
	n := 0
	for s, c := range p.Status {
		if s >= 200 && s < 300 {
			n += c
		}
	}
	return n
}

func (p Phase) failed() int {
	n := 0
	for s, c := range p.Status {
		if s < 200 || s >= 300 {
			n += c
		}
	}
	for _, c := range p.Errors {
		n += c
	}
	return n
}

func printPhases(w io.Writer, phases []Phase) {
	fmt.Fprintf(w, "%-11s %-6s %6s %7s %8s %8s %6s %7s %7s %7s %7s %6s %7s %5s %5s\n",
		"phase", "load", "c", "seconds", "requests", "req/s", "failed", "p50 ms", "p90 ms", "p99 ms", "max ms", "ratio", "µs CPU", "CPUs", "busy")
	for _, p := range phases {
		c := fmt.Sprint(p.Clients)
		if p.Mode == "open" {
			c = fmt.Sprintf("%g/s", p.Rate)
		}
		ratio := "-"
		if p.Ratio > 0 {
			ratio = fmt.Sprintf("%.2f", p.Ratio)
		}
		fmt.Fprintf(w, "%-11s %-6s %6s %7.1f %8d %8.0f %6d %7.2f %7.2f %7.2f %7.2f %6s %7.1f %5.2f %4.0f%%\n",
			p.Name, p.Mode, c, p.Seconds, p.Requests, p.RPS, p.failed(),
			p.Latency.P50, p.Latency.P90, p.Latency.P99, p.Latency.Max, ratio,
			p.CPUPerRequest, p.ProcessCPUs, p.MachineBusy)
	}
	for _, p := range phases {
		if p.failed() > 0 {
			fmt.Fprintf(w, "%s: status %s", p.Name, statusLine(p.Status))
			if len(p.Errors) > 0 {
				fmt.Fprintf(w, "; errors %v", p.Errors)
			}
			fmt.Fprintln(w)
		}
		if p.MailLatency != nil {
			m := p.MailLatency
			fmt.Fprintf(w, "%s: register→mail p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms; %d of %d mails arrived, %d lost\n",
				p.Name, m.P50, m.P90, m.P99, m.Max, m.Count, p.MailsWanted, p.MailsLost)
		}
		if p.Late > 0 {
			fmt.Fprintf(w, "%s: %d requests left more than 1 ms after their scheduled time (latency counts from the schedule)\n", p.Name, p.Late)
		}
	}
}

func statusLine(m map[int]int) string {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%d×%d", k, m[k])
	}
	return strings.Join(parts, " ")
}

// Package chaos holds the chaos suite: tests that run the real processes
// (the countersign binary's userapi and notifier, Apache Kafka from
// scripts/kafka-local, redis-server, an SMTP sink) under a register load,
// break one dependency at a time, and count what became of every
// acknowledged registration.
//
// It runs only when CHAOS is set ("short" for CI, "full" for the figures in
// docs/reliability.md); scripts/chaos sets it and prints the table:
//
//	scripts/chaos           # full: minutes per scenario
//	scripts/chaos --short   # what CI runs
//
// Without CHAOS the test skips and says so: `go test ./...` stays fast.
package chaos

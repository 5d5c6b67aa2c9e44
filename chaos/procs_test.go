package chaos

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const repoRoot = ".."

// buildBinary builds the countersign binary without the race detector: the
// suite measures recovery, and the detector slows every process down.
func buildBinary(dir string) (string, error) {
	if bin := os.Getenv("CHAOS_BIN"); bin != "" {
		return bin, nil
	}
	bin := filepath.Join(dir, "countersign")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/countersign")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
}

// proc is a process of the suite, its output in a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func startProc(t testing.TB, dir, name string, env []string, bin string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("%s's last output:\n%s", name, p.tail())
		}
	})
	return p
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	if p.running() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

// stop sends SIGTERM (a graceful shutdown: finish, commit, leave) and waits;
// SIGKILL after timeout.
func (p *proc) stop(timeout time.Duration) {
	if p.running() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.kill()
	}
}

func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// waitHTTP polls url until it answers 200.
func waitHTTP(t testing.TB, p *proc, url string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p != nil && !p.running() {
			t.Fatalf("%s exited: %v\n%s", p.name, p.err, p.tail())
		}
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	name := "?"
	if p != nil {
		name = p.name
	}
	t.Fatalf("%s: %s not ready within %s", name, url, timeout)
}

// freePort returns a loopback port nothing listens on; with n > 1, a run
// of n free ports starting there (Kafka takes the next one for its
// controller).
func freePort(t testing.TB, n int) int {
	t.Helper()
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		ok := true
		for i := 1; i < n; i++ {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+i))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return p
		}
	}
	t.Fatal("no free ports")
	return 0
}

// broker is an Apache Kafka started by scripts/kafka-local.
type broker struct {
	port int
}

func (b *broker) addr() string { return "127.0.0.1:" + strconv.Itoa(b.port) }

func kafkaLocal(args ...string) error {
	cmd := exec.Command(filepath.Join(repoRoot, "scripts", "kafka-local"), args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("kafka-local %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

func startBroker(t testing.TB) *broker {
	t.Helper()
	b := &broker{port: freePort(t, 2)}
	if err := kafkaLocal("start", "--port", strconv.Itoa(b.port)); err != nil {
		t.Fatalf("%v\n(scripts/kafka-local needs Java 17+ and Maven; .ci/run installs what is missing)", err)
	}
	t.Cleanup(func() { _ = kafkaLocal("stop", "--port", strconv.Itoa(b.port)) })
	return b
}

// sigkill kills the broker's JVM without warning.
func (b *broker) sigkill(t testing.TB) {
	t.Helper()
	home := os.Getenv("KAFKA_LOCAL_HOME")
	if home == "" {
		home = filepath.Join(os.Getenv("HOME"), ".cache", "countersign", "kafka-local")
	}
	raw, err := os.ReadFile(filepath.Join(home, "run", strconv.Itoa(b.port), "kafka.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for syscall.Kill(pid, 0) == nil {
		time.Sleep(50 * time.Millisecond)
	}
}

// restart starts the broker again on the data it left.
func (b *broker) restart(t testing.TB) {
	t.Helper()
	if err := kafkaLocal("start", "--port", strconv.Itoa(b.port), "--keep-data"); err != nil {
		t.Fatal(err)
	}
}

// redisServer is a redis-server with an append-only file, so a restart
// keeps the pending registrations.
type redisServer struct {
	dir  string
	port int
	p    *proc
}

func startRedis(t testing.TB, dir string) *redisServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server not found: install Debian's redis-server package (.ci/run does)")
	}
	r := &redisServer{dir: filepath.Join(dir, "redis"), port: freePort(t, 1)}
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	r.start(t)
	return r
}

func (r *redisServer) url() string { return "redis://127.0.0.1:" + strconv.Itoa(r.port) + "/0" }

func (r *redisServer) start(t testing.TB) {
	t.Helper()
	r.p = startProc(t, r.dir, "redis", nil, "redis-server",
		"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--dir", r.dir,
		"--appendonly", "yes", "--appendfsync", "everysec", "--save", "")
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(r.port)})
	defer c.Close()
	deadline := time.Now().Add(30 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) || !r.p.running() {
			t.Fatalf("redis-server did not answer: %s", r.p.tail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

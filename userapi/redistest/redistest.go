// Package redistest starts a real redis-server for tests: the Redis store is
// tested against the engine it runs on in production, not a fake.
//
// redis-server must be on PATH (Debian's package: apt-get install
// redis-server; .ci/run installs it when missing). Without it Start fails
// the test with that message: a Redis test never passes by skipping.
package redistest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// startTimeout bounds the wait for a new server to answer PING.
const startTimeout = 15 * time.Second

// Server is one redis-server process on a free loopback port, without
// persistence (--save "" --appendonly no): it starts empty and leaves
// nothing on disk.
type Server struct {
	addr     string
	password string
	cmd      *exec.Cmd
	done     chan struct{}
	out      *lockedBuffer

	mu      sync.Mutex
	stopped bool
}

// Option changes how Start runs the server.
type Option func(*Server)

// WithPassword makes the server require password (requirepass); URL then
// carries it.
func WithPassword(password string) Option { return func(s *Server) { s.password = password } }

// Start starts a redis-server for the test and stops it when the test ends.
// It fails the test when redis-server is not installed or does not start.
func Start(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatalf("redis-server not found on PATH: apt-get install redis-server (.ci/run installs it)")
	}
	// A port picked here can be taken by someone else before redis-server
	// binds it; a few tries make that race harmless.
	var lastErr error
	for range 3 {
		s, err := start(bin, opts)
		if err == nil {
			tb.Cleanup(s.Stop)
			return s
		}
		lastErr = err
	}
	tb.Fatalf("start redis-server: %v", lastErr)
	return nil
}

func start(bin string, opts []Option) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &Server{
		addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		done: make(chan struct{}),
		out:  &lockedBuffer{},
	}
	for _, o := range opts {
		o(s)
	}
	args := []string{
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--protected-mode", "yes",
		"--loglevel", "warning",
		"--logfile", "", // stdout, captured for failure messages
	}
	if s.password != "" {
		args = append(args, "--requirepass", s.password)
	}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()

	deadline := time.Now().Add(startTimeout)
	for {
		if err := ping(s.addr, s.password); err == nil {
			return s, nil
		} else if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("no PONG on %s within %v: %v\n%s", s.addr, startTimeout, err, s.out.String())
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("redis-server exited at start-up:\n%s", s.out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// PID is the server's process id, for tests that measure its CPU time.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.addr }

// URL is a redis:// URL for the server's database 0, as PENDING_STORE takes,
// with the password when there is one.
func (s *Server) URL() string {
	u := url.URL{Scheme: "redis", Host: s.addr, Path: "/0"}
	if s.password != "" {
		u.User = url.UserPassword("", s.password)
	}
	return u.String()
}

// Stop stops the server (SIGKILL: an outage, not a shutdown) and waits for
// it to exit. Clients see connection refused from then on. Stop may be
// called more than once; Start's cleanup calls it too.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	s.stopped = true
	_ = s.cmd.Process.Kill()
	<-s.done
}

// ping sends one PING in the inline protocol (after AUTH when there is a
// password) and expects +PONG.
func ping(addr, password string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	cmd := "PING\r\n"
	if password != "" {
		// Both replies arrive in order; only the last matters.
		cmd = "AUTH " + password + "\r\n" + cmd
	}
	if _, err := c.Write([]byte(cmd)); err != nil {
		return err
	}
	r := bufio.NewReader(c)
	var line string
	for range strings.Count(cmd, "\r\n") {
		if line, err = r.ReadString('\n'); err != nil {
			return err
		}
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	addr, ok := ln.Addr().(*net.TCPAddr)
	if !ok {
		return 0, errors.New("listener address is not TCP")
	}
	return addr.Port, nil
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Package pgtest starts a real PostgreSQL server for tests, from Debian's
// postgresql package: the audit store is tested against the engine it runs
// on in production, not a fake.
//
// The server binaries (initdb, pg_ctl) are looked up in
// /usr/lib/postgresql/<version>/bin, then on PATH. Without them Start fails
// the test with an install hint (apt-get install postgresql; .ci/run
// installs it): a PostgreSQL test never passes by skipping. initdb refuses
// to run as root, so as root the cluster is made and run as the "postgres"
// user the package creates (runuser).
package pgtest

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
)

// Server is one PostgreSQL cluster in a temporary directory, listening on a
// free loopback port, with a trust-authenticated superuser "app".
type Server struct {
	tb      testing.TB
	bin     string
	dir     string
	port    int
	asUser  string // "postgres" when running as root, else ""
	options []string

	mu      sync.Mutex
	running bool
}

// Option changes how the server runs.
type Option func(*Server)

// Durable keeps PostgreSQL's default fsync and synchronous_commit, for
// benchmarks; tests run without them (a test's server never outlives it).
func Durable() Option {
	return func(s *Server) { s.options = nil }
}

// Start initialises and starts a cluster for the test and stops it and
// removes its files when the test ends.
func Start(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	bin, err := findBin()
	if err != nil {
		tb.Fatalf("%v", err)
	}
	s := &Server{tb: tb, bin: bin, options: []string{"-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"}}
	for _, o := range opts {
		o(s)
	}
	if os.Geteuid() == 0 {
		if _, err := user.Lookup("postgres"); err != nil {
			tb.Fatalf("running as root and there is no postgres user to run PostgreSQL as (initdb refuses root): apt-get install postgresql creates it")
		}
		s.asUser = "postgres"
	}
	// Not t.TempDir(): its parents are private to root, and the server may
	// run as postgres.
	s.dir, err = os.MkdirTemp("", "pgtest-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Stop(); _ = os.RemoveAll(s.dir) })
	if s.asUser != "" {
		if out, err := exec.Command("chown", "-R", s.asUser, s.dir).CombinedOutput(); err != nil {
			tb.Fatalf("chown %s: %v: %s", s.dir, err, out)
		}
	}
	if out, err := s.run(filepath.Join(bin, "initdb"), "-D", s.data(), "-A", "trust", "-U", "app", "-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
		tb.Fatalf("initdb: %v\n%s", err, out)
	}
	var lastErr error
	for range 3 {
		if s.port, lastErr = freePort(); lastErr != nil {
			continue
		}
		if lastErr = s.start(); lastErr == nil {
			return s
		}
	}
	tb.Fatalf("start postgres: %v", lastErr)
	return nil
}

func findBin() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "pg_ctl")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin or on PATH: apt-get install postgresql (.ci/run installs it)")
}

func version(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

func (s *Server) data() string { return filepath.Join(s.dir, "data") }

func (s *Server) run(name string, args ...string) ([]byte, error) {
	var cmd *exec.Cmd
	if s.asUser != "" {
		cmd = exec.Command("runuser", append([]string{"-u", s.asUser, "--", name}, args...)...)
	} else {
		cmd = exec.Command(name, args...)
	}
	cmd.Dir = s.dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=50", s.port, s.dir)
	for _, o := range s.options {
		opts += " " + o
	}
	out, err := s.run(filepath.Join(s.bin, "pg_ctl"), "-D", s.data(), "-o", opts, "-l", filepath.Join(s.dir, "log"), "-w", "-t", "60", "start")
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "log"))
		return fmt.Errorf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
	s.running = true
	return nil
}

// URL is a postgres:// URL of the server's "postgres" database.
func (s *Server) URL() string { return s.DatabaseURL("postgres") }

// DatabaseURL is a postgres:// URL of database name.
func (s *Server) DatabaseURL(name string) string {
	u := url.URL{Scheme: "postgres", User: url.User("app"), Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)), Path: "/" + name, RawQuery: "sslmode=disable"}
	return u.String()
}

// NewDatabase creates an empty database and returns its URL.
func (s *Server) NewDatabase(tb testing.TB, name string) string {
	tb.Helper()
	db, err := sql.Open("pgx", s.URL())
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, `CREATE DATABASE "`+name+`"`); err != nil {
		tb.Fatalf("create database %s: %v", name, err)
	}
	return s.DatabaseURL(name)
}

// Stop stops the server at once (an outage: immediate mode, no checkpoint).
// Clients see connection refused until Restart. Stop may be called more
// than once; Start's cleanup calls it too.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running {
		return
	}
	if out, err := s.run(filepath.Join(s.bin, "pg_ctl"), "-D", s.data(), "-m", "immediate", "-w", "stop"); err != nil {
		s.tb.Logf("pg_ctl stop: %v\n%s", err, out)
	}
	s.running = false
}

// Restart starts a stopped server again on the same port, with its data.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	if err := s.start(); err != nil {
		tb.Fatalf("restart postgres: %v", err)
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

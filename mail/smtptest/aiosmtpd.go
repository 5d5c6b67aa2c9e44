package smtptest

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// AiosmtpdVersion is the version of Python's aiosmtpd that .ci/run installs.
const AiosmtpdVersion = "1.4.6"

//go:embed aiosmtpd_recorder.py
var aiosmtpdRecorder []byte

// Aiosmtpd is a running aiosmtpd, Python's SMTP server: a server not written
// here, to check the mail code against someone else's reading of the RFCs.
// Without SMTPUTF8 it is a strict ASCII relay ("500 Error: strict ASCII
// mode" for any non-ASCII address), as many relays are.
type Aiosmtpd struct {
	port   int
	outdir string
}

// StartAiosmtpd runs `python3 -m aiosmtpd -n -l 127.0.0.1:PORT` (with
// --smtputf8 when smtputf8 is true) and a handler that records every mail
// it accepts, and stops it when the test ends. It fails tb, with the
// command that installs it, when aiosmtpd is missing.
func StartAiosmtpd(tb testing.TB, smtputf8 bool) *Aiosmtpd {
	tb.Helper()
	python, err := exec.LookPath("python3")
	if err != nil {
		tb.Fatalf("python3 is not installed; it runs aiosmtpd, the independent SMTP server of this test (apt-get install python3 python3-pip; pip install aiosmtpd==%s)", AiosmtpdVersion)
	}
	if out, err := exec.Command(python, "-c", "import aiosmtpd").CombinedOutput(); err != nil {
		tb.Fatalf("aiosmtpd is not installed: pip install aiosmtpd==%s (.ci/run installs it): %v\n%s", AiosmtpdVersion, err, out)
	}
	dir := tb.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "aiosmtpd_recorder.py"), aiosmtpdRecorder, 0o644); err != nil {
		tb.Fatal(err)
	}
	a := &Aiosmtpd{outdir: filepath.Join(dir, "mail")}
	if err := os.Mkdir(a.outdir, 0o755); err != nil {
		tb.Fatal(err)
	}

	// aiosmtpd takes a port, not a listener: pick a free one, and another
	// if it was taken in between.
	for attempt := 1; ; attempt++ {
		a.port = freePort(tb)
		args := []string{"-m", "aiosmtpd", "-n", "-l", "127.0.0.1:" + strconv.Itoa(a.port)}
		if smtputf8 {
			args = append(args, "--smtputf8")
		}
		args = append(args, "-c", "aiosmtpd_recorder.Recorder", a.outdir)
		cmd := exec.Command(python, args...)
		cmd.Env = append(os.Environ(), "PYTHONPATH="+dir, "PYTHONDONTWRITEBYTECODE=1")
		var output strings.Builder
		cmd.Stdout, cmd.Stderr = &output, &output
		if err := cmd.Start(); err != nil {
			tb.Fatalf("start aiosmtpd: %v", err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		stop := func() {
			_ = cmd.Process.Kill()
			<-exited
		}
		// Generous: Python starts slowly on a busy machine.
		if waitListening(a.port, exited, 60*time.Second) {
			tb.Cleanup(stop)
			return a
		}
		stop()
		if attempt == 3 {
			tb.Fatalf("aiosmtpd did not start on 127.0.0.1:%d:\n%s", a.port, output.String())
		}
	}
}

// Host is "127.0.0.1".
func (a *Aiosmtpd) Host() string { return "127.0.0.1" }

// Port is the port it listens on.
func (a *Aiosmtpd) Port() int { return a.port }

// Messages returns the mails accepted so far, in order, as Received (Conn
// is 0: aiosmtpd does not say).
func (a *Aiosmtpd) Messages() ([]Received, error) {
	names, err := filepath.Glob(filepath.Join(a.outdir, "*.json"))
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	out := make([]Received, 0, len(names))
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		var r struct {
			MailFrom string   `json:"mail_from"`
			RcptTos  []string `json:"rcpt_tos"`
			SMTPUTF8 bool     `json:"smtp_utf8"`
			Data     []byte   `json:"data"`
		}
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("smtptest: %s: %w", name, err)
		}
		out = append(out, Received{From: r.MailFrom, To: r.RcptTos, Data: r.Data, SMTPUTF8: r.SMTPUTF8})
	}
	return out, nil
}

// WaitForMessages waits until at least n mails were accepted and returns
// them all; after timeout it returns those accepted so far and an error.
func (a *Aiosmtpd) WaitForMessages(n int, timeout time.Duration) ([]Received, error) {
	deadline := time.Now().Add(timeout)
	for {
		got, err := a.Messages()
		if err != nil || len(got) >= n {
			return got, err
		}
		if time.Now().After(deadline) {
			return got, fmt.Errorf("smtptest: aiosmtpd accepted %d of %d messages after %v", len(got), n, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("smtptest: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitListening polls until something accepts connections on port, the
// process exited, or timeout passed.
func waitListening(port int, exited <-chan struct{}, timeout time.Duration) bool {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			_ = c.Close()
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

package mail_test

import (
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

	"github.com/countersign/countersign/mail/smtptest"
)

// aiosmtpdVersion is the version .ci/run installs.
const aiosmtpdVersion = "1.4.6"

// aiosmtpdRecord is one mail as testdata/aiosmtpd_recorder.py writes it.
type aiosmtpdRecord struct {
	MailFrom    string   `json:"mail_from"`
	RcptTos     []string `json:"rcpt_tos"`
	SMTPUTF8    bool     `json:"smtp_utf8"`
	MailOptions []string `json:"mail_options"`
	Data        []byte   `json:"data"`
}

// startAiosmtpd runs Python's aiosmtpd, an SMTP server not written here, as
// `python3 -m aiosmtpd -n -l 127.0.0.1:PORT [--smtputf8]` with a handler
// that records each mail as a file, and stops it when the test ends.
func startAiosmtpd(t *testing.T, smtputf8 bool) relay {
	t.Helper()
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is not installed; it runs aiosmtpd, the independent SMTP server of this test (apt-get install python3 python3-pip; pip install aiosmtpd==%s)", aiosmtpdVersion)
	}
	if out, err := exec.Command(python, "-c", "import aiosmtpd").CombinedOutput(); err != nil {
		t.Fatalf("aiosmtpd is not installed: pip install aiosmtpd==%s (.ci/run installs it): %v\n%s", aiosmtpdVersion, err, out)
	}
	testdata, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	outdir := t.TempDir()

	// aiosmtpd takes a port, not a listener: pick a free one, and try
	// another if it was taken in between.
	var port int
	for attempt := 0; ; attempt++ {
		port = freePort(t)
		args := []string{"-m", "aiosmtpd", "-n", "-l", "127.0.0.1:" + strconv.Itoa(port)}
		if smtputf8 {
			args = append(args, "--smtputf8")
		}
		args = append(args, "-c", "aiosmtpd_recorder.Recorder", outdir)
		cmd := exec.Command(python, args...)
		cmd.Env = append(os.Environ(), "PYTHONPATH="+testdata, "PYTHONDONTWRITEBYTECODE=1")
		var stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stderr, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatalf("start aiosmtpd: %v", err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		stop := func() {
			_ = cmd.Process.Kill()
			<-exited
		}
		if waitListening(port, exited, 60*time.Second) {
			t.Cleanup(stop)
			break
		}
		stop()
		if attempt == 2 {
			t.Fatalf("aiosmtpd did not start on 127.0.0.1:%d:\n%s", port, stderr.String())
		}
	}

	read := func() []smtptest.Received {
		names, _ := filepath.Glob(filepath.Join(outdir, "*.json"))
		sort.Strings(names)
		var out []smtptest.Received
		for _, name := range names {
			b, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			var r aiosmtpdRecord
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			out = append(out, smtptest.Received{From: r.MailFrom, To: r.RcptTos, Data: r.Data, SMTPUTF8: r.SMTPUTF8})
		}
		return out
	}
	return relay{
		host: "127.0.0.1", port: port, smtputf8: smtputf8,
		wait: func(t *testing.T, n int) []smtptest.Received {
			t.Helper()
			// The handler writes the file before it answers 250, so once
			// Send returned the file is there; the deadline is only a guard.
			deadline := time.Now().Add(30 * time.Second)
			for {
				got := read()
				if len(got) >= n {
					return got
				}
				if time.Now().After(deadline) {
					t.Fatalf("aiosmtpd recorded %d of %d mails", len(got), n)
				}
				time.Sleep(20 * time.Millisecond)
			}
		},
		count: func() int { return len(read()) },
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitListening polls until something accepts connections on port, the
// process exited, or timeout passed.
func waitListening(port int, exited <-chan struct{}, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			_ = c.Close()
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// The contract of issue 20 against an SMTP server written by others, in its
// strict ASCII mode (the default: "500 Error: strict ASCII mode" for any
// non-ASCII address) and with --smtputf8.
func TestInternationalAddressesAiosmtpd(t *testing.T) {
	t.Run("without SMTPUTF8", func(t *testing.T) { testInternationalAddresses(t, startAiosmtpd(t, false)) })
	t.Run("with SMTPUTF8", func(t *testing.T) { testInternationalAddresses(t, startAiosmtpd(t, true)) })
}

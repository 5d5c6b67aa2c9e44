package main

import (
	"bytes"
	"io"
	"log"
	"net"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// sink is an SMTP server that accepts every mail and remembers, per
// recipient, when the first mail arrived and the verification code in it.
// It keeps no message bodies: at 1,000 mails/s for minutes that would be
// gigabytes. (notifier/smtptest records whole messages and needs a
// testing.TB; this is its load-test cousin.)
type sink struct {
	srv *smtp.Server
	ln  net.Listener

	mu      sync.Mutex
	changed *sync.Cond
	first   map[string]time.Time // recipient → arrival of its first mail
	codes   map[string]string    // recipient → code in its first verification mail
	total   int
}

// startSink listens on addr ("127.0.0.1:0" for a free port).
func startSink(addr string) (*sink, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &sink{ln: ln, first: map[string]time.Time{}, codes: map[string]string{}}
	s.changed = sync.NewCond(&s.mu)
	s.srv = smtp.NewServer(sinkBackend{s})
	s.srv.Domain = "localhost"
	s.srv.AllowInsecureAuth = true
	s.srv.MaxMessageBytes = 1 << 20
	s.srv.ReadTimeout = time.Minute
	s.srv.WriteTimeout = time.Minute
	s.srv.ErrorLog = log.New(io.Discard, "", 0)
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

func (s *sink) host() string { return s.ln.Addr().(*net.TCPAddr).IP.String() }
func (s *sink) port() int    { return s.ln.Addr().(*net.TCPAddr).Port }
func (s *sink) close()       { _ = s.srv.Close() }

// count is the number of mails accepted so far.
func (s *sink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// arrival returns when the first mail to rcpt arrived.
func (s *sink) arrival(rcpt string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.first[strings.ToLower(rcpt)]
	return t, ok
}

func (s *sink) code(rcpt string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.codes[strings.ToLower(rcpt)]
}

// waitFor waits until every address in rcpts had a mail, or until deadline.
// It returns how many had one.
func (s *sink) waitFor(rcpts []string, deadline time.Time) int {
	timer := time.AfterFunc(time.Until(deadline), func() {
		s.mu.Lock()
		s.changed.Broadcast()
		s.mu.Unlock()
	})
	defer timer.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	i := 0
	for {
		for i < len(rcpts) {
			if _, ok := s.first[strings.ToLower(rcpts[i])]; !ok {
				break
			}
			i++
		}
		if i == len(rcpts) || !time.Now().Before(deadline) {
			break
		}
		s.changed.Wait()
	}
	n := 0
	for _, r := range rcpts {
		if _, ok := s.first[strings.ToLower(r)]; ok {
			n++
		}
	}
	return n
}

// waitQuiet waits until no mail arrived for quiet, or until deadline: for
// a backlog to drain before the next phase.
func (s *sink) waitQuiet(quiet time.Duration, deadline time.Time) {
	last, lastAt := s.count(), time.Now()
	for time.Now().Before(deadline) {
		time.Sleep(quiet / 4)
		if n := s.count(); n != last {
			last, lastAt = n, time.Now()
		} else if time.Since(lastAt) >= quiet {
			return
		}
	}
}

// codeLine is the code as the verification mail's text part shows it: alone
// on a line, indented by four spaces (templates/email/verification). The
// text part is quoted-printable, which leaves such a line as it is.
var codeLine = regexp.MustCompile(`(?m)^    ([0-9]{6})\r?$`)

func (s *sink) record(to []string, data []byte) {
	now := time.Now()
	var code string
	if m := codeLine.FindSubmatch(data); m != nil {
		code = string(m[1])
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total++
	for _, r := range to {
		r = strings.ToLower(r)
		if _, seen := s.first[r]; !seen {
			s.first[r] = now
		}
		if _, seen := s.codes[r]; !seen && code != "" {
			s.codes[r] = code
		}
	}
	s.changed.Broadcast()
}

type sinkBackend struct{ s *sink }

func (b sinkBackend) NewSession(*smtp.Conn) (smtp.Session, error) { return &sinkSession{s: b.s}, nil }

type sinkSession struct {
	s  *sink
	to []string
}

func (ss *sinkSession) Mail(string, *smtp.MailOptions) error { ss.to = ss.to[:0]; return nil }
func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.to = append(ss.to, to)
	return nil
}

func (ss *sinkSession) Data(r io.Reader) error {
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(r); err != nil {
		return err
	}
	ss.s.record(ss.to, buf.Bytes())
	return nil
}

func (ss *sinkSession) Reset()        { ss.to = ss.to[:0] }
func (ss *sinkSession) Logout() error { return nil }

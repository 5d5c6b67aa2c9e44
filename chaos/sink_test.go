package chaos

import (
	"bytes"
	"io"
	"log"
	"net"
	"net/mail"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// sink is an SMTP server that accepts every mail and remembers, for each,
// the recipient, its Message-ID and when it arrived. It can stop listening
// and start again on the same address: an SMTP server refusing connections.
type sink struct {
	addr string

	mu    sync.Mutex
	srv   *smtp.Server
	mails []received
}

type received struct {
	to, messageID string
	at            time.Time
}

func startSink(addr string) (*sink, error) {
	s := &sink{addr: addr}
	return s, s.start()
}

// start listens again on the sink's address.
func (s *sink) start() error {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return err
	}
	s.addr = ln.Addr().String()
	srv := smtp.NewServer(sinkBackend{s})
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = true
	srv.MaxMessageBytes = 1 << 20
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	srv.ErrorLog = log.New(io.Discard, "", 0)
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
	return nil
}

// stop closes the listener and every connection: connecting is refused
// until start.
func (s *sink) stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

func (s *sink) port() string {
	_, p, _ := net.SplitHostPort(s.addr)
	return p
}

// received returns the mails to recipients with the given prefix.
func (s *sink) received(prefix string) []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []received
	for _, m := range s.mails {
		if strings.HasPrefix(m.to, prefix) {
			out = append(out, m)
		}
	}
	return out
}

type sinkBackend struct{ s *sink }

func (b sinkBackend) NewSession(*smtp.Conn) (smtp.Session, error) { return &sinkSession{s: b.s}, nil }

type sinkSession struct {
	s  *sink
	to []string
}

func (ss *sinkSession) Mail(string, *smtp.MailOptions) error { ss.to = ss.to[:0]; return nil }
func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.to = append(ss.to, strings.ToLower(to))
	return nil
}

func (ss *sinkSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	id := ""
	if m, err := mail.ReadMessage(bytes.NewReader(data)); err == nil {
		id = m.Header.Get("Message-Id")
	}
	now := time.Now()
	ss.s.mu.Lock()
	for _, to := range ss.to {
		ss.s.mails = append(ss.s.mails, received{to: to, messageID: id, at: now})
	}
	ss.s.mu.Unlock()
	return nil
}

func (ss *sinkSession) Reset()        { ss.to = ss.to[:0] }
func (ss *sinkSession) Logout() error { return nil }

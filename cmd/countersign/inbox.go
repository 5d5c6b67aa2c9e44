package main

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"mime"
	"net"
	"net/http"
	netmail "net/mail"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/countersign/countersign/mail/smtptest"
)

// The dev inbox: `countersign dev` serves the outbox directory as a small
// web mail reader on DEV_INBOX_ADDR (default 127.0.0.1:8025, Mailpit's
// port), so a newcomer reads the code and opens the link with a browser
// alone. It reads the .eml files on every request; nothing is cached.
//
//	GET /                 the mails, newest first: recipient, subject, time
//	GET /mail/{name}      one mail: its headers and its text, links clickable
//	GET /mail/{name}/html the mail's HTML part as the recipient would see it

// DefaultDevInboxAddr is where the dev inbox listens by default.
const DefaultDevInboxAddr = "127.0.0.1:8025"

type inboxMail struct {
	Name    string
	To      string
	Subject string
	Date    time.Time
}

// inbox serves dir's mails.
type inbox struct{ dir string }

var emlName = regexp.MustCompile(`^[0-9]{20}-[A-Za-z0-9._@-]+\.eml$`)

func (in inbox) list() ([]inboxMail, error) {
	entries, err := os.ReadDir(in.dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	var out []inboxMail
	for _, e := range entries {
		if e.IsDir() || !emlName.MatchString(e.Name()) {
			continue
		}
		m, _, err := in.read(e.Name())
		if err != nil {
			continue
		}
		out = append(out, m)
	}
	// File names start with the time in nanoseconds: newest first.
	slices.SortFunc(out, func(a, b inboxMail) int { return strings.Compare(b.Name, a.Name) })
	return out, nil
}

func (in inbox) read(name string) (inboxMail, smtptest.Received, error) {
	if !emlName.MatchString(name) {
		return inboxMail{}, smtptest.Received{}, os.ErrNotExist
	}
	data, err := os.ReadFile(filepath.Join(in.dir, name))
	if err != nil {
		return inboxMail{}, smtptest.Received{}, err
	}
	msg, err := netmail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		return inboxMail{}, smtptest.Received{}, err
	}
	var dec mime.WordDecoder
	to, err := dec.DecodeHeader(msg.Header.Get("To"))
	if err != nil {
		to = msg.Header.Get("To")
	}
	date, _ := msg.Header.Date()
	rec := smtptest.Received{Data: data}
	return inboxMail{Name: name, To: to, Subject: rec.Subject(), Date: date}, rec, nil
}

var inboxTemplates = template.Must(template.New("inbox").Funcs(template.FuncMap{
	"linkify": linkify,
	"when":    func(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05") },
}).Parse(`{{define "head"}}<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark"><title>{{.}} · dev inbox</title>
<style>body{font:1rem/1.5 system-ui,sans-serif;max-width:50rem;margin:0 auto;padding:1rem}table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.4rem;border-bottom:1px solid #8884}pre{white-space:pre-wrap;border:1px solid #8884;padding:1rem;border-radius:8px}</style>
</head><body>{{end}}
{{define "list"}}{{template "head" "Inbox"}}
<h1>Dev inbox</h1>
<p>Mails written to the outbox, newest first. Reload to see new ones.</p>
{{if .}}<table><thead><tr><th scope="col">To</th><th scope="col">Subject</th><th scope="col">Time</th></tr></thead><tbody>
{{range .}}<tr><td>{{.To}}</td><td><a href="/mail/{{.Name}}">{{.Subject}}</a></td><td><time>{{when .Date}}</time></td></tr>
{{end}}</tbody></table>{{else}}<p>No mail yet.</p>{{end}}
</body></html>{{end}}
{{define "mail"}}{{template "head" .M.Subject}}
<p><a href="/">← Inbox</a></p>
<h1>{{.M.Subject}}</h1>
<p>To: {{.M.To}}<br>Time: {{when .M.Date}}</p>
<p><a href="/mail/{{.M.Name}}/html">View as HTML</a></p>
<h2>Text</h2>
<pre>{{linkify .Text}}</pre>
</body></html>{{end}}`))

var urlRE = regexp.MustCompile(`https?://[^\s<>"]+`)

// linkify escapes s and makes its http(s) URLs links.
func linkify(s string) template.HTML {
	var b strings.Builder
	last := 0
	for _, m := range urlRE.FindAllStringIndex(s, -1) {
		b.WriteString(template.HTMLEscapeString(s[last:m[0]]))
		u := template.HTMLEscapeString(s[m[0]:m[1]])
		fmt.Fprintf(&b, `<a href="%s">%s</a>`, u, u)
		last = m[1]
	}
	b.WriteString(template.HTMLEscapeString(s[last:]))
	return template.HTML(b.String())
}

func (in inbox) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		mails, err := in.list()
		if err != nil {
			http.Error(w, "read outbox: "+err.Error(), http.StatusInternalServerError)
			return
		}
		in.page(w, "list", mails)
	})
	mux.HandleFunc("GET /mail/{name}", func(w http.ResponseWriter, r *http.Request) {
		m, rec, err := in.read(r.PathValue("name"))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		text, _ := rec.TextPart()
		in.page(w, "mail", struct {
			M    inboxMail
			Text string
		}{m, text})
	})
	mux.HandleFunc("GET /mail/{name}/html", func(w http.ResponseWriter, r *http.Request) {
		_, rec, err := in.read(r.PathValue("name"))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		html, err := rec.HTMLPart()
		if err != nil {
			http.Error(w, "this mail has no HTML part", http.StatusNotFound)
			return
		}
		// As a mail client shows it: inline styles, no scripts, nothing
		// fetched; links still navigate.
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Referrer-Policy", "no-referrer")
		_, _ = w.Write([]byte(html))
	})
	return mux
}

func (in inbox) page(w http.ResponseWriter, name string, data any) {
	var buf bytes.Buffer
	if err := inboxTemplates.ExecuteTemplate(&buf, name, data); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'none'; frame-ancestors 'none'")
	_, _ = w.Write(buf.Bytes())
}

// serveInbox serves the outbox dir on addr (DEV_INBOX_ADDR; "" is
// DefaultDevInboxAddr, "off" disables it). A busy address names the
// variable.
func serveInbox(addr, dir string) (bound string, stop func(), err error) {
	if addr == "" {
		addr = DefaultDevInboxAddr
	}
	if addr == "off" {
		return "", func() {}, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("DEV_INBOX_ADDR=%q: %w (set DEV_INBOX_ADDR to a free address, or off)", addr, err)
	}
	srv := &http.Server{Handler: inbox{dir: dir}.handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return ln.Addr().String(), func() { _ = srv.Close() }, nil
}

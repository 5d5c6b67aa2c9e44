package templates_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/templates"
)

// MustLoad loads the templates from dir (empty: embedded only) or fails tb.
func MustLoad(tb testing.TB, dir string) *templates.Set {
	tb.Helper()
	s, err := templates.Load(dir)
	if err != nil {
		tb.Fatalf("Load(%q): %v", dir, err)
	}
	return s
}

// writeFile writes an override file below dir, creating its directories.
func writeFile(tb testing.TB, dir, rel, content string) {
	tb.Helper()
	p := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
}

// renderCase renders one template of set s with one model.
type renderCase struct {
	name   string
	render func(s *templates.Set) (templates.Rendered, error)
	// want are strings every part that shows data must contain (HTML and text).
	want    []string
	subject string
}

var expires = time.Date(2026, 3, 4, 15, 30, 0, 0, time.FixedZone("CET", 3600))

func sampleCases() []renderCase {
	return []renderCase{
		{
			name: "verification",
			render: func(s *templates.Set) (templates.Rendered, error) {
				return s.Verification(templates.Verification{
					FirstName: "Ada", LastName: "Lovelace", Email: "ada@example.com",
					Code: "482913", ExpiresAt: expires,
				})
			},
			subject: "Verify your account",
			// The expiry is shown in UTC: 15:30 CET is 14:30 UTC.
			want: []string{"Hi Ada,", "482913", "Wednesday, 4 March 2026 at 14:30 UTC"},
		},
		{
			name: "verified",
			render: func(s *templates.Set) (templates.Rendered, error) {
				return s.Verified(templates.Verified{
					FirstName: "Ada", LastName: "Lovelace", Email: "ada@example.com",
					VerifiedAt: expires,
				})
			},
			subject: "Your account is verified",
			want:    []string{"Hi Ada,", "ada@example.com", "Wednesday, 4 March 2026 at 14:30 UTC"},
		},
		{
			name: "account exists",
			render: func(s *templates.Set) (templates.Rendered, error) {
				return s.AccountExists(templates.AccountExists{Email: "ada@example.com", AttemptedAt: expires})
			},
			subject: "Someone tried to register with your address",
			want: []string{"Hello,", "maybe you", "ada@example.com", "Wednesday, 4 March 2026 at 14:30 UTC",
				"You already have an account", "need do nothing", "ignore this email"},
		},
		{
			name: "getting started",
			render: func(s *templates.Set) (templates.Rendered, error) {
				return s.GettingStarted(templates.GettingStarted{
					FirstName: "Ada", Email: "ada@example.com",
					Items: []templates.Recommendation{
						{Title: "Add a second factor", Description: "Use an authenticator app.", URL: "https://example.com/2fa"},
						{Title: "Invite your team"},
					},
				})
			},
			subject: "Getting started with Countersign",
			want: []string{"Hi Ada,", "Add a second factor", "Use an authenticator app.",
				"https://example.com/2fa", "Invite your team"},
		},
	}
}

func zeroCases() []renderCase {
	return []renderCase{
		{
			name:    "verification",
			render:  func(s *templates.Set) (templates.Rendered, error) { return s.Verification(templates.Verification{}) },
			subject: "Verify your account",
			want:    []string{"Hello,"},
		},
		{
			name:    "verified",
			render:  func(s *templates.Set) (templates.Rendered, error) { return s.Verified(templates.Verified{}) },
			subject: "Your account is verified",
			want:    []string{"Hello,"},
		},
		{
			name:    "account exists",
			render:  func(s *templates.Set) (templates.Rendered, error) { return s.AccountExists(templates.AccountExists{}) },
			subject: "Someone tried to register with your address",
			want:    []string{"Hello,", "You already have an account"},
		},
		{
			name: "getting started",
			render: func(s *templates.Set) (templates.Rendered, error) {
				return s.GettingStarted(templates.GettingStarted{})
			},
			subject: "Getting started with Countersign",
			want:    []string{"Hello,", "Sign in to Countersign"},
		},
	}
}

func checkRendered(t *testing.T, tc renderCase, r templates.Rendered) {
	t.Helper()
	if r.Subject != tc.subject {
		t.Errorf("Subject = %q, want %q", r.Subject, tc.subject)
	}
	if !strings.HasPrefix(r.HTML, "<!DOCTYPE html>") || !strings.Contains(r.HTML, "</html>") {
		t.Errorf("HTML is not a complete document:\n%s", r.HTML)
	}
	if strings.TrimSpace(r.Text) == "" {
		t.Error("Text is empty")
	}
	if strings.Contains(r.Text, "<") {
		t.Errorf("Text contains markup:\n%s", r.Text)
	}
	for _, w := range tc.want {
		if !strings.Contains(r.HTML, w) {
			t.Errorf("HTML lacks %q:\n%s", w, r.HTML)
		}
		if !strings.Contains(r.Text, w) {
			t.Errorf("Text lacks %q:\n%s", w, r.Text)
		}
	}
}

func TestRenderSample(t *testing.T) {
	s := MustLoad(t, "")
	for _, tc := range sampleCases() {
		t.Run(tc.name, func(t *testing.T) {
			r, err := tc.render(s)
			if err != nil {
				t.Fatal(err)
			}
			checkRendered(t, tc, r)
		})
	}
}

func TestRenderZeroValue(t *testing.T) {
	s := MustLoad(t, "")
	for _, tc := range zeroCases() {
		t.Run(tc.name, func(t *testing.T) {
			r, err := tc.render(s)
			if err != nil {
				t.Fatal(err)
			}
			checkRendered(t, tc, r)
		})
	}
}

func TestHTMLEscapesValues(t *testing.T) {
	s := MustLoad(t, "")
	evil := `<script>alert("x")</script>`

	r, err := s.Verification(templates.Verification{FirstName: evil, Code: "<b>1</b>"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(r.HTML, "<script>") || strings.Contains(r.HTML, "<b>1</b>") {
		t.Fatalf("HTML contains unescaped markup:\n%s", r.HTML)
	}
	if !strings.Contains(r.HTML, "&lt;script&gt;") {
		t.Fatalf("HTML lacks the escaped name:\n%s", r.HTML)
	}
	// The text part is plain text: the name appears as typed.
	if !strings.Contains(r.Text, evil) {
		t.Fatalf("Text lacks the name as typed:\n%s", r.Text)
	}

	r, err = s.GettingStarted(templates.GettingStarted{Items: []templates.Recommendation{
		{Title: evil, Description: evil, URL: "javascript:alert(1)"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(r.HTML, "<script>") {
		t.Fatalf("HTML contains unescaped markup:\n%s", r.HTML)
	}
	if strings.Contains(r.HTML, "javascript:") {
		t.Fatalf("HTML keeps a javascript: URL:\n%s", r.HTML)
	}
}

func TestSubjectIsOneLine(t *testing.T) {
	// An override that puts a value into the subject must still not be able to
	// start a new header line.
	dir := t.TempDir()
	writeFile(t, dir, "email/verification/subject.gotmpl", "  Welcome {{.FirstName}}\n\n")
	s := MustLoad(t, dir)

	r, err := s.Verification(templates.Verification{FirstName: "Ada\r\nBcc: victim@example.com\tX"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(r.Subject, "\r\n\t") {
		t.Fatalf("Subject = %q contains a line break or tab", r.Subject)
	}
	if want := "Welcome Ada Bcc: victim@example.com X"; r.Subject != want {
		t.Fatalf("Subject = %q, want %q", r.Subject, want)
	}

	// The embedded subjects end in a newline in their files; it must not reach
	// the rendered subject.
	for _, tc := range sampleCases() {
		r, err := tc.render(MustLoad(t, ""))
		if err != nil {
			t.Fatal(err)
		}
		if strings.ContainsAny(r.Subject, "\r\n") || strings.TrimSpace(r.Subject) != r.Subject {
			t.Errorf("%s: Subject = %q is not a trimmed single line", tc.name, r.Subject)
		}
	}
}

func TestOverrideReplacesOneFile(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "email/verification/body.txt.gotmpl", "Your code: {{.Code}}")
	s := MustLoad(t, dir)

	r, err := s.Verification(templates.Verification{FirstName: "Ada", Code: "123456"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Text != "Your code: 123456" {
		t.Fatalf("Text = %q, want the override", r.Text)
	}
	// The files not in dir are still the embedded ones.
	if r.Subject != "Verify your account" {
		t.Fatalf("Subject = %q, want the embedded default", r.Subject)
	}
	if !strings.Contains(r.HTML, "123456") || !strings.Contains(r.HTML, "Hi Ada,") {
		t.Fatalf("HTML is not the embedded default:\n%s", r.HTML)
	}
}

func TestOverrideLayout(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "email/layout.html.gotmpl",
		`{{define "layout"}}<!DOCTYPE html><html><body>ACME {{template "content" .}}</body></html>{{end}}`)
	s := MustLoad(t, dir)

	r, err := s.Verified(templates.Verified{FirstName: "Ada"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.HTML, "ACME") || !strings.Contains(r.HTML, "Hi Ada,") {
		t.Fatalf("HTML does not use the overridden layout:\n%s", r.HTML)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		content string
		// wantErr are substrings of the error: the file at least.
		wantErr []string
	}{
		{
			name:    "html does not parse",
			file:    "email/verification/body.html.gotmpl",
			content: "{{if .Code}}unclosed",
			wantErr: []string{"email/verification/body.html.gotmpl", "parse"},
		},
		{
			name:    "subject does not parse",
			file:    "email/verified/subject.gotmpl",
			content: "{{.FirstName",
			wantErr: []string{"email/verified/subject.gotmpl", "parse"},
		},
		{
			name:    "unknown field",
			file:    "email/getting_started/body.txt.gotmpl",
			content: "Hi {{.Nickname}}",
			wantErr: []string{"email/getting_started", "Nickname"},
		},
		{
			name:    "unknown function",
			file:    "email/verification/body.txt.gotmpl",
			content: "{{shout .Code}}",
			wantErr: []string{"email/verification/body.txt.gotmpl", "shout"},
		},
		{
			name:    "empty subject",
			file:    "email/verification/subject.gotmpl",
			content: "{{.FirstName}}\n",
			wantErr: []string{"email/verification/subject.gotmpl", "empty subject"},
		},
		{
			name:    "misspelt file name",
			file:    "email/verification/subjet.gotmpl",
			content: "Verify",
			wantErr: []string{"subjet.gotmpl", "unknown template file"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, dir, tt.file, tt.content)
			s, err := templates.Load(dir)
			if err == nil {
				t.Fatalf("Load succeeded (%v), want an error", s)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestLoadMissingDir(t *testing.T) {
	_, err := templates.Load(filepath.Join(t.TempDir(), "nope"))
	if err == nil || !strings.Contains(err.Error(), "TEMPLATES_DIR") {
		t.Fatalf("err = %v, want an error naming TEMPLATES_DIR", err)
	}
}

func TestConcurrentRender(t *testing.T) {
	// A Set is shared by every consumer goroutine; run with -race.
	s := MustLoad(t, "")
	done := make(chan error)
	for i := 0; i < 8; i++ {
		go func() {
			_, err := s.Verification(templates.Verification{FirstName: "Ada", Code: "1", ExpiresAt: expires})
			done <- err
		}()
	}
	for i := 0; i < 8; i++ {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

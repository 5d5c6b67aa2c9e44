// Package templates renders Countersign's e-mails.
//
// Each mail is a typed model (Verification, Verified, AccountExists,
// GettingStarted) plus three
// files under email/<name>/: subject.gotmpl and body.txt.gotmpl (text/template)
// and body.html.gotmpl (html/template, which escapes every value). The HTML
// bodies share email/layout.html.gotmpl, which defines the frame ("layout")
// around a body's "content".
//
// The defaults are embedded in the binary. Load reads a file from the override
// directory (TEMPLATES_DIR) when it exists there and the embedded default
// otherwise, so an operator can replace one file without copying the rest. All
// templates are parsed and executed once with their zero-value model at Load, so
// a broken override stops the start-up instead of failing on the first mail.
//
// Besides the models' fields, templates may call datetime (a time in UTC,
// "Monday, 2 January 2006 at 15:04 UTC"), fullName (first and last name
// joined) and add1 (numbering from 1). Subjects are folded into one line
// after rendering, so no value can add a mail header.
//
// A Set is immutable after Load and safe for concurrent use.
package templates

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	texttemplate "text/template"
	"time"
)

//go:embed email pages
var embedded embed.FS

// Rendered is one mail ready to be sent: a single-line Subject and the two
// alternative bodies.
type Rendered struct {
	Subject string
	HTML    string
	Text    string
}

// Verification is the model of the "verify your account" mail
// (email/verification/).
type Verification struct {
	FirstName string
	LastName  string
	Email     string
	// Code is the verification code the user types in.
	Code string
	// ExpiresAt is when Code stops working; the mail shows it in UTC.
	ExpiresAt time.Time
	// Link, when set, verifies the address in one click (after a confirm
	// button): Brand.PublicURL + events.ConfirmPath + token.
	Link string
	// Locale picks the language (Locales); empty or unknown is English.
	Locale string
}

// Verified is the model of the "your account is verified" mail
// (email/verified/).
type Verified struct {
	FirstName  string
	LastName   string
	Email      string
	VerifiedAt time.Time
	// Locale picks the language (Locales); empty or unknown is English.
	Locale string
}

// AccountExists is the model of the "you already have an account" notice
// (email/account_exists/), sent when someone registers an address that is
// an account. It has no names on purpose: the names given in that attempt
// are whoever tried's text, and the account's own are not in the event.
type AccountExists struct {
	Email string
	// AttemptedAt is when the registration was tried; shown in UTC.
	AttemptedAt time.Time
	// Locale picks the language (Locales); empty or unknown is English.
	Locale string
}

// GettingStarted is the model of the "getting started" mail
// (email/getting_started/), filled by the recommender.
type GettingStarted struct {
	FirstName string
	LastName  string
	Email     string
	Items     []Recommendation
	// Locale picks the language (Locales); empty or unknown is English.
	Locale string
}

// Recommendation is one entry of a GettingStarted mail. URL is put in an href;
// html/template replaces URLs with unsafe schemes (javascript: and the like)
// by "#ZgotmplZ", so only http(s) and mailto links work.
type Recommendation struct {
	Title       string
	Description string
	URL         string
}

// Template names, which are also the directory names under email/.
const (
	nameVerification   = "verification"
	nameVerified       = "verified"
	nameGettingStarted = "getting_started"
	nameAccountExists  = "account_exists"
)

// File names inside a template's directory, and the shared HTML layout.
const (
	fileSubject = "subject.gotmpl"
	fileHTML    = "body.html.gotmpl"
	fileText    = "body.txt.gotmpl"
	fileLayout  = "email/layout.html.gotmpl"
)

// Set holds every mail template, parsed. Create it with Load.
type Set struct {
	verification   *mailTemplate
	verified       *mailTemplate
	gettingStarted *mailTemplate
	accountExists  *mailTemplate
}

// Option configures Load.
type Option func(*options)

type options struct{ brand Brand }

// WithBrand puts the product name, support address and public URL into
// every mail ({{product}}, {{support}}, {{publicURL}}).
func WithBrand(b Brand) Option { return func(o *options) { o.brand = b } }

// Embedded returns the embedded templates, parsed and checked once. It
// panics if they are broken, which the package's tests rule out (like
// template.Must for templates compiled into the binary).
func Embedded() *Set {
	embeddedOnce.Do(func() {
		var err error
		if embeddedSet, err = Load(""); err != nil {
			panic(err)
		}
	})
	return embeddedSet
}

var (
	embeddedOnce sync.Once
	embeddedSet  *Set
)

// Load parses every template, taking each file from dir when it exists there
// and from the embedded defaults otherwise; dir is the TEMPLATES_DIR override
// and may be empty for the embedded templates only. Files in dir keep the
// embedded layout, e.g. dir/email/verification/subject.gotmpl. Every text
// comes from the locale catalogues ({{t "key"}}), so each mail exists in
// every locale of Locales.
//
// Load fails, naming the file, when a template does not parse, when it does not
// execute with its zero-value model (for instance it uses a field the model
// does not have), when a subject renders empty, or when dir holds a .gotmpl
// file that no template uses (most likely a misspelt name that would otherwise
// be ignored silently).
func Load(dir string, opts ...Option) (*Set, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	o.brand = o.brand.withDefaults()
	l := loader{dir: dir, skip: "pages/"}
	if dir != "" {
		info, err := os.Stat(dir)
		if err != nil {
			return nil, fmt.Errorf("load templates: TEMPLATES_DIR: %w", err)
		}
		if !info.IsDir() {
			return nil, fmt.Errorf("load templates: TEMPLATES_DIR %s is not a directory", dir)
		}
	}

	var (
		s   Set
		err error
	)
	if s.verification, err = loadTemplate(&l, o.brand, nameVerification, Verification{}); err != nil {
		return nil, err
	}
	if s.verified, err = loadTemplate(&l, o.brand, nameVerified, Verified{}); err != nil {
		return nil, err
	}
	if s.gettingStarted, err = loadTemplate(&l, o.brand, nameGettingStarted, GettingStarted{}); err != nil {
		return nil, err
	}
	if s.accountExists, err = loadTemplate(&l, o.brand, nameAccountExists, AccountExists{}); err != nil {
		return nil, err
	}
	if err := l.checkUnknown(); err != nil {
		return nil, err
	}
	return &s, nil
}

// Verification renders the mail that carries a verification code.
func (s *Set) Verification(m Verification) (Rendered, error) {
	return s.verification.render(m, m.Locale)
}

// Verified renders the mail that confirms a verified account.
func (s *Set) Verified(m Verified) (Rendered, error) {
	return s.verified.render(m, m.Locale)
}

// AccountExists renders the notice to the owner of an account that someone
// tried to register it again.
func (s *Set) AccountExists(m AccountExists) (Rendered, error) {
	return s.accountExists.render(m, m.Locale)
}

// GettingStarted renders the mail with the recommender's first steps.
func (s *Set) GettingStarted(m GettingStarted) (Rendered, error) {
	return s.gettingStarted.render(m, m.Locale)
}

// mailTemplate is the parsed subject, HTML and text of one mail, in every
// locale.
type mailTemplate struct {
	name     string
	byLocale map[string]*localized
}

type localized struct {
	subject *texttemplate.Template
	html    *htmltemplate.Template
	text    *texttemplate.Template
}

// render executes the three parts in locale (English when unknown). Errors
// name the template and part, never the model's values: they may be
// personal data.
func (t *mailTemplate) render(model any, locale string) (Rendered, error) {
	lt := t.byLocale[NormalizeLocale(locale)]
	var r Rendered
	var buf bytes.Buffer

	if err := lt.subject.Execute(&buf, model); err != nil {
		return Rendered{}, fmt.Errorf("render %s subject: %w", t.name, err)
	}
	r.Subject = singleLine(buf.String())

	buf.Reset()
	if err := lt.html.Execute(&buf, model); err != nil {
		return Rendered{}, fmt.Errorf("render %s html: %w", t.name, err)
	}
	r.HTML = buf.String()

	buf.Reset()
	if err := lt.text.Execute(&buf, model); err != nil {
		return Rendered{}, fmt.Errorf("render %s text: %w", t.name, err)
	}
	r.Text = buf.String()
	return r, nil
}

// singleLine folds s into one line: every run of white space, CR and LF
// included, becomes one space, and the ends are trimmed. Subjects go through
// it so that no value (a first name holding "\r\nBcc: ...", say) can add a mail
// header.
func singleLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// mailFuncs are the brand's and a locale's functions: t, product,
// support, publicURL, lang.
func mailFuncs(b Brand, locale string) map[string]any {
	return map[string]any{
		"t":         translator(locale),
		"product":   func() string { return b.ProductName },
		"support":   func() string { return b.SupportEmail },
		"publicURL": func() string { return b.PublicURL },
		"lang":      func() string { return locale },
	}
}

// funcs are available to every template.
var funcs = map[string]any{
	// datetime shows a time in UTC, e.g. "Monday, 2 January 2006 at 15:04 UTC".
	"datetime": func(t time.Time) string {
		return t.UTC().Format("Monday, 2 January 2006 at 15:04 UTC")
	},
	// add1 numbers list items from 1 in text bodies.
	"add1": func(i int) int { return i + 1 },
	// fullName joins first and last name, skipping empty ones.
	"fullName": func(first, last string) string {
		return singleLine(first + " " + last)
	},
}

// loadTemplate parses and checks the three files of template name with zero,
// the zero value of its model, in every locale.
func loadTemplate(l *loader, b Brand, name string, zero any) (*mailTemplate, error) {
	dir := path.Join("email", name)
	t := &mailTemplate{name: name, byLocale: map[string]*localized{}}
	base := mailFuncs(b, English)

	subjectFile := path.Join(dir, fileSubject)
	src, origin, err := l.read(subjectFile)
	if err != nil {
		return nil, err
	}
	subject, err := texttemplate.New(subjectFile).Funcs(funcs).Funcs(base).Parse(src)
	if err != nil {
		return nil, fmt.Errorf("load templates: parse %s (%s): %w", subjectFile, origin, err)
	}

	textFile := path.Join(dir, fileText)
	if src, origin, err = l.read(textFile); err != nil {
		return nil, err
	}
	text, err := texttemplate.New(textFile).Funcs(funcs).Funcs(base).Parse(src)
	if err != nil {
		return nil, fmt.Errorf("load templates: parse %s (%s): %w", textFile, origin, err)
	}

	// The body is parsed first so that it is the template Execute runs; the
	// layout then adds its definitions to the same set.
	htmlFile := path.Join(dir, fileHTML)
	if src, origin, err = l.read(htmlFile); err != nil {
		return nil, err
	}
	html, err := htmltemplate.New(htmlFile).Funcs(funcs).Funcs(base).Parse(src)
	if err != nil {
		return nil, fmt.Errorf("load templates: parse %s (%s): %w", htmlFile, origin, err)
	}
	layoutSrc, layoutOrigin, err := l.read(fileLayout)
	if err != nil {
		return nil, err
	}
	if _, err = html.New(fileLayout).Parse(layoutSrc); err != nil {
		return nil, fmt.Errorf("load templates: parse %s (%s): %w", fileLayout, layoutOrigin, err)
	}

	for _, loc := range Locales {
		lt := &localized{}
		fm := mailFuncs(b, loc)
		if lt.subject, err = subject.Clone(); err != nil {
			return nil, fmt.Errorf("load templates: %s: %w", subjectFile, err)
		}
		lt.subject.Funcs(fm)
		if lt.text, err = text.Clone(); err != nil {
			return nil, fmt.Errorf("load templates: %s: %w", textFile, err)
		}
		lt.text.Funcs(fm)
		if lt.html, err = html.Clone(); err != nil {
			return nil, fmt.Errorf("load templates: %s: %w", htmlFile, err)
		}
		lt.html.Funcs(fm)
		t.byLocale[loc] = lt

		// Executing with the zero value finds what parsing cannot: unknown
		// fields, wrong argument types, and html/template's contextual
		// escaping errors, which are only reported at the first execution.
		r, err := t.render(zero, loc)
		if err != nil {
			return nil, fmt.Errorf("load templates: %s does not execute with an empty model: %w", dir, err)
		}
		if r.Subject == "" {
			return nil, fmt.Errorf("load templates: %s renders an empty subject", subjectFile)
		}
	}
	return t, nil
}

// loader reads template files from the override directory, falling back to the
// embedded defaults, and remembers which override files it used.
type loader struct {
	dir  string
	used map[string]bool
	// skip is the top directory of the other loader's files in dir
	// ("pages/" for mails, "email/" for pages), which checkUnknown leaves
	// to that loader.
	skip string
}

// read returns the source of file (a slash-separated path such as
// "email/verified/subject.gotmpl") and where it came from, for error messages.
func (l *loader) read(file string) (src, origin string, err error) {
	if l.dir != "" {
		p := filepath.Join(l.dir, filepath.FromSlash(file))
		b, err := os.ReadFile(p)
		switch {
		case err == nil:
			if l.used == nil {
				l.used = make(map[string]bool)
			}
			l.used[file] = true
			return string(b), "override " + p, nil
		case !errors.Is(err, fs.ErrNotExist):
			return "", "", fmt.Errorf("load templates: read %s: %w", p, err)
		}
	}
	b, err := embedded.ReadFile(file)
	if err != nil {
		// Only a file missing from the build itself gets here.
		return "", "", fmt.Errorf("load templates: embedded %s: %w", file, err)
	}
	return string(b), "embedded", nil
}

// checkUnknown reports a .gotmpl file in the override directory that no
// template read.
func (l *loader) checkUnknown() error {
	if l.dir == "" {
		return nil
	}
	return filepath.WalkDir(l.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("load templates: %w", err)
		}
		if d.IsDir() || !strings.HasSuffix(p, ".gotmpl") {
			return nil
		}
		rel, err := filepath.Rel(l.dir, p)
		if err != nil {
			return fmt.Errorf("load templates: %w", err)
		}
		if l.skip != "" && strings.HasPrefix(filepath.ToSlash(rel), l.skip) {
			return nil
		}
		if !l.used[filepath.ToSlash(rel)] {
			return fmt.Errorf("load templates: unknown template file %s in TEMPLATES_DIR (expected names like email/verification/subject.gotmpl)", p)
		}
		return nil
	})
}

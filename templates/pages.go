package templates

import (
	"bytes"
	"fmt"
	htmltemplate "html/template"
	"io/fs"
	"path"
	"time"
)

// Brand is what makes the pages and mails an operator's own: the product's
// name, a support address and the public URL of the pages. Every page and
// mail template may use them as {{product}}, {{support}} and {{publicURL}}.
type Brand struct {
	// ProductName replaces "Countersign" in every text (PRODUCT_NAME).
	// Empty means "Countersign".
	ProductName string
	// SupportEmail, when set, is offered as the contact (SUPPORT_EMAIL).
	SupportEmail string
	// PublicURL is where people reach the pages (PUBLIC_URL), without a
	// trailing slash; links in mails are built on it.
	PublicURL string
}

// DefaultProductName is Brand.ProductName's default.
const DefaultProductName = "Countersign"

func (b Brand) withDefaults() Brand {
	if b.ProductName == "" {
		b.ProductName = DefaultProductName
	}
	return b
}

// Page is the model of every hosted page (pages/<name>.html.gotmpl). One
// type serves them all: each page uses the fields it needs.
type Page struct {
	// Locale is the page's language, one of Locales; the layout sets
	// <html lang> from it and offers the others.
	Locale string
	// Path is the page's own path (no query), for the language switch.
	Path string
	// Email, FirstName, LastName refill the forms.
	Email     string
	FirstName string
	LastName  string
	// Title is a catalogue key: the heading of the message page.
	Title string
	// Errors holds one catalogue key per field id ("email", "code", …).
	Errors map[string]string
	// ErrorOrder lists the ids of Errors in the order of the form, so the
	// first one is focused (autofocus) and the summary follows the form.
	ErrorOrder []string
	// Alert is a catalogue key for an error about the whole form.
	Alert string
	// AlertArg fills a %s or %d in Alert (seconds to wait, a URL).
	AlertArg any
	// Notice is a catalogue key for good news ("a new code is on its way").
	Notice string
	// ExpiresAt is when the pending code expires; zero when unknown.
	ExpiresAt time.Time
	// Now is the time the page is rendered, for the time left.
	Now time.Time
	// Token is the link token on the confirm page; empty when the link is
	// no longer valid.
	Token string
}

// Page names: files pages/<name>.html.gotmpl.
const (
	PageRegister = "register"
	PageCheck    = "check"
	PageConfirm  = "confirm"
	PageVerified = "verified"
	PageMessage  = "message"
)

var pageNames = []string{PageRegister, PageCheck, PageConfirm, PageVerified, PageMessage}

const filePagesLayout = "pages/layout.html.gotmpl"

// Static is the pages' stylesheet and script, served under /static/.
// They are not templates, and not overridable: the CSP allows nothing else.
func Static() fs.FS {
	sub, err := fs.Sub(embedded, "pages/static")
	if err != nil {
		panic(err)
	}
	return sub
}

// Pages holds every page, parsed for every locale. Create it with
// LoadPages; it is immutable and safe for concurrent use.
type Pages struct {
	byLocale map[string]map[string]*htmltemplate.Template
}

// LoadPages parses the hosted pages as Load parses mails: each file from
// dir (TEMPLATES_DIR, files pages/<name>.html.gotmpl) when it exists there,
// else the embedded default; every page is executed with a zero Page in
// every locale, so a broken override fails the start.
func LoadPages(dir string, brand Brand) (*Pages, error) {
	brand = brand.withDefaults()
	l := loader{dir: dir, skip: "email/"}
	layout, layoutOrigin, err := l.read(filePagesLayout)
	if err != nil {
		return nil, err
	}
	p := &Pages{byLocale: map[string]map[string]*htmltemplate.Template{}}
	for _, name := range pageNames {
		file := path.Join("pages", name+".html.gotmpl")
		src, origin, err := l.read(file)
		if err != nil {
			return nil, err
		}
		base := htmltemplate.New(file).Funcs(pageFuncs(brand, English))
		if _, err := base.Parse(src); err != nil {
			return nil, fmt.Errorf("load templates: parse %s (%s): %w", file, origin, err)
		}
		if _, err := base.New(filePagesLayout).Parse(layout); err != nil {
			return nil, fmt.Errorf("load templates: parse %s (%s): %w", filePagesLayout, layoutOrigin, err)
		}
		for _, loc := range Locales {
			t, err := base.Clone()
			if err != nil {
				return nil, fmt.Errorf("load templates: %s: %w", file, err)
			}
			t.Funcs(pageFuncs(brand, loc))
			var buf bytes.Buffer
			if err := t.Execute(&buf, Page{Locale: loc}); err != nil {
				return nil, fmt.Errorf("load templates: %s does not execute with an empty page (%s): %w", file, loc, err)
			}
			if p.byLocale[loc] == nil {
				p.byLocale[loc] = map[string]*htmltemplate.Template{}
			}
			p.byLocale[loc][name] = t
		}
	}
	if err := l.checkUnknown(); err != nil {
		return nil, err
	}
	return p, nil
}

// Render writes page name for p.Locale (English when unknown).
func (p *Pages) Render(name string, m Page) ([]byte, error) {
	m.Locale = NormalizeLocale(m.Locale)
	t, ok := p.byLocale[m.Locale][name]
	if !ok {
		return nil, fmt.Errorf("render page %s: no such page", name)
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, m); err != nil {
		return nil, fmt.Errorf("render page %s: %w", name, err)
	}
	return buf.Bytes(), nil
}

func pageFuncs(b Brand, locale string) htmltemplate.FuncMap {
	return htmltemplate.FuncMap{
		"t":         translator(locale),
		"product":   func() string { return b.ProductName },
		"support":   func() string { return b.SupportEmail },
		"publicURL": func() string { return b.PublicURL },
		"locales":   func() []string { return Locales },
		"langName":  func(l string) string { return catalogs[l]["lang.name"] },
		"clock":     func(t time.Time) string { return t.UTC().Format("15:04") },
		"unix":      func(t time.Time) int64 { return t.Unix() },
		// firstError is true for the field whose error comes first: it
		// gets autofocus, so the keyboard lands where the fix is.
		"firstError": func(p Page, id string) bool { return len(p.ErrorOrder) > 0 && p.ErrorOrder[0] == id },
		"left": func(exp, now time.Time) string {
			d := exp.Sub(now).Round(time.Second)
			if d < 0 {
				d = 0
			}
			return fmt.Sprintf("%d:%02d", int(d.Minutes()), int(d.Seconds())%60)
		},
	}
}

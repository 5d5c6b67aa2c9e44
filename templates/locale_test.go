package templates

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// Every catalogue has exactly the English keys, and the same fmt verbs in
// each text, so no page or mail is half translated or misformatted.
func TestCatalogsHaveTheSameKeys(t *testing.T) {
	en := catalogs[English]
	for _, l := range Locales {
		c := catalogs[l]
		if !slices.Equal(slices.Sorted(maps.Keys(c)), slices.Sorted(maps.Keys(en))) {
			for k := range en {
				if _, ok := c[k]; !ok {
					t.Errorf("%s lacks %q", l, k)
				}
			}
			for k := range c {
				if _, ok := en[k]; !ok {
					t.Errorf("%s has %q, which en lacks", l, k)
				}
			}
		}
		for k, v := range c {
			if verbs(v) != verbs(en[k]) {
				t.Errorf("%s %q: verbs %q, en has %q", l, k, verbs(v), verbs(en[k]))
			}
			if strings.TrimSpace(v) == "" {
				t.Errorf("%s %q is empty", l, k)
			}
		}
	}
}

func verbs(s string) string {
	var out []string
	for i := 0; i < len(s)-1; i++ {
		if s[i] == '%' {
			out = append(out, s[i:i+2])
			i++
		}
	}
	return strings.Join(out, "")
}

func TestMatchAcceptLanguage(t *testing.T) {
	for header, want := range map[string]string{
		"":                           English,
		"fr-FR, de;q=0.8":            English,
		"zh-CN,zh;q=0.9,en;q=0.8":    SimplifiedChinese,
		"en-GB,en;q=0.9,zh-CN;q=0.8": English,
		"fr;q=0.9, zh-Hans;q=0.5":    SimplifiedChinese,
		"en;q=0.1, zh;q=0.2":         SimplifiedChinese,
		"zh;q=0, en":                 English,
		"ZH-cn":                      SimplifiedChinese,
		"en;q=bogus, zh-TW":          SimplifiedChinese,
	} {
		if got := MatchAcceptLanguage(header); got != want {
			t.Errorf("MatchAcceptLanguage(%q) = %q, want %q", header, got, want)
		}
	}
	for in, want := range map[string]string{"": English, "xx": English, "zh-CN": SimplifiedChinese, "en-US": English, "zh": SimplifiedChinese} {
		if got := NormalizeLocale(in); got != want {
			t.Errorf("NormalizeLocale(%q) = %q, want %q", in, got, want)
		}
	}
}

// Every page renders in every locale, empty and with errors.
func TestPagesRender(t *testing.T) {
	p, err := LoadPages("", Brand{SupportEmail: "help@example.com", PublicURL: "https://a.example"})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range Locales {
		for _, name := range pageNames {
			b, err := p.Render(name, Page{Locale: l, Email: "a@example.com", Errors: map[string]string{"email": "error.email.invalid"}, ErrorOrder: []string{"email"}, Alert: "error.rate"})
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(b), "error.") || !strings.Contains(string(b), "help@example.com") {
				t.Errorf("%s/%s: an untranslated key or no support address", l, name)
			}
		}
	}
}

// The verification mail carries the link when there is one, in both parts,
// in the locale asked for, with the brand.
func TestVerificationMailLinkLocaleBrand(t *testing.T) {
	s, err := Load("", WithBrand(Brand{ProductName: "Acme ID", SupportEmail: "help@acme.example"}))
	if err != nil {
		t.Fatal(err)
	}
	link := "https://id.acme.example/confirm/Xq3v8mRk2n9Lp4sT7wYb1A"
	for _, tc := range []struct{ locale, subject, hello string }{
		{"", "Verify your account", "Hi Ada,"},
		{"zh-CN", "验证您的账户", "Ada，您好："},
		{"fr", "Verify your account", "Hi Ada,"},
	} {
		r, err := s.Verification(Verification{FirstName: "Ada", Code: "123456", Link: link, Locale: tc.locale})
		if err != nil {
			t.Fatal(err)
		}
		if r.Subject != tc.subject {
			t.Errorf("%q: subject %q, want %q", tc.locale, r.Subject, tc.subject)
		}
		for part, body := range map[string]string{"html": r.HTML, "text": r.Text} {
			for _, want := range []string{link, "123456", tc.hello, "Acme ID", "help@acme.example"} {
				if !strings.Contains(body, want) {
					t.Errorf("%q %s part lacks %q", tc.locale, part, want)
				}
			}
			if strings.Contains(body, "Countersign") {
				t.Errorf("%q %s part names Countersign under another brand", tc.locale, part)
			}
		}
	}
	r, err := s.Verification(Verification{FirstName: "Ada", Code: "123456"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(r.Text, "/confirm/") || strings.Contains(r.HTML, "Confirm my address") {
		t.Error("a mail without a link shows one")
	}
}

// The notice to an account, in both languages and under a brand: the
// address, the time, "you need do nothing", the support contact, and no
// greeting by name (the model has none).
func TestAccountExistsMailLocaleBrand(t *testing.T) {
	s, err := Load("", WithBrand(Brand{ProductName: "Acme ID", SupportEmail: "help@acme.example"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ locale, subject, hello, nothing string }{
		{"", "Someone tried to register with your address", "Hello,", "You need do nothing"},
		{"zh-CN", "有人尝试使用您的地址注册", "您好，", "您无需做任何事"},
	} {
		r, err := s.AccountExists(AccountExists{Email: "li@例子.测试", AttemptedAt: time.Date(2026, 6, 2, 10, 0, 0, 0, time.UTC), Locale: tc.locale})
		if err != nil {
			t.Fatal(err)
		}
		if r.Subject != tc.subject {
			t.Errorf("%q: subject %q, want %q", tc.locale, r.Subject, tc.subject)
		}
		for part, body := range map[string]string{"html": r.HTML, "text": r.Text} {
			for _, want := range []string{tc.hello, tc.nothing, "li@例子.测试", "2 June 2026 at 10:00 UTC", "Acme ID", "help@acme.example"} {
				if !strings.Contains(body, want) {
					t.Errorf("%q %s part lacks %q", tc.locale, part, want)
				}
			}
			if strings.Contains(body, "Countersign") || strings.Contains(body, "/confirm/") {
				t.Errorf("%q %s part names Countersign under another brand, or links to a confirmation", tc.locale, part)
			}
		}
	}
}

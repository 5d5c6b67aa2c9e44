package templates

import (
	"embed"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Locales Countersign speaks. English is the fallback for anything else.
const (
	English           = "en"
	SimplifiedChinese = "zh-CN"
)

// Locales lists the supported locales, the fallback first.
var Locales = []string{English, SimplifiedChinese}

//go:embed locales/*.json
var localeFiles embed.FS

// catalog maps a message key to its text in one locale; a text may hold
// fmt verbs (%s, %d) filled by the arguments of the template's t call.
type catalog map[string]string

// catalogs are the embedded catalogues, parsed once. A broken catalogue is
// a build mistake, caught by the tests (TestCatalogsHaveTheSameKeys).
var catalogs = func() map[string]catalog {
	out := map[string]catalog{}
	for _, l := range Locales {
		raw, err := localeFiles.ReadFile("locales/" + l + ".json")
		if err != nil {
			panic(err)
		}
		var c catalog
		if err := json.Unmarshal(raw, &c); err != nil {
			panic(fmt.Sprintf("locales/%s.json: %v", l, err))
		}
		out[l] = c
	}
	return out
}()

// translator returns the t function of one locale. An unknown key renders
// as the key itself, visibly, rather than failing a page: the catalogue
// test catches it before a release.
func translator(locale string) func(string, ...any) string {
	c := catalogs[locale]
	return func(key string, args ...any) string {
		s, ok := c[key]
		if !ok {
			s, ok = catalogs[English][key]
		}
		if !ok {
			return key
		}
		if len(args) == 0 {
			return s
		}
		return fmt.Sprintf(s, args...)
	}
}

// NormalizeLocale returns the supported locale s names (case-insensitive;
// "zh", "zh-Hans", "zh-CN", "zh-SG" are Simplified Chinese), or English for
// anything else, the empty string included.
func NormalizeLocale(s string) string {
	l, ok := matchLocale(s)
	if !ok {
		return English
	}
	return l
}

func matchLocale(tag string) (string, bool) {
	tag = strings.ToLower(strings.TrimSpace(tag))
	switch {
	case tag == "en" || strings.HasPrefix(tag, "en-"):
		return English, true
	case tag == "zh" || strings.HasPrefix(tag, "zh-"):
		// Traditional Chinese readers are better served by Simplified
		// Chinese than by English until a zh-TW catalogue exists.
		return SimplifiedChinese, true
	}
	return "", false
}

// MatchAcceptLanguage picks the locale an Accept-Language header prefers
// most among the supported ones (RFC 9110 weights; equal weights keep the
// header's order), or English.
func MatchAcceptLanguage(header string) string {
	type choice struct {
		locale string
		q      float64
		pos    int
	}
	var choices []choice
	for i, part := range strings.Split(header, ",") {
		tag, params, _ := strings.Cut(part, ";")
		q := 1.0
		if v, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				continue
			}
			q = f
		}
		if l, ok := matchLocale(tag); ok && q > 0 {
			choices = append(choices, choice{l, q, i})
		}
	}
	if len(choices) == 0 {
		return English
	}
	sort.SliceStable(choices, func(a, b int) bool { return choices[a].q > choices[b].q })
	return choices[0].locale
}

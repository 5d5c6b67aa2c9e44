package recommender

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/url"
	"os"
	"regexp"
	"strings"

	"github.com/countersign/countersign/events"
)

// ItemsPerMail is how many recommendations one Getting started mail carries.
const ItemsPerMail = 3

// Audiences an item can be limited to. A user's audience comes from the
// domain of their address (see Catalog.Audience): the verified event carries
// nothing else a recommendation could honestly be based on.
const (
	// AudienceWork is every address outside the catalogue's personal_domains.
	AudienceWork = "work"
	// AudiencePersonal is an address at one of the personal_domains.
	AudiencePersonal = "personal"
)

//go:embed catalog.json
var embeddedCatalog []byte

// Item is one entry of the catalogue.
type Item struct {
	// ID names the item in the metrics ("item" label) and in logs. It is
	// lower-case letters, digits and '-', and unique; keep it when the text
	// changes, or the metric's history breaks.
	ID          string `json:"id"`
	Title       string `json:"title"`
	Description string `json:"description"`
	// URL is an absolute https link, or a path ("/start/profile") on the
	// deployment's PUBLIC_URL (see Link).
	URL string `json:"url"`
	// Audience limits the item to AudienceWork or AudiencePersonal users;
	// empty means everyone.
	Audience string `json:"audience,omitempty"`
}

// catalogFile is the JSON layout of catalog.json and of RECOMMENDER_CATALOG.
type catalogFile struct {
	// PersonalDomains are the mail providers whose users are private people
	// (gmail.com, …); every other domain counts as a workplace.
	PersonalDomains []string `json:"personal_domains"`
	Items           []Item   `json:"items"`
}

// Catalog is the parsed, validated catalogue. It is immutable and safe for
// concurrent use.
type Catalog struct {
	items    []Item
	personal map[string]bool
	// eligible holds, per audience, the items in catalogue order that its
	// users may get.
	eligible map[string][]Item
}

// LoadCatalog reads the catalogue from path, or the one embedded in the
// binary when path is empty. Errors name the file and the entry.
func LoadCatalog(path string) (*Catalog, error) {
	if path == "" {
		c, err := ParseCatalog(embeddedCatalog)
		if err != nil {
			return nil, fmt.Errorf("embedded catalog: %w", err)
		}
		return c, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read catalog: %w", err)
	}
	c, err := ParseCatalog(data)
	if err != nil {
		return nil, fmt.Errorf("catalog %s: %w", path, err)
	}
	return c, nil
}

var (
	itemID    = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	domainRaw = regexp.MustCompile(`^[a-z0-9-]+(\.[a-z0-9-]+)+$`)
)

// ParseCatalog parses and validates a catalogue document. It refuses unknown
// fields, so a misspelt "audiance" fails the start instead of silently
// sending a work item to everyone, and it refuses a catalogue in which any
// audience has fewer than ItemsPerMail items.
func ParseCatalog(data []byte) (*Catalog, error) {
	var f catalogFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if dec.More() {
		return nil, errors.New("parse: trailing data after the JSON document")
	}
	c := &Catalog{personal: map[string]bool{}, eligible: map[string][]Item{}}
	for i, d := range f.PersonalDomains {
		if !domainRaw.MatchString(d) {
			return nil, fmt.Errorf("personal_domains[%d] %q: want a lower-case domain such as gmail.com", i, d)
		}
		c.personal[d] = true
	}
	seen := map[string]bool{}
	for i, it := range f.Items {
		if err := it.validate(); err != nil {
			return nil, fmt.Errorf("items[%d] (%q): %w", i, it.ID, err)
		}
		if seen[it.ID] {
			return nil, fmt.Errorf("items[%d]: duplicate id %q", i, it.ID)
		}
		seen[it.ID] = true
		c.items = append(c.items, it)
		for _, a := range []string{AudienceWork, AudiencePersonal} {
			if it.Audience == "" || it.Audience == a {
				c.eligible[a] = append(c.eligible[a], it)
			}
		}
	}
	for _, a := range []string{AudienceWork, AudiencePersonal} {
		if n := len(c.eligible[a]); n < ItemsPerMail {
			return nil, fmt.Errorf("audience %q has %d items, want at least %d", a, n, ItemsPerMail)
		}
	}
	return c, nil
}

func (it Item) validate() error {
	switch {
	case !itemID.MatchString(it.ID):
		return errors.New("id: want 1 to 63 lower-case letters, digits and '-'")
	case strings.TrimSpace(it.Title) == "":
		return errors.New("missing title")
	case strings.ContainsAny(it.Title+it.Description, "\r\n"):
		// The text part lays items out one line each.
		return errors.New("title and description must be single lines")
	case it.Audience != "" && it.Audience != AudienceWork && it.Audience != AudiencePersonal:
		return fmt.Errorf("audience %q: want %q, %q or none", it.Audience, AudienceWork, AudiencePersonal)
	}
	if strings.HasPrefix(it.URL, "/") && !strings.HasPrefix(it.URL, "//") {
		if _, err := url.Parse(it.URL); err != nil {
			return errors.New("url: not a valid path")
		}
		return nil
	}
	u, err := url.Parse(it.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
		// https only: the links go to people who just trusted us with their
		// address, and html/template would blank out odd schemes anyway.
		return errors.New("url: want an absolute https URL without credentials, or a path starting with /")
	}
	return nil
}

// Link is the item's URL as mailed: a path is put on publicURL (PUBLIC_URL),
// and dropped when that is empty (the item is then mailed without a link).
func (it Item) Link(publicURL string) string {
	if !strings.HasPrefix(it.URL, "/") {
		return it.URL
	}
	if publicURL == "" {
		return ""
	}
	return strings.TrimRight(publicURL, "/") + it.URL
}

// Items returns every item in catalogue order.
func (c *Catalog) Items() []Item { return append([]Item(nil), c.items...) }

// Audience returns AudiencePersonal for an address at one of the personal
// domains and AudienceWork otherwise.
func (c *Catalog) Audience(email string) string {
	email = events.NormalizeEmail(email)
	if i := strings.LastIndexByte(email, '@'); i >= 0 && c.personal[email[i+1:]] {
		return AudiencePersonal
	}
	return AudienceWork
}

// Pick returns the ItemsPerMail items for one user: consecutive items of the
// user's audience, in catalogue order, starting at a position chosen by a
// hash of the user id and wrapping around.
//
// The choice depends only on the catalogue, the user id and the address's
// domain, so a re-delivered event, a restarted process or another replica
// picks the same items: the hash is FNV-1a, which is the same in every
// process (unlike hash/maphash or map order, which are seeded per process).
// Across many users every item is shown about equally often, which is what
// makes the per-item metric comparable.
func (c *Catalog) Pick(userID, email string) []Item {
	el := c.eligible[c.Audience(email)]
	h := fnv.New64a()
	_, _ = h.Write([]byte(userID))
	start := int(h.Sum64() % uint64(len(el)))
	out := make([]Item, 0, ItemsPerMail)
	for i := range ItemsPerMail {
		out = append(out, el[(start+i)%len(el)])
	}
	return out
}

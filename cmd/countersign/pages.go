package main

import (
	"net"
	"strconv"

	"github.com/countersign/countersign/userapi"
)

// setPublicURL gives PUBLIC_URL to every part that builds on it: the user
// API (cross-origin checks, the link's validation), the mails' links and
// the recommender's catalogue paths.
func (c *config) setPublicURL(u string) {
	c.UserAPI.PublicURL = u
	c.Notifier.PublicURL = u
	c.Recommender.PublicURL = u
	c.Brand.PublicURL = u
}

// pageDefaults applies what the binary defaults differently from the
// packages' zero Config: the pages are on unless PAGES=false, and dev's
// PUBLIC_URL is http:// + HTTP_ADDR.
func (c *config) pageDefaults(names []string) {
	uses := func(n string) bool {
		for _, x := range names {
			if x == n {
				return true
			}
		}
		return false
	}
	if uses("PAGES") {
		c.UserAPI.Pages = !c.PagesOff
	}
	if uses("EMBEDDED_KAFKA_ADDR") && c.Brand.PublicURL == "" {
		c.setPublicURL(devPublicURL(c.UserAPI.HTTPAddr))
	}
}

// devPublicURL is dev's PUBLIC_URL when unset: http:// + HTTP_ADDR, with
// an unspecified host (0.0.0.0, ::) shown as 127.0.0.1.
func devPublicURL(httpAddr string) string {
	if httpAddr == "" {
		httpAddr = userapi.DefaultHTTPAddr
	}
	host, port, err := net.SplitHostPort(httpAddr)
	if err != nil {
		return "http://" + httpAddr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	if _, err := strconv.Atoi(port); err != nil {
		return "http://" + httpAddr
	}
	return "http://" + net.JoinHostPort(host, port)
}

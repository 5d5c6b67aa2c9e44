package main

import (
	"fmt"
	"net"
	netmail "net/mail"
	"strconv"
	"strings"

	"github.com/countersign/countersign/templates"
	"github.com/countersign/countersign/userapi"
)

// Settings of the pages and the branding (issue 15).
const (
	EnvProductName  = "PRODUCT_NAME"
	EnvSupportEmail = "SUPPORT_EMAIL"
	EnvDevInboxAddr = "DEV_INBOX_ADDR"
)

// userapiConfigFromEnv reads the user API's settings; PAGES defaults to on
// in the binary.
func userapiConfigFromEnv(env *Env) (userapi.Config, error) {
	cfg, err := userapi.ConfigFromEnv(env.Getenv)
	if err != nil {
		return cfg, err
	}
	if strings.TrimSpace(env.Getenv(userapi.EnvPages)) == "" {
		cfg.Pages = true
	}
	return cfg, nil
}

// brandFromEnv reads PRODUCT_NAME, SUPPORT_EMAIL and PUBLIC_URL, checked.
func brandFromEnv(env *Env) (templates.Brand, error) {
	b := templates.Brand{
		ProductName:  strings.TrimSpace(env.Getenv(EnvProductName)),
		SupportEmail: strings.TrimSpace(env.Getenv(EnvSupportEmail)),
		PublicURL:    strings.TrimRight(strings.TrimSpace(env.Getenv(userapi.EnvPublicURL)), "/"),
	}
	if strings.ContainsFunc(b.ProductName, func(r rune) bool { return r < ' ' }) || len(b.ProductName) > 100 {
		return b, fmt.Errorf("%s: want one line of at most 100 characters", EnvProductName)
	}
	if b.SupportEmail != "" {
		if a, err := netmail.ParseAddress(b.SupportEmail); err != nil || a.Name != "" || a.Address != b.SupportEmail {
			return b, fmt.Errorf("%s=%q: want a bare address such as help@example.com", EnvSupportEmail, b.SupportEmail)
		}
	}
	if b.PublicURL != "" {
		if err := userapi.ValidatePublicURL(b.PublicURL); err != nil {
			return b, err
		}
	}
	return b, nil
}

// loadPages loads the hosted pages with the brand and TEMPLATES_DIR.
func loadPages(env *Env) (*templates.Pages, error) {
	b, err := brandFromEnv(env)
	if err != nil {
		return nil, err
	}
	return templates.LoadPages(strings.TrimSpace(env.Getenv("TEMPLATES_DIR")), b)
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

// withDevDefaults returns env with dev's defaults filled in: PUBLIC_URL.
func withDevDefaults(env *Env) *Env {
	e := *env
	get := env.Getenv
	e.Getenv = func(name string) string {
		v := get(name)
		if name == userapi.EnvPublicURL && strings.TrimSpace(v) == "" {
			return devPublicURL(strings.TrimSpace(get(userapi.EnvHTTPAddr)))
		}
		return v
	}
	return &e
}

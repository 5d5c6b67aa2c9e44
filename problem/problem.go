// Package problem writes RFC 9457 problem details: the one error body every
// Countersign HTTP endpoint answers with, the user API's routes and the
// workers' /readyz alike. It is not a service, so any service may use it
// without importing another.
package problem

import (
	"encoding/json"
	"net/http"
)

// ContentType is the media type of every problem document.
const ContentType = "application/problem+json"

// Base prefixes every problem type URI. The URIs identify the kind of
// failure to clients and never change; they need not resolve.
const Base = "https://countersign.dev/problems/"

// Type returns the problem type URI of a code such as "unavailable".
func Type(code string) string { return Base + code }

// Problem is an RFC 9457 problem details document.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	// Instance is the request path the problem occurred on.
	Instance string `json:"instance,omitempty"`
}

// Write sends p as the whole response, with status p.Status, never cached
// and never sniffed. Headers set before (Retry-After, Allow) are kept.
func Write(w http.ResponseWriter, p Problem) {
	body, err := json.Marshal(p)
	if err != nil {
		// A Problem is strings and an int: it always encodes.
		panic(err)
	}
	WriteJSON(w, ContentType, p.Status, body)
}

// WriteJSON sends an encoded body as the whole response with the headers
// Write uses: the user API answers its successes this way too.
func WriteJSON(w http.ResponseWriter, contentType string, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

package smtptest

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"strings"
)

// Part is one leaf part of a message (not a multipart container), with its
// transfer encoding undone. Body is the decoded bytes as a string; the
// charset is not converted (Countersign sends UTF-8).
type Part struct {
	// ContentType is the media type without parameters, e.g. "text/html".
	ContentType string
	Header      textproto.MIMEHeader
	Body        string
}

// ErrNoPart is returned by TextPart and HTMLPart when the message has no part
// of that type.
var ErrNoPart = errors.New("smtptest: message has no such part")

// Header parses the message's header.
func (r Received) Header() (mail.Header, error) {
	m, err := mail.ReadMessage(bytes.NewReader(r.Data))
	if err != nil {
		return nil, fmt.Errorf("smtptest: parse message: %w", err)
	}
	return m.Header, nil
}

// Subject is the decoded Subject header, or "" when the message does not
// parse.
func (r Received) Subject() string {
	h, err := r.Header()
	if err != nil {
		return ""
	}
	var dec mime.WordDecoder
	s, err := dec.DecodeHeader(h.Get("Subject"))
	if err != nil {
		return h.Get("Subject")
	}
	return s
}

// MessageID is the Message-ID header including its angle brackets, or "".
func (r Received) MessageID() string {
	h, err := r.Header()
	if err != nil {
		return ""
	}
	return h.Get("Message-Id")
}

// Parts returns the leaf parts of the message in order, descending into
// nested multiparts. A message that is not multipart has one part.
func (r Received) Parts() ([]Part, error) {
	m, err := mail.ReadMessage(bytes.NewReader(r.Data))
	if err != nil {
		return nil, fmt.Errorf("smtptest: parse message: %w", err)
	}
	return collectParts(textproto.MIMEHeader(m.Header), m.Body)
}

// TextPart is the decoded body of the first text/plain part.
func (r Received) TextPart() (string, error) { return r.partOfType("text/plain") }

// HTMLPart is the decoded body of the first text/html part.
func (r Received) HTMLPart() (string, error) { return r.partOfType("text/html") }

func (r Received) partOfType(mediaType string) (string, error) {
	parts, err := r.Parts()
	if err != nil {
		return "", err
	}
	for _, p := range parts {
		if p.ContentType == mediaType {
			return p.Body, nil
		}
	}
	return "", fmt.Errorf("%w: %s", ErrNoPart, mediaType)
}

func collectParts(h textproto.MIMEHeader, body io.Reader) ([]Part, error) {
	ct := h.Get("Content-Type")
	if ct == "" {
		ct = "text/plain"
	}
	mediaType, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return nil, fmt.Errorf("smtptest: content type %q: %w", ct, err)
	}
	if !strings.HasPrefix(mediaType, "multipart/") {
		b, err := decodeBody(h.Get("Content-Transfer-Encoding"), body)
		if err != nil {
			return nil, err
		}
		return []Part{{ContentType: mediaType, Header: h, Body: string(b)}}, nil
	}

	boundary := params["boundary"]
	if boundary == "" {
		return nil, fmt.Errorf("smtptest: %s without boundary", mediaType)
	}
	mr := multipart.NewReader(body, boundary)
	var parts []Part
	for {
		// NextRawPart keeps the transfer encoding so that decodeBody handles
		// quoted-printable and base64 alike.
		p, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			return parts, nil
		}
		if err != nil {
			return nil, fmt.Errorf("smtptest: read %s: %w", mediaType, err)
		}
		sub, err := collectParts(p.Header, p)
		if err != nil {
			return nil, err
		}
		parts = append(parts, sub...)
	}
}

func decodeBody(encoding string, body io.Reader) ([]byte, error) {
	switch strings.ToLower(strings.TrimSpace(encoding)) {
	case "quoted-printable":
		body = quotedprintable.NewReader(body)
	case "base64":
		// The decoder skips the CR LF line breaks of the encoded body.
		body = base64.NewDecoder(base64.StdEncoding, body)
	}
	b, err := io.ReadAll(body)
	if err != nil {
		return nil, fmt.Errorf("smtptest: decode %s body: %w", encoding, err)
	}
	return b, nil
}

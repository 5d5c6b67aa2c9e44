package userapi

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"time"
)

// A lingering close, as nginx does it (issue 14). When a body is refused
// as too large, the client may still be writing it: Python's urllib, for
// one, writes the whole body before it reads anything. Go's server reads
// at most 256 KiB of what the handler left unread and then closes; the
// kernel answers the bytes still arriving with a reset, and the client
// loses the 413 it was sent. So the rest of the body is read and thrown
// away first, within a bound, and only then is the answer written.
const (
	// lingerMaxBytes bounds what is read and discarded: a client sending
	// more than this may still see a reset instead of the 413.
	lingerMaxBytes = 4 << 20
	// lingerMaxTime bounds how long it is read for: a slow client cannot
	// hold the handler longer than this.
	lingerMaxTime = 2 * time.Second
)

// drainTooLarge reads and discards what is left of r's body, up to
// lingerMaxBytes or lingerMaxTime, so that the 413 that follows reaches a
// client still writing. A client that asked for 100-continue and has not
// been told to go on has sent no body: nothing is read, which would invite
// it to send the body.
func drainTooLarge(w http.ResponseWriter, r *http.Request, bodyStarted bool) {
	if !bodyStarted && strings.EqualFold(r.Header.Get("Expect"), "100-continue") {
		return
	}
	rc := http.NewResponseController(w)
	// Not every ResponseWriter has a connection (httptest's does not):
	// then the bytes bound alone applies.
	deadlineSet := rc.SetReadDeadline(time.Now().Add(lingerMaxTime)) == nil
	n, err := io.CopyN(io.Discard, r.Body, lingerMaxBytes)
	if deadlineSet {
		_ = rc.SetReadDeadline(time.Time{})
	}
	if n == lingerMaxBytes || (err != nil && !errors.Is(err, io.EOF)) {
		// Still more, or the client stalled: this connection is not
		// worth keeping.
		w.Header().Set("Connection", "close")
	}
}

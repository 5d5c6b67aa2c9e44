package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// runHealthcheck GETs a URL and fails unless it answers 2xx. The runtime
// image has no shell and no curl, so docker compose health checks call the
// binary itself: `countersign healthcheck http://127.0.0.1:8080/readyz`.
func runHealthcheck(ctx context.Context, stdout io.Writer, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("%w: healthcheck <url>: %v", errUsage, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return errors.New(url + ": " + resp.Status)
	}
	fmt.Fprintln(stdout, url+": "+resp.Status)
	return nil
}

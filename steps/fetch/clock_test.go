package fetch

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/flowrun/flow/clock"
	"github.com/flowrun/flow/steps"
)

// The request's own timeout runs on the clock of the run (its context):
// on a virtual clock, a server that never answers times out at exactly the
// timeout, without waiting for it in real time.
func TestRequestTimeoutOnTheRunsClock(t *testing.T) {
	release := make(chan struct{})
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	v := clock.NewVirtual(t0)
	s := mustBuild(t, fmt.Sprintf(`{url: "%s", timeout: 30s}`, srv.URL))
	_, err := s.Do(clock.NewContext(context.Background(), v), steps.Input{})
	if se := stepErr(t, err); se.Class != "timeout" {
		t.Errorf("%v", err)
	}
	if got := v.Now().Sub(t0); got != 30*time.Second {
		t.Errorf("timed out at %s on the run's clock, want 30s", got)
	}
}

package tmpl

import (
	"context"
	"testing"
	"time"

	"github.com/flowrun/flow/clock"
)

// sleep waits on the clock of the scope's context: on a virtual clock an
// hour passes at once, and exactly.
func TestSleepOnTheContextsClock(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	v := clock.NewVirtual(t0)
	ctx := clock.NewContext(context.Background(), v)
	if _, err := eval(t, `${ sleep("1h") ?? sleep(1.5) }`, &Scope{Ctx: ctx}); err != nil {
		t.Fatal(err)
	}
	if got := v.Now().Sub(t0); got != time.Hour+1500*time.Millisecond {
		t.Errorf("the clock moved %s, want 1h1.5s", got)
	}
}

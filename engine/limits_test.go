package engine

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/flowrun/flow/spec"
)

// pausingClock is a fakeClock whose next Now, once armed, runs pause after
// reading the time and before returning it: the caller holds a time that
// others may overtake, as a goroutine that loses the CPU right after
// reading the clock does. It also records the time every sleep ends at.
type pausingClock struct {
	*fakeClock
	mu    sync.Mutex
	pause func()
	wakes []time.Duration
	start time.Time
}

func (c *pausingClock) Now() time.Time {
	t := c.fakeClock.Now()
	c.mu.Lock()
	pause := c.pause
	c.pause = nil
	c.mu.Unlock()
	if pause != nil {
		pause()
	}
	return t
}

func (c *pausingClock) SleepUntil(ctx context.Context, t time.Time) error {
	c.mu.Lock()
	c.wakes = append(c.wakes, t.Sub(c.start))
	c.mu.Unlock()
	return c.fakeClock.SleepUntil(ctx, t)
}

// Two stages share a limit of 10/s. Stage b reads the clock, and before it
// takes its token stage a takes two, the clock moving on between them.
// Stage b's token must come after stage a's, not at the same instant, and
// the start after it 100ms later again: the pipeline-level symptom was
// TestSharedLimitAcrossStages taking 1.8s or 1.7s instead of 1.9s now and
// then.
func TestSharedLimitStaleClockReading(t *testing.T) {
	fc := newFakeClock()
	clk := &pausingClock{fakeClock: fc, start: fc.Now()}
	api := newLimit("api", &spec.Rate{N: 10, Per: time.Second}, 1, 0, nil, 0, clk)
	a := &limiter{limits: []*limit{api}}
	b := &limiter{limits: []*limit{api}}
	ctx := context.Background()
	start := func(lm *limiter) {
		t.Helper()
		var h held
		if err := lm.acquire(ctx, nil, &h); err != nil {
			t.Error(err)
			return
		}
		lm.done(&h)
	}

	start(a) // the burst of 1: at once, no sleep
	clk.mu.Lock()
	clk.pause = func() {
		done := make(chan struct{})
		go func() {
			defer close(done)
			start(a)
			start(a)
		}()
		<-done
	}
	clk.mu.Unlock()
	start(b)
	start(a)

	clk.mu.Lock()
	got := clk.wakes
	clk.mu.Unlock()
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond, 400 * time.Millisecond}
	if !slices.Equal(got, want) {
		t.Errorf("starts after the first at %v, want %v (a: 100ms 200ms, b: 300ms, a: 400ms)", got, want)
	}
}

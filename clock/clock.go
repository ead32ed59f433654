// Package clock is the time a run waits on. The engine (rate limits,
// backoff, Retry-After, attempt timeouts, stage deadlines, the pipeline
// timeout) and the kinds that wait (compute's sleep, a mocked fetch's
// latency) read it from here rather than from package time, so that
// `flow test` can run them on a virtual clock: instantly, and in the same
// order every time.
//
// A run's clock travels in its context (NewContext, From); code that has no
// clock in its context gets Real.
package clock

import (
	"context"
	"time"
)

// Clock is a source of time and of waits on it.
type Clock interface {
	Now() time.Time
	// SleepUntil waits until t or until ctx is done, whichever comes
	// first, and returns the context's cause in the second case.
	SleepUntil(ctx context.Context, t time.Time) error
	// AfterFunc calls f in its own goroutine once d has passed on this
	// clock, like time.AfterFunc. Stop reports whether it stopped f from
	// being called.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc.
type Timer interface {
	Stop() bool
}

// Real is the wall clock.
var Real Clock = realClock{}

type ctxKey struct{}

// NewContext returns ctx carrying c.
func NewContext(ctx context.Context, c Clock) context.Context {
	return context.WithValue(ctx, ctxKey{}, c)
}

// From returns the clock ctx carries, or Real.
func From(ctx context.Context) Clock {
	if c, ok := ctx.Value(ctxKey{}).(Clock); ok && c != nil {
		return c
	}
	return Real
}

// Sleep waits for d on the clock of ctx.
func Sleep(ctx context.Context, d time.Duration) error {
	c := From(ctx)
	return c.SleepUntil(ctx, c.Now().Add(d))
}

// WithTimeoutCause is context.WithTimeoutCause on c: the returned context
// is cancelled with cause once d has passed on c. On Real it is exactly
// context.WithTimeoutCause, so a real run keeps the runtime's timers.
func WithTimeoutCause(ctx context.Context, c Clock, d time.Duration, cause error) (context.Context, context.CancelFunc) {
	if _, ok := c.(realClock); ok {
		return context.WithTimeoutCause(ctx, d, cause)
	}
	cctx, cancel := context.WithCancelCause(ctx)
	t := c.AfterFunc(d, func() { cancel(cause) })
	return cctx, func() {
		t.Stop()
		cancel(context.Canceled)
	}
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) SleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (realClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

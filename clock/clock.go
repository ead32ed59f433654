// Package clock is the time a run waits on. The engine (rate limits,
// backoff, Retry-After, attempt timeouts, stage deadlines, the pipeline
// timeout) and the kinds that wait (compute's sleep, a mocked fetch's
// latency) read it from here rather than from package time, so that
// `flow test` can run them on a virtual clock: instantly, and in the same
// order every time.
//
// A run's clock travels in its context (NewContext, From); code that has no
// clock in its context gets Real. Real is the wall clock; Virtual (see its
// doc for exactly what is deterministic) moves only when the program waits
// for it, so a test of timeouts, backoff and rates takes milliseconds and
// gives the same times on every run.
//
// Code that waits or measures time in a run must use the clock of its
// context: clock.Sleep for a pause, WithTimeoutCause for a bound on a
// call, From(ctx).Now for a time, and Hold around a wait the clock cannot
// see. A time.Sleep, time.After or context.WithTimeout is wall time even
// under `flow test`, and the virtual clock counts its goroutine as idle.
package clock

import (
	"context"
	"sync/atomic"
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
//
// On another clock the context's Err is context.DeadlineExceeded once the
// time passed, as on Real, and context.Cause is cause; contexts derived
// from it report context.Canceled (with the same cause), since only the
// runtime's own timers can end a context with DeadlineExceeded. Its
// Deadline is its parent's: a time on a virtual clock means nothing to a
// socket.
func WithTimeoutCause(ctx context.Context, c Clock, d time.Duration, cause error) (context.Context, context.CancelFunc) {
	if _, ok := c.(realClock); ok {
		return context.WithTimeoutCause(ctx, d, cause)
	}
	cctx, cancel := context.WithCancelCause(ctx)
	tc := &timeoutCtx{Context: cctx}
	if cause == nil {
		cause = context.DeadlineExceeded // as context.WithTimeoutCause does
	}
	t := c.AfterFunc(d, func() {
		// Ended already (its parent was cancelled): the timeout did not
		// end it, and Err stays what the parent gave.
		if cctx.Err() == nil {
			tc.expired.Store(true)
			cancel(cause)
		}
	})
	return tc, func() {
		t.Stop()
		cancel(context.Canceled)
	}
}

// timeoutCtx is a context ended by a timer of a clock other than Real.
type timeoutCtx struct {
	context.Context
	expired atomic.Bool
}

func (c *timeoutCtx) Err() error {
	err := c.Context.Err()
	if err != nil && c.expired.Load() {
		return context.DeadlineExceeded
	}
	return err
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

// IsReal tells whether c is the wall clock, for code that takes a cheaper
// path there (the runtime's timers rather than the clock's).
func IsReal(c Clock) bool {
	_, ok := c.(realClock)
	return ok
}

func (realClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

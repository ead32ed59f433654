package engine

import (
	"context"
	"time"
)

// clock is the time the engine waits on for rate limits and retry backoff.
// Tests swap in a virtual clock so that limiter and backoff behaviour is
// asserted on reservations and waits, not on wall time.
type clock interface {
	Now() time.Time
	// SleepUntil waits until t or until ctx is done, whichever comes
	// first, and returns the context's cause in the second case.
	SleepUntil(ctx context.Context, t time.Time) error
}

func sleep(c clock, ctx context.Context, d time.Duration) error {
	return c.SleepUntil(ctx, c.Now().Add(d))
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

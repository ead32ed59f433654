package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/flowrun/flow/clock"
	"github.com/flowrun/flow/steps"
)

// One item's work in a step stage: its filter and limit keys, then its
// attempts under the limits, the per-attempt timeout and the retry policy.

// workerState is one worker goroutine's own: its name in attempts, its
// measure of the time per item (for chunk sizes and sampling), and the
// limit buckets its attempt holds.
type workerState struct {
	name string
	ewma float64 // nanoseconds per item, from the items timed
	n    uint32
	held held
}

// Reading the clock costs 75-100ns or more on virtual machines (kvm-clock),
// as much as a trivial step: fast items are timed one in sampleEvery, which
// is plenty for quantiles (15,000 samples in a million items) and for the
// chunk size; items slower than alwaysTime are all timed.
const (
	sampleEvery = 64
	alwaysTime  = 2 * time.Microsecond
)

func (w *workerState) sample() bool {
	w.n++
	return w.ewma == 0 || w.ewma >= float64(alwaysTime) || w.n%sampleEvery == 0
}

func (w *workerState) chunkSize() int {
	if w.ewma <= 0 {
		return 1
	}
	n := int(float64(chunkTarget) / w.ewma)
	return max(1, min(n, maxChunk))
}

func (w *workerState) observe(d time.Duration) {
	if w.ewma == 0 {
		w.ewma = float64(d)
		return
	}
	w.ewma += (float64(d) - w.ewma) / 8
}

// process runs one item: filter, limits, attempts with timeout and retry.
func (st *stepStage) process(w *workerState, e *entry) {
	if st.ctx.Err() != nil {
		e.outcome = outCancelled
		return
	}
	var keys []string
	if st.when != nil || st.lim != nil {
		sc := st.scope(e.in)
		if st.when != nil {
			keep, err := st.filter(sc)
			if err != nil {
				e.outcome, e.err = outFailed, err
				return
			}
			if !keep {
				e.outcome = outFiltered
				return
			}
		}
		if st.lim != nil {
			var err error
			if keys, err = st.lim.keysOf(sc); err != nil {
				e.outcome, e.err = outFailed, &steps.Error{Err: err, Class: "expression", Permanent: true}
				return
			}
		}
	}
	// With an event consumer every attempt is timed (a timeline, a journal
	// wants them all, and samples itself); without one, a sample of items
	// is timed for the latency percentiles, since reading the clock costs as
	// much as a trivial step.
	if st.r.ev != nil {
		st.attempts(w, e, keys, true)
		first := e.tries.last.Start
		if len(e.tries.earlier) > 0 {
			first = e.tries.earlier[0].Start
		}
		if !first.IsZero() {
			e.lat, e.timed = e.tries.last.End.Sub(first), true
			w.observe(e.lat)
		}
		return
	}
	if !w.sample() && !st.r.timeAll {
		st.attempts(w, e, keys, false)
		return
	}
	clk := st.r.clk
	start := clk.Now()
	st.attempts(w, e, keys, false)
	e.lat, e.timed = clk.Now().Sub(start), true
	w.observe(e.lat)
}

var errCancelled = errors.New("cancelled")

// attempts runs the attempts of one item; timed records the time of each
// and the wait on limits.
func (st *stepStage) attempts(w *workerState, e *entry, keys []string, timed bool) {
	clk := st.r.clk
	t := &e.tries
	// A batch (batch.go, runBatch) may have made the first attempt.
	for attempt := int(t.n) + 1; ; attempt++ {
		if st.lim != nil {
			var t0 time.Time
			if timed {
				t0 = clk.Now()
			}
			err := st.lim.acquire(st.ctx, keys, &w.held)
			if timed {
				t.wait += clk.Now().Sub(t0)
			}
			if err != nil {
				e.outcome = outCancelled
				return
			}
		}
		actx, cancel := st.ctx, context.CancelFunc(nil)
		if st.timeout > 0 {
			actx, cancel = clock.WithTimeoutCause(st.ctx, clk, st.timeout, nil)
		}
		// The attempt lives in the entry (pooled), so that handing the
		// runner a pointer to it costs no allocation.
		if t.n > 0 {
			t.earlier = append(t.earlier, t.last)
		}
		t.n++
		t.last = Attempt{Worker: w.name}
		at := &t.last
		if timed {
			at.Start = clk.Now()
		}
		res, err := safeDo(st.runner, actx, e.in, at)
		if timed {
			at.End = clk.Now()
		}
		timedOut := false
		if cancel != nil {
			timedOut = err != nil && actx.Err() == context.DeadlineExceeded
			cancel()
		}
		if st.lim != nil {
			st.lim.done(&w.held)
		}
		if err == nil {
			e.outcome, e.res = outOK, res
			return
		}
		if !st.again(e, at, attempt, err, timedOut) {
			return
		}
	}
}

// again settles a failed attempt: false once the item's outcome is final
// (failed, or cancelled), true after the backoff before the next attempt.
func (st *stepStage) again(e *entry, at *Attempt, attempt int, err error, timedOut bool) bool {
	if st.ctx.Err() != nil {
		e.outcome = outCancelled
		return false
	}
	if timedOut {
		err = &steps.Error{Err: fmt.Errorf("attempt timed out after %s (timeout: %s)", st.timeout, st.timeout), Class: "timeout"}
	}
	at.Class = steps.ClassOf(err)
	e.timedOut = timedOut
	if !st.retryable(err, attempt) {
		e.outcome, e.err = outFailed, err
		return false
	}
	var se *steps.Error
	if errors.As(err, &se) && st.retry.MaxBackoff > 0 && se.RetryAfter > st.retry.MaxBackoff {
		// Waiting less than asked would only be refused again, and
		// an hour's wait is not what max_backoff allows.
		e.outcome, e.err = outFailed, &steps.Error{Class: se.Class, Permanent: true, Err: fmt.Errorf("%w; not retried: the server asks to wait %s (Retry-After), longer than retry.max_backoff (%s); raise max_backoff to wait that long",
			err, se.RetryAfter, st.retry.MaxBackoff)}
		return false
	}
	clk := st.r.clk
	if clk.SleepUntil(st.ctx, clk.Now().Add(st.backoff(e.in.Index, attempt, err))) != nil {
		e.outcome = outCancelled
		return false
	}
	return true
}

// safeDo runs one attempt, turning a panic into the item's error.
func safeDo(r Runner, ctx context.Context, in steps.Input, at *Attempt) (res any, err error) {
	defer func() {
		if p := recover(); p != nil {
			res, err = nil, &steps.Error{Err: fmt.Errorf("panic: %v", p), Class: "panic", Permanent: true}
		}
	}()
	return r.Do(ctx, in, at)
}

func (st *stepStage) retryable(err error, attempt int) bool {
	r := st.retry
	if r == nil || attempt >= r.Attempts {
		return false
	}
	var se *steps.Error
	if errors.As(err, &se) && se.Permanent {
		return false
	}
	if len(r.On) == 0 {
		return true
	}
	class := steps.ClassOf(err)
	for _, c := range r.On {
		if c == class {
			return true
		}
	}
	return false
}

// backoff is the wait before attempt+1: exponential from retry.backoff,
// capped by max_backoff, spread by jitter, and never shorter than the
// step's RetryAfter hint.
func (st *stepStage) backoff(index int64, attempt int, err error) time.Duration {
	r := st.retry
	d := float64(r.Backoff)
	for i := 1; i < attempt && d < float64(r.MaxBackoff); i++ {
		d *= 2
	}
	if r.MaxBackoff > 0 && d > float64(r.MaxBackoff) {
		d = float64(r.MaxBackoff)
	}
	if r.Jitter != nil && *r.Jitter > 0 {
		d *= 1 + *r.Jitter*(2*st.jitter(index, attempt)-1)
	}
	wait := time.Duration(d)
	var se *steps.Error
	if errors.As(err, &se) && se.RetryAfter > wait {
		wait = se.RetryAfter
	}
	return wait
}

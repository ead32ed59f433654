package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
)

func TestInputOrderThroughStages(t *testing.T) {
	col := &collector{keep: true}
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 5000}}
  - {name: a, step: pass, workers: 8}
  - {name: b, step: pass, workers: 3}
  - {name: c, step: pass, workers: 8}
  - {name: out, sink: {collect: `+fn(col)+`}}
`)
	ev := newCountingEvents()
	rep := runT(t, context.Background(), p, config{}, ev)
	if rep.Status != "succeeded" {
		t.Fatalf("status %s: %s", rep.Status, rep.Reason)
	}
	got := col.indexes()
	if len(got) != 5000 {
		t.Fatalf("sink got %d items, want 5000", len(got))
	}
	for i, x := range got {
		if x != int64(i) {
			t.Fatalf("item %d arrived at position %d: order: input not kept", x, i)
		}
	}
	for _, s := range rep.Stages {
		if s.In != 5000 || s.Succeeded != 5000 || s.Out != 5000 && s.Role != "sink" {
			t.Errorf("stage %s: %+v", s.Name, *s)
		}
		if ev.items[s.Name]["succeeded"] != 5000 || ev.done[s.Name] != 1 || ev.started[s.Name] != 5000 {
			t.Errorf("stage %s events: %v done %d total %d", s.Name, ev.items[s.Name], ev.done[s.Name], ev.started[s.Name])
		}
	}
	if col.closed != 1 || col.closeErr != nil {
		t.Errorf("sink closed %d times with %v", col.closed, col.closeErr)
	}
}

// gates make completion order deterministic: item k may finish only once
// gate k is open.
type gates []chan struct{}

func newGates(n int) gates {
	g := make(gates, n)
	for i := range g {
		g[i] = make(chan struct{})
	}
	return g
}

func TestInputOrderRestoredWhenCompletingBackwards(t *testing.T) {
	g := newGates(4)
	step := fn(steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
		k := in.Item.(int64)
		if k < 3 {
			<-g[k]
		}
		if k > 0 {
			defer close(g[k-1])
		}
		return k * 10, nil
	}))
	col := &collector{keep: true}
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 4}}
  - {name: work, step: fn, with: {fn: `+step+`}, workers: 4}
  - {name: out, sink: {collect: `+fn(col)+`}}
`)
	rep := runT(t, context.Background(), p, config{}, nil)
	if got := col.items(); !slices.Equal(got, []any{int64(0), int64(10), int64(20), int64(30)}) {
		t.Fatalf("got %v, want input order", got)
	}
	if rep.Status != "succeeded" {
		t.Fatal(rep.Reason)
	}
}

// finishOrder lets item k finish only after item k+1 was handed on.
type finishOrder struct {
	g     gates
	stage string
}

func (f *finishOrder) StageStarted(string, int, int64) {}
func (f *finishOrder) StageDone(string)                {}
func (f *finishOrder) ItemDone(ev *ItemEvent) {
	stage, outcome, in := ev.Stage, string(ev.Outcome), steps.Input{Index: ev.Index, Item: ev.Item}
	_, _, _ = stage, outcome, in
	if stage == f.stage && outcome == "succeeded" && in.Index > 0 {
		close(f.g[in.Index-1])
	}
}

func TestCompletionOrder(t *testing.T) {
	g := newGates(4)
	step := fn(steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
		k := in.Item.(int64)
		if k < 3 {
			<-g[k]
		}
		return k, nil
	}))
	col := &collector{keep: true}
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 4}}
  - {name: work, step: fn, with: {fn: `+step+`}, workers: 4, order: completion}
  - {name: out, sink: {collect: `+fn(col)+`}}
`)
	runT(t, context.Background(), p, config{}, &finishOrder{g: g, stage: "work"})
	if got := col.items(); !slices.Equal(got, []any{int64(3), int64(2), int64(1), int64(0)}) {
		t.Fatalf("got %v, want completion order 3 2 1 0", got)
	}
}

func TestKeyOrder(t *testing.T) {
	var mu sync.Mutex
	inflight := map[int64]int{}
	var maxParallel, running atomic.Int64
	step := fn(steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
		k := in.Item.(int64) % 5
		mu.Lock()
		inflight[k]++
		bad := inflight[k] > 1
		mu.Unlock()
		n := running.Add(1)
		for {
			m := maxParallel.Load()
			if n <= m || maxParallel.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(time.Duration(in.Item.(int64)*7%3) * time.Millisecond)
		running.Add(-1)
		mu.Lock()
		inflight[k]--
		mu.Unlock()
		if bad {
			return nil, fmt.Errorf("two items of key %d ran at once", k)
		}
		return in.Item, nil
	}))
	col := &collector{keep: true}
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 200}}
  - name: work
    step: fn
    with: {fn: `+step+`}
    workers: 8
    order: key
    key: "${ item % 5 }"
  - {name: out, sink: {collect: `+fn(col)+`}}
`)
	rep := runT(t, context.Background(), p, config{}, nil)
	if rep.Status != "succeeded" {
		t.Fatalf("%s: %s", rep.Status, rep.Reason)
	}
	last := map[int64]int64{}
	for _, x := range col.indexes() {
		k := x % 5
		if prev, ok := last[k]; ok && prev > x {
			t.Fatalf("key %d: item %d left after item %d", k, x, prev)
		}
		last[k] = x
	}
	if len(col.indexes()) != 200 {
		t.Fatalf("got %d items", len(col.indexes()))
	}
	if maxParallel.Load() < 2 {
		t.Errorf("different keys never ran in parallel (max %d at once)", maxParallel.Load())
	}
}

func TestReorderWindowBoundsStarts(t *testing.T) {
	release := make(chan struct{})
	var started atomic.Int64
	step := fn(steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
		started.Add(1)
		if in.Index == 0 {
			<-release
		}
		return in.Item, nil
	}))
	col := &collector{keep: true}
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 1000}}
  - {name: work, step: fn, with: {fn: `+step+`}, workers: 8}
  - {name: out, sink: {collect: `+fn(col)+`}}
`)
	const window = 16
	done := make(chan struct{})
	go func() {
		defer close(done)
		rep := runT(t, context.Background(), p, config{window: window}, nil)
		if rep.Status != "succeeded" {
			t.Errorf("%s: %s", rep.Status, rep.Reason)
		}
	}()
	for started.Load() < window {
		time.Sleep(time.Millisecond)
	}
	// Give a wrong engine the chance to start more.
	time.Sleep(50 * time.Millisecond)
	if n := started.Load(); n != window {
		t.Errorf("%d items started while the head was blocked; the window is %d", n, window)
	}
	if n := col.count.Load(); n != 0 {
		t.Errorf("%d items left before the head", n)
	}
	close(release)
	<-done
	if got := col.indexes(); len(got) != 1000 || !slices.IsSorted(got) {
		t.Errorf("got %d items, sorted %v", len(got), slices.IsSorted(got))
	}
}

func TestCompleteFirstCancelsTheRest(t *testing.T) {
	var started atomic.Int64
	step := fn(steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
		started.Add(1)
		d := time.Hour
		if in.Index == 5 {
			d = 0 // the winner
		}
		select {
		case <-time.After(d):
			return in.Item, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}))
	col := &collector{keep: true}
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 100}}
  - {name: work, step: fn, with: {fn: `+step+`}, workers: 8, complete: first, order: completion}
  - {name: out, sink: {collect: `+fn(col)+`}}
`)
	rep := runT(t, context.Background(), p, config{}, nil)
	w := stageOf(t, rep, "work")
	if rep.Status != "succeeded" || w.Succeeded != 1 || w.Cancelled != 99 || w.Out != 1 {
		t.Fatalf("status %s, work %+v", rep.Status, *w)
	}
	if got := col.items(); !slices.Equal(got, []any{int64(5)}) {
		t.Fatalf("sink got %v, want the winner only", got)
	}
	if n := started.Load(); n > 16 {
		t.Errorf("%d items started; pending items must never start once the first succeeded", n)
	}
}

func TestCompleteFirstN(t *testing.T) {
	step := fn(steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
		if in.Index%10 != 3 {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return in.Item, nil
	}))
	col := &collector{keep: true}
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 100}}
  - {name: work, step: fn, with: {fn: `+step+`}, workers: 50, complete: {first: 3}}
  - {name: out, sink: {collect: `+fn(col)+`}}
`)
	rep := runT(t, context.Background(), p, config{}, nil)
	w := stageOf(t, rep, "work")
	if w.Succeeded != 3 || w.Cancelled != 97 || rep.Status != "succeeded" {
		t.Fatalf("work %+v, status %s", *w, rep.Status)
	}
	if got := col.indexes(); len(got) != 3 || !slices.IsSorted(got) {
		t.Fatalf("sink got %v, want 3 in input order", got)
	}
	if src := stageOf(t, rep, "src"); src.Cancelled == 0 && src.Succeeded == 100 && src.Out != 100 {
		t.Errorf("source: %+v", *src)
	}
}

func TestOnErrorFailStopsTheRun(t *testing.T) {
	var after atomic.Int64
	step := fn(steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
		if in.Index == 10 {
			return nil, steps.Errorf("http_4xx", "404 Not Found")
		}
		if in.Index > 10 {
			after.Add(1)
		}
		select {
		case <-time.After(time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return in.Item, nil
	}))
	col := &collector{}
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 100000}}
  - {name: work, step: fn, with: {fn: `+step+`}, workers: 4}
  - {name: out, sink: {collect: `+fn(col)+`}}
`)
	rep := runT(t, context.Background(), p, config{}, nil)
	w := stageOf(t, rep, "work")
	if rep.Status != "failed" || w.Failed != 1 || w.Cancelled == 0 {
		t.Fatalf("status %s, work %+v", rep.Status, *w)
	}
	if !strings.Contains(rep.Reason, "item 10") || !strings.Contains(rep.Reason, "404 Not Found") {
		t.Errorf("reason %q does not name the item and error", rep.Reason)
	}
	if len(rep.Failures) != 1 || rep.Failures[0].Index != 10 || rep.Failures[0].Class != "http_4xx" || rep.Failures[0].Outcome != "failed" {
		t.Errorf("failures %+v", rep.Failures)
	}
	if after.Load() > 2000 {
		t.Errorf("%d items after the failure started; the run should stop", after.Load())
	}
	if col.closeErr == nil {
		t.Errorf("sink closed without the run error")
	}
}

func TestOnErrorSkipAndKeep(t *testing.T) {
	step := fn(steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
		if in.Index%10 == 0 {
			return nil, steps.Errorf("connection", "refused %d", in.Index)
		}
		return in.Item, nil
	}))
	for _, mode := range []string{"skip", "keep"} {
		t.Run(mode, func(t *testing.T) {
			col := &collector{keep: true}
			p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 100}}
  - {name: work, step: fn, with: {fn: `+step+`}, workers: 4, on_error: `+mode+`}
  - {name: out, sink: {collect: `+fn(col)+`}}
`)
			rep := runT(t, context.Background(), p, config{}, nil)
			w := stageOf(t, rep, "work")
			if rep.Status != "succeeded" || rep.ExitCode != 0 {
				t.Fatalf("status %s %q", rep.Status, rep.Reason)
			}
			if len(rep.Failures) != 10 {
				t.Fatalf("%d failures listed", len(rep.Failures))
			}
			switch mode {
			case "skip":
				if w.Skipped != 10 || w.Succeeded != 90 || w.Out != 90 || len(col.items()) != 90 {
					t.Errorf("work %+v, sink %d", *w, len(col.items()))
				}
				if rep.Failures[0].Outcome != "skipped" {
					t.Errorf("outcome %q", rep.Failures[0].Outcome)
				}
			case "keep":
				if w.Failed != 10 || w.Succeeded != 90 || w.Out != 100 || len(col.items()) != 100 {
					t.Errorf("work %+v, sink %d", *w, len(col.items()))
				}
				r := col.recs[20]
				m, ok := r.Item.(map[string]any)
				if !ok || m["error"] != "refused 20" || m["class"] != "connection" || m["input"] != int64(20) || r.Err == nil {
					t.Errorf("kept record %+v", r)
				}
			}
		})
	}
}

func TestMaxErrors(t *testing.T) {
	step := fn(steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
		if in.Index%2 == 0 {
			return nil, errors.New("odd one out")
		}
		return in.Item, nil
	}))
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 1000}}
  - {name: work, step: fn, with: {fn: `+step+`}, workers: 1, on_error: skip, max_errors: 3}
`)
	rep := runT(t, context.Background(), p, config{}, nil)
	w := stageOf(t, rep, "work")
	// Items already finished when the fourth failure is seen are accounted
	// as they are; the rest is cancelled.
	if rep.Status != "failed" || w.Skipped < 4 || w.Cancelled == 0 || !strings.Contains(rep.Reason, "4 items failed, more than max_errors: 3") {
		t.Fatalf("status %s %q, work %+v", rep.Status, rep.Reason, *w)
	}
}

func TestPanicBecomesItemError(t *testing.T) {
	step := fn(steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
		if in.Index == 3 {
			panic("index out of range [7]")
		}
		return in.Item, nil
	}))
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 10}}
  - {name: work, step: fn, with: {fn: `+step+`}, on_error: skip}
`)
	rep := runT(t, context.Background(), p, config{}, nil)
	if len(rep.Failures) != 1 || !strings.Contains(rep.Failures[0].Error, "panic: index out of range [7]") || rep.Failures[0].Class != "panic" {
		t.Fatalf("failures %+v", rep.Failures)
	}
}

func TestWhenFilters(t *testing.T) {
	col := &collector{keep: true}
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 10}}
  - {name: work, step: pass, when: "${ item % 2 == 0 }"}
  - {name: out, sink: {collect: `+fn(col)+`}}
`)
	rep := runT(t, context.Background(), p, config{}, nil)
	w := stageOf(t, rep, "work")
	if w.Filtered != 5 || w.Succeeded != 5 || !slices.Equal(col.indexes(), []int64{0, 2, 4, 6, 8}) {
		t.Fatalf("work %+v, sink %v", *w, col.indexes())
	}
}

func TestBarrierFiltersWhatItDoesNotEmit(t *testing.T) {
	col := &collector{keep: true}
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 100}}
  - {name: top, step: topn, with: {n: 5}}
  - {name: out, sink: {collect: `+fn(col)+`}}
`)
	rep := runT(t, context.Background(), p, config{}, nil)
	w := stageOf(t, rep, "top")
	if w.In != 100 || w.Succeeded != 5 || w.Filtered != 95 || len(col.items()) != 5 {
		t.Fatalf("top %+v", *w)
	}
}

// The guide's map(timeout=) example: results before the slow item are
// printed, then the run fails with a timeout.
func TestDeadlineLikeMapTimeout(t *testing.T) {
	step := fn(steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
		n := in.Item.(int64)
		if n == 15 {
			<-ctx.Done() // far slower than the deadline
			return nil, ctx.Err()
		}
		return n * 10, nil
	}))
	var out strings.Builder
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {src: `+fn(funcSource{n: 5, f: func(ctx context.Context, emit func(any) error) error {
		for _, x := range []int64{1, 2, 3, 15, 4} {
			if err := emit(x); err != nil {
				return err
			}
		}
		return nil
	}})+`}}
  - {name: fetch, step: fn, with: {fn: `+step+`}, workers: 4, deadline: 1s}
`)
	// On the real clock (virtual_test.go has the exact times): the
	// deadline leaves the instant items a second, which a loaded -race
	// run cannot use up.
	rep, err := runPipeline(context.Background(), p, Options{Registry: reg, Stdout: &out}, config{})
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, rep)
	if out.String() != "10\n20\n30\n" {
		t.Errorf("printed %q, want 10 20 30", out.String())
	}
	f := stageOf(t, rep, "fetch")
	if rep.Status != "timed_out" || rep.ExitCode != 1 || f.Succeeded != 3 || f.Cancelled != 2 || f.TimedOut != 2 {
		t.Errorf("status %s, fetch %+v", rep.Status, *f)
	}
	if !strings.Contains(rep.Reason, `stage "fetch" did not finish within its deadline of 1s`) {
		t.Errorf("reason %q", rep.Reason)
	}
}

func TestAttemptTimeoutAndRetries(t *testing.T) {
	var calls atomic.Int64
	step := fn(steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
		calls.Add(1)
		if in.Index == 1 {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return in.Item, nil
	}))
	clk := newFakeClock()
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 3}}
  - name: work
    step: fn
    with: {fn: `+step+`}
    timeout: 20ms
    retry: {attempts: 3, backoff: 100ms, jitter: 0}
    on_error: skip
`)
	rep := runT(t, context.Background(), p, config{clock: clk}, nil)
	w := stageOf(t, rep, "work")
	if w.Skipped != 1 || w.TimedOut != 1 || w.Retries != 2 || w.Succeeded != 2 || calls.Load() != 5 {
		t.Fatalf("work %+v, calls %d", *w, calls.Load())
	}
	f := rep.Failures[0]
	if f.Attempts != 3 || f.Class != "timeout" || !strings.Contains(f.Error, "timed out after 20ms") {
		t.Errorf("failure %+v", f)
	}
}

func TestRetryBackoff(t *testing.T) {
	var mu sync.Mutex
	tries := map[int64]int{}
	step := fn(steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
		mu.Lock()
		tries[in.Index]++
		n := tries[in.Index]
		mu.Unlock()
		switch in.Index {
		case 0: // succeeds on the third attempt
			if n < 3 {
				return nil, steps.Errorf("http_5xx", "503")
			}
		case 1: // asks for a long wait
			if n < 2 {
				return nil, &steps.Error{Err: errors.New("429"), Class: "http_429", RetryAfter: 7 * time.Second}
			}
		case 2: // permanent: never retried
			return nil, steps.Permanent(errors.New("bad input"))
		case 3: // not a class worth a retry
			return nil, steps.Errorf("http_4xx", "404")
		}
		return in.Item, nil
	}))
	clk := newFakeClock()
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 4}}
  - name: work
    step: fn
    with: {fn: `+step+`}
    workers: 1
    retry: {attempts: 5, backoff: 100ms, max_backoff: 150ms, jitter: 0, on: [http_5xx, http_429]}
    on_error: skip
`)
	rep := runT(t, context.Background(), p, config{clock: clk}, nil)
	w := stageOf(t, rep, "work")
	// Item 1's Retry-After (7s) is past max_backoff (150ms): it fails at
	// once rather than wait an hour it was not allowed, or retry early.
	if w.Succeeded != 1 || w.Skipped != 3 || w.Retries != 2 {
		t.Fatalf("work %+v", *w)
	}
	want := []time.Duration{100 * time.Millisecond, 150 * time.Millisecond}
	if got := clk.recorded(); !slices.Equal(got, want) {
		t.Errorf("waits %v, want %v", got, want)
	}
	for _, f := range rep.Failures {
		if f.Attempts != 1 {
			t.Errorf("item %d: %d attempts, want 1 (no retry)", f.Index, f.Attempts)
		}
		if f.Index == 1 && !strings.Contains(f.Error, "longer than retry.max_backoff") {
			t.Errorf("item 1: %s", f.Error)
		}
	}
}

// A Retry-After within max_backoff is waited in full, even past the
// exponential backoff.
func TestRetryAfterWithinMaxBackoff(t *testing.T) {
	var n atomic.Int32
	step := fn(steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
		if n.Add(1) == 1 {
			return nil, &steps.Error{Err: errors.New("429"), Class: "http_429", RetryAfter: 7 * time.Second}
		}
		return in.Item, nil
	}))
	clk := newFakeClock()
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 1}}
  - name: work
    step: fn
    with: {fn: `+step+`}
    retry: {attempts: 2, backoff: 100ms, jitter: 0}
`)
	rep := runT(t, context.Background(), p, config{clock: clk}, nil)
	if w := stageOf(t, rep, "work"); w.Succeeded != 1 || w.Retries != 1 {
		t.Fatalf("work %+v", *w)
	}
	if got := clk.recorded(); !slices.Equal(got, []time.Duration{7 * time.Second}) {
		t.Errorf("waits %v, want [7s]", got)
	}
}

func TestRetryJitter(t *testing.T) {
	step := fn(steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
		return nil, errors.New("flaky")
	}))
	clk := newFakeClock()
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 50}}
  - name: work
    step: fn
    with: {fn: `+step+`}
    workers: 1
    retry: {attempts: 2, backoff: 1s, jitter: 0.2}
    on_error: skip
`)
	runT(t, context.Background(), p, config{clock: clk}, nil)
	waits := clk.recorded()
	if len(waits) != 50 {
		t.Fatalf("%d waits", len(waits))
	}
	distinct := map[time.Duration]bool{}
	for _, d := range waits {
		if d < 800*time.Millisecond || d > 1200*time.Millisecond {
			t.Errorf("wait %v outside 1s +/- 20%%", d)
		}
		distinct[d] = true
	}
	if len(distinct) < 10 {
		t.Errorf("only %d distinct waits: no jitter", len(distinct))
	}
}

func TestStageRateLimit(t *testing.T) {
	clk := newFakeClock()
	start := clk.Now()
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 21}}
  - {name: work, step: pass, workers: 1, rate: 10/s}
`)
	runT(t, context.Background(), p, config{clock: clk}, nil)
	// 21 starts at 10/s with a burst of 1: the last is due 2s after the first.
	if got := clk.elapsed(start); got != 2*time.Second {
		t.Errorf("virtual time %v, want 2s", got)
	}
}

func TestSharedLimitAcrossStages(t *testing.T) {
	clk := newFakeClock()
	start := clk.Now()
	p := parse(t, `
version: 1
limits:
  api: {rate: 10/s}
stages:
  - {name: src, source: {nums: 10}}
  - {name: a, step: pass, workers: 1, limit: [api]}
  - {name: b, step: pass, workers: 1, limit: [api]}
`)
	runT(t, context.Background(), p, config{clock: clk}, nil)
	// 20 starts share 10/s: 1.9s, where two separate limits would take 0.9s.
	if got := clk.elapsed(start); got != 1900*time.Millisecond {
		t.Errorf("virtual time %v, want 1.9s", got)
	}
}

func TestKeyedLimit(t *testing.T) {
	clk := newFakeClock()
	start := clk.Now()
	p := parse(t, `
version: 1
limits:
  host: {rate: 10/s, key: "${ item % 3 }", max_keys: 2}
stages:
  - {name: src, source: {nums: 15}}
  - {name: a, step: pass, workers: 1, limit: host}
`)
	rep := runT(t, context.Background(), p, config{clock: clk}, nil)
	if rep.Status != "succeeded" {
		t.Fatal(rep.Reason)
	}
	// Keys rotate 0 1 2 with only two buckets kept, so each bucket is
	// evicted before its key comes back: nobody ever waits.
	if got := clk.elapsed(start); got != 0 {
		t.Errorf("virtual time %v, want 0", got)
	}
}

func TestKeyedLimitBucketsAreBounded(t *testing.T) {
	clk := newFakeClock()
	key, _ := compileT("${ item.host }")
	l := newLimit("host", &spec.Rate{N: 1, Per: time.Second}, 1, 1, key, 3, clk)
	lm := &limiter{limits: []*limit{l}}
	ctx := context.Background()
	for i := range 100 {
		var h held
		keys := []string{fmt.Sprint(i % 7)}
		if err := lm.acquire(ctx, keys, &h); err != nil {
			t.Fatal(err)
		}
		lm.done(&h)
		if n := l.keys(); n > 3 {
			t.Fatalf("%d buckets kept, max_keys is 3", n)
		}
	}
	// Same key twice in a row: the bucket is kept and its rate applies.
	start := clk.Now()
	for range 3 {
		var h held
		if err := lm.acquire(ctx, []string{"a"}, &h); err != nil {
			t.Fatal(err)
		}
		lm.done(&h)
	}
	if got := clk.elapsed(start); got != 2*time.Second {
		t.Errorf("3 starts of one key at 1/s took %v, want 2s", got)
	}
}

func TestConcurrencyLimitShared(t *testing.T) {
	var running, peak atomic.Int64
	step := fn(steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			m := peak.Load()
			if n <= m || peak.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(200 * time.Microsecond)
		return in.Item, nil
	}))
	p := parse(t, `
version: 1
limits:
  db: {concurrency: 2}
stages:
  - {name: src, source: {nums: 200}}
  - {name: a, step: fn, with: {fn: `+step+`}, workers: 8, limit: db}
  - {name: b, step: fn, with: {fn: `+step+`}, workers: 8, limit: db}
`)
	rep := runT(t, context.Background(), p, config{}, nil)
	if rep.Status != "succeeded" {
		t.Fatal(rep.Reason)
	}
	if peak.Load() > 2 {
		t.Errorf("%d items ran at once under concurrency: 2", peak.Load())
	}
}

func TestInterrupt(t *testing.T) {
	var started atomic.Int64
	step := fn(steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
		started.Add(1)
		<-ctx.Done()
		return nil, ctx.Err()
	}))
	col := &collector{}
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 10000000}}
  - {name: work, step: fn, with: {fn: `+step+`}, workers: 4}
  - {name: out, sink: {collect: `+fn(col)+`}}
`)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for started.Load() < 4 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	rep := runT(t, ctx, p, config{}, nil)
	w := stageOf(t, rep, "work")
	if rep.Status != "interrupted" || rep.ExitCode != 130 || w.Cancelled != w.In || w.In < 4 {
		t.Fatalf("status %s, work %+v", rep.Status, *w)
	}
	if col.closed != 1 || col.closeErr == nil {
		t.Errorf("sink closed %d times, err %v", col.closed, col.closeErr)
	}
}

func TestPipelineTimeout(t *testing.T) {
	step := fn(steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}))
	p := parse(t, `
version: 1
timeout: 50ms
stages:
  - {name: src, source: {nums: 100}}
  - {name: work, step: fn, with: {fn: `+step+`}, workers: 2}
`)
	rep := runT(t, context.Background(), p, config{}, nil)
	w := stageOf(t, rep, "work")
	if rep.Status != "timed_out" || w.TimedOut != w.Cancelled || w.Cancelled != w.In || !strings.Contains(rep.Reason, "pipeline timeout of 50ms") {
		t.Fatalf("status %s %q, work %+v", rep.Status, rep.Reason, *w)
	}
}

func TestSecretsRedacted(t *testing.T) {
	step := fn(steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
		return nil, fmt.Errorf("GET https://api/?token=hunter2hunter2 failed")
	}))
	p := parse(t, `
version: 1
vars:
  token: {default: hunter2hunter2, secret: true}
stages:
  - {name: src, source: {src: `+fn(sourceFunc(func(ctx context.Context, emit func(any) error) error {
		return emit(map[string]any{"url": "https://api/?token=hunter2hunter2"})
	}))+`}}
  - {name: work, step: fn, with: {fn: `+step+`}}
`)
	rep := runT(t, context.Background(), p, config{}, nil)
	s := fmt.Sprintf("%v %v", rep.Reason, rep.Failures)
	if strings.Contains(s, "hunter2") || !strings.Contains(s, "token=***") {
		t.Errorf("secret not redacted: %s", s)
	}
}

func TestFailuresBounded(t *testing.T) {
	step := fn(steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
		return nil, errors.New("no")
	}))
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 1500}}
  - {name: work, step: fn, with: {fn: `+step+`}, on_error: skip}
`)
	rep := runT(t, context.Background(), p, config{}, nil)
	if len(rep.Failures) != MaxFailures || rep.FailuresOmitted != 500 {
		t.Fatalf("%d failures, %d omitted", len(rep.Failures), rep.FailuresOmitted)
	}
}

func TestSetupErrors(t *testing.T) {
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 3}}
  - {name: heavy, step: pass, mode: process}
`)
	_, err := Run(context.Background(), p, Options{Registry: reg})
	var se *SetupError
	if !errors.As(err, &se) || se.Stage != "heavy" || !strings.Contains(err.Error(), "mode: process") {
		t.Errorf("err %v", err)
	}

	p = parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 3}}
  - {name: model, step: broken}
`)
	_, err = Run(context.Background(), p, Options{Registry: reg})
	if !errors.As(err, &se) || se.Stage != "model" || !strings.Contains(err.Error(), "model file is missing") {
		t.Errorf("err %v", err)
	}

	p = parse(t, `
version: 1
stages:
  - {name: src, source: {src: nosuchfn}}
`)
	_, err = Run(context.Background(), p, Options{Registry: reg})
	if !errors.As(err, &se) || se.Stage != "src" {
		t.Errorf("err %v", err)
	}
	var ds conf.Diags
	_ = errors.As(err, &ds)
}

type fakeRunner struct {
	calls  atomic.Int64
	closed atomic.Int64
}

func (f *fakeRunner) Do(ctx context.Context, in steps.Input, _ *Attempt) (any, error) {
	f.calls.Add(1)
	return in.Item, nil
}
func (f *fakeRunner) Close() error { f.closed.Add(1); return nil }

func TestProcessModeUsesFactory(t *testing.T) {
	fr := &fakeRunner{}
	var gotWorkers int
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 50}}
  - {name: heavy, step: pass, mode: process, workers: 3}
`)
	var out strings.Builder
	rep, err := Run(context.Background(), p, Options{Registry: reg, Stdout: &out, Runners: Runners{spec.ModeProcess: func(sr StageRun) (Runner, error) {
		gotWorkers = sr.Workers
		return fr, nil
	}}})
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, rep)
	h := stageOf(t, rep, "heavy")
	if fr.calls.Load() != 50 || fr.closed.Load() != 1 || gotWorkers != 3 || h.Mode != "process" || h.Workers != 3 {
		t.Errorf("calls %d closed %d workers %d stage %+v", fr.calls.Load(), fr.closed.Load(), gotWorkers, *h)
	}
	if strings.Count(out.String(), "\n") != 50 {
		t.Errorf("default sink printed %q", out.String())
	}
}

func TestSourceErrorFailsTheRun(t *testing.T) {
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {src: `+fn(sourceFunc(func(ctx context.Context, emit func(any) error) error {
		emit(int64(1))
		return errors.New("logs/app.log: permission denied")
	}))+`}}
  - {name: work, step: pass}
`)
	rep := runT(t, context.Background(), p, config{}, nil)
	if rep.Status != "failed" || !strings.Contains(rep.Reason, "permission denied") {
		t.Fatalf("status %s %q", rep.Status, rep.Reason)
	}
}

func TestEmptyAndStepless(t *testing.T) {
	col := &collector{keep: true}
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 0}}
  - {name: work, step: pass}
  - {name: out, sink: {collect: `+fn(col)+`}}
`)
	rep := runT(t, context.Background(), p, config{}, nil)
	if rep.Status != "succeeded" || len(col.items()) != 0 || col.closed != 1 {
		t.Fatalf("status %s, sink %v closed %d", rep.Status, col.items(), col.closed)
	}
	var out strings.Builder
	p = parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 3}, when: "${ item != 1 }"}
`)
	rep, err := Run(context.Background(), p, Options{Registry: reg, Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, rep)
	if out.String() != "0\n2\n" || len(rep.Stages) != 2 || rep.Stages[1].Name != "print" || rep.Stages[0].Filtered != 1 {
		t.Fatalf("printed %q, stages %+v", out.String(), rep.Stages)
	}
}

// A source that never returns by itself (one reading a terminal) does not
// hold up an interrupted run.
func TestInterruptDoesNotWaitForABlockedSource(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {src: `+fn(sourceFunc(func(ctx context.Context, emit func(any) error) error {
		emit("first")
		<-release // ignores ctx
		return emit("late")
	}))+`}}
  - {name: work, step: pass}
`)
	ctx, cancel := context.WithCancel(context.Background())
	ev := &cancelOn{stage: "work", cancel: cancel}
	rep := runT(t, ctx, p, config{}, ev)
	if rep.Status != "interrupted" || rep.Stages[0].In != 1 {
		t.Fatalf("status %s, source %+v", rep.Status, *rep.Stages[0])
	}
}

// cancelOn cancels the run once an item finished in stage.
type cancelOn struct {
	stage  string
	cancel context.CancelFunc
}

func (c *cancelOn) StageStarted(string, int, int64) {}
func (c *cancelOn) StageDone(string)                {}
func (c *cancelOn) ItemDone(ev *ItemEvent) {
	stage, outcome, in := ev.Stage, string(ev.Outcome), steps.Input{Index: ev.Index, Item: ev.Item}
	_, _, _ = stage, outcome, in
	if stage == c.stage {
		c.cancel()
	}
}

// indexEvents records the indices of one stage's events per outcome.
type indexEvents struct {
	stage string
	mu    sync.Mutex
	idx   map[string][]int64
}

func (e *indexEvents) StageStarted(string, int, int64) {}
func (e *indexEvents) StageDone(string)                {}
func (e *indexEvents) ItemDone(ev *ItemEvent) {
	stage, outcome, in := ev.Stage, string(ev.Outcome), steps.Input{Index: ev.Index, Item: ev.Item}
	_, _, _ = stage, outcome, in
	if stage != e.stage {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.idx == nil {
		e.idx = map[string][]int64{}
	}
	e.idx[outcome] = append(e.idx[outcome], in.Index)
}

// The items a barrier does not emit are named in their events: the indices
// it took less those it emitted.
func TestBarrierEventsNameHeldItems(t *testing.T) {
	ev := &indexEvents{stage: "top"}
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 200}}
  - {name: top, step: topn, with: {n: 5}}
`)
	rep := runT(t, context.Background(), p, config{}, ev)
	if w := stageOf(t, rep, "top"); w.Filtered != 195 || w.Succeeded != 5 {
		t.Fatalf("top %+v", *w)
	}
	var want []int64
	for i := int64(5); i < 200; i++ {
		want = append(want, i)
	}
	got := ev.idx["filtered"]
	if !slices.Equal(got, want) {
		t.Errorf("filtered events name %v, want 5..199", got)
	}
	if ok := ev.idx["succeeded"]; !slices.Equal(ok, []int64{0, 1, 2, 3, 4}) {
		t.Errorf("succeeded events name %v, want 0..4", ok)
	}
}

func TestIndexSet(t *testing.T) {
	var s indexSet
	for _, i := range []int64{3, 64, 0, 200, 3, -1, maxIndexed} {
		s.add(i)
	}
	s.remove(64)
	s.remove(1000) // never added: no effect
	var got []int64
	s.take(6, func(i int64) { got = append(got, i) })
	// 0, 3, 200 are held; the rest of the six cannot be named.
	if want := []int64{0, 3, 200, -1, -1, -1}; !slices.Equal(got, want) {
		t.Errorf("take gave %v, want %v", got, want)
	}
	got = nil
	s.take(2, func(i int64) { got = append(got, i) })
	if want := []int64{0, 3}; !slices.Equal(got, want) {
		t.Errorf("take(2) gave %v, want %v", got, want)
	}
}

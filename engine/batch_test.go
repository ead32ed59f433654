package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
)

// batchRunner is a BatchRunner that answers each call's items from another
// goroutine, last item first, so that the engine must hand on only the
// answered prefix of a chunk; f gives an item's outcome at its nth attempt.
type batchRunner struct {
	f func(in steps.Input, attempt int) (any, error)
	// block, when set, keeps the items it selects unanswered until the
	// call's context ends.
	block func(in steps.Input) bool

	mu       sync.Mutex
	calls    int // DoBatch calls
	batched  int // items given to DoBatch
	biggest  int // most items in one call
	doCalls  int
	attempts map[int64]int
	closed   bool
}

func (r *batchRunner) attempt(in steps.Input) (any, error) {
	r.mu.Lock()
	if r.attempts == nil {
		r.attempts = map[int64]int{}
	}
	r.attempts[in.Index]++
	n := r.attempts[in.Index]
	r.mu.Unlock()
	return r.f(in, n)
}

func (r *batchRunner) Do(ctx context.Context, in steps.Input, at *Attempt) (any, error) {
	r.mu.Lock()
	r.doCalls++
	r.mu.Unlock()
	at.Worker = "one by one"
	return r.attempt(in)
}

func (r *batchRunner) DoBatch(ctx context.Context, items []BatchItem, done func(int, any, error)) {
	r.mu.Lock()
	r.calls++
	r.batched += len(items)
	r.biggest = max(r.biggest, len(items))
	r.mu.Unlock()
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := len(items) - 1; i >= 0; i-- {
			if v, ran, err := r.try(ctx, &wg, items, i, "pid 7", 1, done); ran {
				done(i, v, err)
			}
		}
	})
	wg.Wait()
}

// try runs items[i] as the worker named worker would, unless r.block holds
// it: then the item is answered through done only once ctx ends, and try
// reports that it did not run.
func (r *batchRunner) try(ctx context.Context, wg *sync.WaitGroup, items []BatchItem, i int, worker string, redelivered int, done func(int, any, error)) (v any, ran bool, err error) {
	it := items[i]
	if r.block != nil && r.block(it.In) {
		wg.Go(func() {
			<-ctx.Done()
			done(i, nil, fmt.Errorf("stopped: %w", ctx.Err()))
		})
		return nil, false, nil
	}
	it.At.Worker, it.At.Redelivered = worker, redelivered
	v, err = r.attempt(it.In)
	return v, true, err
}

func (r *batchRunner) Close() error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	return nil
}

// runBatchT runs p with r as the runner of mode: process.
func runBatchT(t *testing.T, ctx context.Context, p *spec.Pipeline, r *batchRunner, cfg config, ev EventSink) (*report.Report, string) {
	t.Helper()
	return runProcessT(t, ctx, p, r, r, cfg, ev)
}

// runProcessT runs p with runner as the runner of mode: process; b is the
// batchRunner inside it, which must have been closed by the end.
func runProcessT(t *testing.T, ctx context.Context, p *spec.Pipeline, runner Runner, b *batchRunner, cfg config, ev EventSink) (*report.Report, string) {
	t.Helper()
	var out strings.Builder
	rep, err := runPipeline(ctx, p, Options{Registry: reg, Stdout: &out, Events: ev,
		Runners: Runners{spec.ModeProcess: func(StageRun) (Runner, error) { return runner, nil }}}, cfg)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	checkReport(t, rep)
	if !b.closed {
		t.Error("the runner was not closed")
	}
	return rep, out.String()
}

func double(in steps.Input, _ int) (any, error) { return in.Item.(int64) * 2, nil }

// passPipeline is n numbers through a two-worker process stage of the
// runner under test, printed as JSON lines.
func passPipeline(t *testing.T, n int) *spec.Pipeline {
	t.Helper()
	return parse(t, fmt.Sprintf(`
version: 1
stages:
  - {name: src, source: {nums: %d}}
  - {name: work, step: pass, mode: process, workers: 2}
  - {name: out, sink: {print: jsonl}}
`, n))
}

func TestBatchRunnerTakesItemsManyPerCallInOrder(t *testing.T) {
	r := &batchRunner{f: double}
	p := passPipeline(t, 5000)
	rep, out := runBatchT(t, context.Background(), p, r, config{}, nil)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5000 {
		t.Fatalf("%d lines out", len(lines))
	}
	for i, l := range lines {
		if want := fmt.Sprint(2 * i); l != want {
			t.Fatalf("line %d: %q, want %q (order: input)", i, l, want)
		}
	}
	if r.doCalls != 0 || r.batched != 5000 || r.biggest < 2 || r.calls >= 5000 {
		t.Errorf("Do %d; DoBatch %d calls of %d items, %d at most", r.doCalls, r.calls, r.batched, r.biggest)
	}
	w := stageOf(t, rep, "work")
	if w.Succeeded != 5000 || w.ByWorker["pid 7"] != 5000 {
		t.Errorf("work: %+v", *w)
	}
}

func TestBatchRunnerRetriesFailedItemsOneByOne(t *testing.T) {
	// Every 7th item fails its first attempt; the retry policy runs it
	// again through Do, after the backoff, counted as a retry.
	r := &batchRunner{f: func(in steps.Input, attempt int) (any, error) {
		if in.Index%7 == 0 && attempt == 1 {
			return nil, &steps.Error{Err: errors.New("busy"), Class: "http_5xx"}
		}
		if in.Index == 10 {
			return nil, steps.Permanent(errors.New("item 10 is bad"))
		}
		return in.Item, nil
	}}
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 100}}
  - name: work
    step: pass
    mode: process
    workers: 2
    retry: {attempts: 3, backoff: 1s, jitter: 0}
    on_error: skip
  - {name: out, sink: {print: jsonl}}
`)
	clk := newFakeClock()
	ev := &attemptEvents{attempts: map[int64][]Attempt{}}
	rep, out := runBatchT(t, context.Background(), p, r, config{clock: clk}, ev)
	w := stageOf(t, rep, "work")
	if w.Succeeded != 99 || w.Skipped != 1 || w.Retries != 15 || r.doCalls != 15 {
		t.Errorf("work: %+v; Do calls %d", *w, r.doCalls)
	}
	if n := strings.Count(out, "\n"); n != 99 {
		t.Errorf("%d lines out", n)
	}
	sleeps := clk.recorded()
	if len(sleeps) != 15 || sleeps[0] != time.Second {
		t.Errorf("backoffs %v", sleeps)
	}
	if a := ev.attempts[7]; len(a) != 2 || a[0].Worker != "pid 7" || a[0].Class != "http_5xx" || a[1].Worker != "one by one" || a[0].Start.IsZero() || a[0].End.Before(a[0].Start) {
		t.Errorf("attempts of item 7: %+v", a)
	}
	if a := ev.attempts[10]; len(a) != 1 || a[0].Redelivered != 1 {
		t.Errorf("attempts of item 10: %+v", a)
	}
}

func TestBatchRunnerFiltersBeforeTheCall(t *testing.T) {
	r := &batchRunner{f: double}
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 300}}
  - {name: work, step: pass, mode: process, workers: 2, when: "${ item % 3 == 0 }"}
  - {name: out, sink: {print: jsonl}}
`)
	rep, _ := runBatchT(t, context.Background(), p, r, config{}, nil)
	w := stageOf(t, rep, "work")
	if w.Succeeded != 100 || w.Filtered != 200 || r.batched != 100 {
		t.Errorf("work: %+v; %d items batched", *w, r.batched)
	}
}

func TestBatchRunnerNotUsedWhereAttemptsAreTimedLimitedOrUnordered(t *testing.T) {
	for _, extra := range []string{"timeout: 1m", "rate: 1000000/s", "order: key, key: \"${ item % 5 }\"", "order: completion", "complete: {first: 50}"} {
		r := &batchRunner{f: double}
		p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 50}}
  - {name: work, step: pass, mode: process, workers: 2, `+extra+`}
`)
		rep, _ := runBatchT(t, context.Background(), p, r, config{}, nil)
		if w := stageOf(t, rep, "work"); w.Succeeded != 50 || r.calls != 0 || r.doCalls != 50 {
			t.Errorf("%s: %d DoBatch calls, %d Do calls; %+v", extra, r.calls, r.doCalls, *w)
		}
	}
}

func TestBatchRunnerStopsWithTheRun(t *testing.T) {
	// Item 0 is answered; the others wait until the run is interrupted,
	// when DoBatch answers them with the context's error: they are
	// cancelled, not failed, and the run ends.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := &batchRunner{f: func(in steps.Input, _ int) (any, error) {
		cancel()
		return in.Item, nil
	}, block: func(in steps.Input) bool { return in.Index != 0 }}
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 2000}}
  - {name: work, step: pass, mode: process, workers: 2}
`)
	rep, _ := runBatchT(t, ctx, p, r, config{}, nil)
	w := stageOf(t, rep, "work")
	if rep.Status != "interrupted" || w.Failed != 0 || w.Cancelled == 0 {
		t.Errorf("status %s; work: %+v", rep.Status, *w)
	}
}

func TestBatchRunnerFailureStopsInInputOrder(t *testing.T) {
	// on_error: fail in order: input: what came before the failing item
	// is handed on, nothing after it.
	r := &batchRunner{f: func(in steps.Input, _ int) (any, error) {
		if in.Index == 600 {
			return nil, steps.Permanent(errors.New("item 600 is bad"))
		}
		return in.Item, nil
	}}
	p := passPipeline(t, 5000)
	rep, out := runBatchT(t, context.Background(), p, r, config{}, nil)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if rep.Status != "failed" || len(lines) != 600 || lines[599] != "599" {
		t.Errorf("status %s, %d lines out, last %q", rep.Status, len(lines), lines[len(lines)-1])
	}
}

// attemptEvents keeps the attempts of the items of stage "work".
type attemptEvents struct {
	mu       sync.Mutex
	attempts map[int64][]Attempt
}

func (e *attemptEvents) StageStarted(string, int, int64) {}
func (e *attemptEvents) StageDone(string)                {}
func (e *attemptEvents) ItemDone(ev *ItemEvent) {
	if ev.Stage != "work" {
		return
	}
	e.mu.Lock()
	e.attempts[ev.Index] = append([]Attempt(nil), ev.Attempts...)
	e.mu.Unlock()
}

// Chunks of a batch runner grow to maxBatch with few workers, but the
// window they need together (callers x cap) stays bounded with many: no
// more than batchWindow, or minBatchCap per caller as before chunks grew.
func TestBatchCapBoundsTheWindow(t *testing.T) {
	for workers := 1; workers <= 4096; workers++ {
		callers := batchCallers(workers)
		c := batchCap(callers)
		if c < minBatchCap || c > maxBatch {
			t.Fatalf("%d workers: cap %d outside [%d, %d]", workers, c, minBatchCap, maxBatch)
		}
		if callers*c > max(batchWindow, callers*minBatchCap) {
			t.Fatalf("%d workers: %d callers x %d items", workers, callers, c)
		}
	}
	if c := batchCap(batchCallers(2)); c != maxBatch {
		t.Errorf("2 workers: cap %d, want %d", c, maxBatch)
	}
}

package engine

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
)

// runsRunner is a batchRunner that answers in runs (RunsBatchRunner), as
// the process pool does: the call's items are cut into runs of runLen,
// answered by two goroutines at once, each run by one call of run, its
// items last first. Blocked items are answered one by one through done
// when the call's context ends, as the pool withdraws them.
type runsRunner struct {
	*batchRunner
	runLen int

	mu       sync.Mutex
	runCalls int
}

func (r *runsRunner) DoBatchRuns(ctx context.Context, items []BatchItem, done func(int, any, error), run func([]BatchAnswer)) {
	r.batchRunner.mu.Lock()
	r.calls++
	r.batched += len(items)
	r.biggest = max(r.biggest, len(items))
	r.batchRunner.mu.Unlock()
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Go(func() {
			var as []BatchAnswer
			for lo := g * r.runLen; lo < len(items); lo += 2 * r.runLen {
				as = as[:0]
				for i := min(lo+r.runLen, len(items)) - 1; i >= lo; i-- {
					if v, ran, err := r.try(ctx, &wg, items, i, "pid 8", 0, done); ran {
						as = append(as, BatchAnswer{I: i, V: v, Err: err})
					}
				}
				if len(as) > 0 {
					r.mu.Lock()
					r.runCalls++
					r.mu.Unlock()
					run(as)
				}
			}
		})
	}
	wg.Wait()
}

// runRunsT runs p with r as the runner of mode: process.
func runRunsT(t *testing.T, ctx context.Context, p *spec.Pipeline, r *runsRunner) (*report.Report, string) {
	t.Helper()
	return runProcessT(t, ctx, p, r, r.batchRunner, config{}, nil)
}

// Answers settled a run at a time, runs arriving out of order from two
// goroutines, with failed items among them: the output keeps the input's
// order, the failed items are skipped, every item is accounted once.
func TestBatchRunnerRunsSettleInInputOrder(t *testing.T) {
	bad := func(i int64) bool { return i%97 == 5 }
	r := &runsRunner{runLen: 13, batchRunner: &batchRunner{f: func(in steps.Input, _ int) (any, error) {
		if bad(in.Index) {
			return nil, steps.Permanent(fmt.Errorf("item %d is bad", in.Index))
		}
		return in.Item.(int64) * 2, nil
	}}}
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 5000}}
  - {name: work, step: pass, mode: process, workers: 2, on_error: skip}
  - {name: out, sink: {print: jsonl}}
`)
	rep, out := runRunsT(t, context.Background(), p, r)
	var want []string
	for i := range int64(5000) {
		if !bad(i) {
			want = append(want, fmt.Sprint(2*i))
		}
	}
	if got := strings.Split(strings.TrimSpace(out), "\n"); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("%d lines out, want %d in input order", len(got), len(want))
	}
	w := stageOf(t, rep, "work")
	if w.Succeeded != int64(len(want)) || w.Skipped != int64(5000-len(want)) || w.ByWorker["pid 8"] != 5000 {
		t.Errorf("work: %+v", *w)
	}
	if r.runCalls == 0 || r.doCalls != 0 {
		t.Errorf("%d runs answered, %d Do calls: the engine did not take the answers by the run", r.runCalls, r.doCalls)
	}
}

// A run stopped midway: items answered in runs and one by one with the
// context's error are all accounted, none failed, and what was handed on
// is a prefix of the input.
func TestBatchRunnerRunsStopWithTheRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := &runsRunner{runLen: 8, batchRunner: &batchRunner{f: func(in steps.Input, _ int) (any, error) {
		if in.Index == 20 {
			cancel()
		}
		return in.Item, nil
	}, block: func(in steps.Input) bool { return in.Index > 20 && in.Index%3 == 0 }}}
	p := passPipeline(t, 3000)
	rep, out := runRunsT(t, ctx, p, r)
	w := stageOf(t, rep, "work")
	if rep.Status != "interrupted" || w.Failed != 0 || w.Cancelled == 0 || w.Succeeded+w.Cancelled != w.In {
		t.Errorf("status %s; work: %+v", rep.Status, *w)
	}
	lines := strings.Fields(out)
	for i, l := range lines {
		if l != fmt.Sprint(i) {
			t.Fatalf("line %d: %q: not the input's order", i, l)
		}
	}
	if int64(len(lines)) > w.Succeeded {
		t.Errorf("%d lines out, %d succeeded", len(lines), w.Succeeded)
	}
	if r.runCalls == 0 {
		t.Error("no run answered")
	}
}

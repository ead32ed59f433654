package engine

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowrun/flow/clock"
	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/steps/all"
)

// The engine on clock.Virtual: every time below is asserted exactly, and
// each test holds on every run (go test -race -count=20). None measures
// wall time.

var vt0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// runVirtual runs a pipeline (parsed with r: the test kinds, or all the
// real ones) on a fresh virtual clock starting at vt0.
func runVirtual(t *testing.T, r *steps.Registry, src string, ev EventSink) (*report.Report, string, *clock.Virtual) {
	t.Helper()
	p, err := spec.Parse("test.yaml", []byte(src), spec.Options{}, r)
	if err != nil {
		t.Fatalf("pipeline does not parse: %v\n%s", err, src)
	}
	return runVirtualP(t, r, p, ev)
}

func runVirtualP(t *testing.T, r *steps.Registry, p *spec.Pipeline, ev EventSink) (*report.Report, string, *clock.Virtual) {
	t.Helper()
	v := clock.NewVirtual(vt0)
	var out, errOut strings.Builder
	start := time.Now()
	rep, err := Run(context.Background(), p, Options{Registry: r, Stdout: &out, Stderr: &errOut, Events: ev, Clock: v})
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	t.Logf("virtual %s in %s of real time", time.Duration(rep.Duration), time.Since(start))
	checkReport(t, rep)
	if !rep.Start.Equal(vt0) {
		t.Errorf("report starts at %s, want the clock's start", rep.Start)
	}
	return rep, out.String(), v
}

// starts returns the virtual start of each attempt of item i, from vt0.
func starts(t *testing.T, ev *recordEvents, i int64) []time.Duration {
	t.Helper()
	e := ev.byIndex(i)
	if e == nil {
		t.Fatalf("no event for item %d", i)
	}
	var out []time.Duration
	for _, a := range e.Attempts {
		out = append(out, a.Start.Sub(vt0))
	}
	return out
}

// Retries with a backoff of 100ms, doubling: attempts at 0, 100ms and
// 300ms, each taking no time.
func TestVirtualRetryBackoff(t *testing.T) {
	var n atomic.Int32
	step := fn(steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
		if n.Add(1) < 3 {
			return nil, steps.Errorf("http_5xx", "503")
		}
		return in.Item, nil
	}))
	ev := &recordEvents{stage: "work"}
	rep, _, _ := runVirtual(t, reg, `
version: 1
stages:
  - {name: src, source: {nums: 1}}
  - name: work
    step: fn
    with: {fn: `+step+`}
    retry: {attempts: 3, backoff: 100ms, jitter: 0}
`, ev)
	if got, want := starts(t, ev, 0), []time.Duration{0, 100 * time.Millisecond, 300 * time.Millisecond}; !slices.Equal(got, want) {
		t.Errorf("attempts started at %v, want %v", got, want)
	}
	for _, a := range ev.byIndex(0).Attempts {
		if !a.End.Equal(a.Start) {
			t.Errorf("attempt %+v took time: computing takes none", a)
		}
	}
	if time.Duration(rep.Duration) != 300*time.Millisecond {
		t.Errorf("run took %s, want 300ms", time.Duration(rep.Duration))
	}
}

// With jitter (the default 0.2), waits are spread, but the same on every
// run: the spread is drawn from the stage, the item and the attempt.
func TestVirtualJitterIsRepeatable(t *testing.T) {
	step := fn(steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
		return nil, steps.Errorf("http_5xx", "503")
	}))
	src := `
version: 1
stages:
  - {name: src, source: {nums: 3}}
  - name: work
    step: fn
    with: {fn: ` + step + `}
    retry: {attempts: 4, backoff: 1s}
    on_error: skip
`
	var runs [2][3][]time.Duration
	for r := range runs {
		ev := &recordEvents{stage: "work"}
		runVirtual(t, reg, src, ev)
		for i := range 3 {
			runs[r][i] = starts(t, ev, int64(i))
		}
	}
	for i := range 3 {
		if !slices.Equal(runs[0][i], runs[1][i]) {
			t.Errorf("item %d: attempts at %v, then %v", i, runs[0][i], runs[1][i])
		}
		s := runs[0][i]
		if len(s) != 4 || s[1] < 800*time.Millisecond || s[1] > 1200*time.Millisecond || s[1] == time.Second {
			t.Errorf("item %d: attempts at %v: the first wait is not 1s +/- 20%% with jitter", i, s)
		}
	}
	if slices.Equal(runs[0][0], runs[0][1]) {
		t.Errorf("items 0 and 1 wait alike (%v): jitter spreads nothing", runs[0][0])
	}
}

// rate: 10/s with the default burst of 1: the limiter starts with one
// token, so item 0 starts at 0 and item k at k x 100ms; item 21 (index
// 20) at exactly 2s.
func TestVirtualRate(t *testing.T) {
	ev := &recordEvents{stage: "work"}
	rep, _, _ := runVirtual(t, reg, `
version: 1
stages:
  - {name: src, source: {nums: 21}}
  - {name: work, step: pass, workers: 1, rate: 10/s}
`, ev)
	for i := range int64(21) {
		if got, want := starts(t, ev, i), []time.Duration{time.Duration(i) * 100 * time.Millisecond}; !slices.Equal(got, want) {
			t.Errorf("item %d started at %v, want %v", i, got, want)
		}
	}
	if e := ev.byIndex(20); e.Wait != 100*time.Millisecond {
		t.Errorf("item 20 waited %s on the rate, want 100ms", e.Wait)
	}
	if time.Duration(rep.Duration) != 2*time.Second {
		t.Errorf("run took %s, want 2s", time.Duration(rep.Duration))
	}
}

// With many workers the items race for the rate's slots, as in a real run;
// the slots' times are exact: one every 100ms from 0 to 2s.
func TestVirtualRateManyWorkers(t *testing.T) {
	ev := &recordEvents{stage: "work"}
	runVirtual(t, reg, `
version: 1
stages:
  - {name: src, source: {nums: 21}}
  - {name: work, step: pass, workers: 8, rate: 10/s}
`, ev)
	var got []time.Duration
	for i := range int64(21) {
		got = append(got, starts(t, ev, i)...)
	}
	slices.Sort(got)
	for k, s := range got {
		if s != time.Duration(k)*100*time.Millisecond {
			t.Fatalf("starts %v, want one every 100ms from 0 to 2s", got)
		}
	}
}

// An attempt timeout of 1s against compute's sleep(5): the attempt ends at
// exactly 1s, timed out.
func TestVirtualAttemptTimeout(t *testing.T) {
	ev := &recordEvents{stage: "slow"}
	rep, _, _ := runVirtual(t, all.Registry(), `
version: 1
stages:
  - name: one
    source: {items: [1]}
  - name: slow
    step: compute
    timeout: 1s
    on_error: skip
    with: {value: "${ sleep(5) ?? item }"}
`, ev)
	e := ev.byIndex(0)
	if e == nil || e.Outcome != report.Skipped || len(e.Attempts) != 1 {
		t.Fatalf("event %+v", e)
	}
	a := e.Attempts[0]
	if a.Start != vt0 || a.End.Sub(a.Start) != time.Second || a.Class != "timeout" {
		t.Errorf("attempt %+v, want from 0 to exactly 1s, class timeout", a)
	}
	if s := stageOf(t, rep, "slow"); s.TimedOut != 1 || s.Skipped != 1 {
		t.Errorf("slow %+v", *s)
	}
	if time.Duration(rep.Duration) != time.Second {
		t.Errorf("run took %s, want 1s", time.Duration(rep.Duration))
	}
}

// A step that computes and returns without waiting on the clock takes no
// virtual time, so it beats a timeout of 1ms however long it computes in
// real time: the clock does not move while a goroutine runs.
func TestVirtualComputingBeatsTimeout(t *testing.T) {
	step := fn(steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
		x := 0
		for i := range 5_000_000 {
			x += i % 7
		}
		return x, nil
	}))
	rep, _, _ := runVirtual(t, reg, `
version: 1
stages:
  - {name: src, source: {nums: 4}}
  - {name: work, step: fn, with: {fn: `+step+`}, timeout: 1ms, workers: 2}
`, nil)
	if w := stageOf(t, rep, "work"); w.Succeeded != 4 || rep.Duration != 0 {
		t.Errorf("work %+v, run took %s: computing took virtual time", *w, time.Duration(rep.Duration))
	}
}

// The guide's map(timeout=): exactly its documented output and report,
// the deadline at exactly 1s.
func TestVirtualExampleMapTimeout(t *testing.T) {
	r := all.Registry()
	p, err := spec.Load("../examples/map_timeout.yaml", spec.Options{}, r)
	if err != nil {
		t.Fatal(err)
	}
	ev := &recordEvents{stage: "fetch"}
	rep, out, _ := runVirtualP(t, r, p, ev)
	if out != "10\n20\n30\n" {
		t.Errorf("printed %q, want 10 20 30", out)
	}
	f := stageOf(t, rep, "fetch")
	if rep.Status != "timed_out" || rep.ExitCode != 1 || f.Succeeded != 3 || f.TimedOut != 2 || f.Cancelled != 2 {
		t.Errorf("status %s exit %d, fetch %+v", rep.Status, rep.ExitCode, *f)
	}
	if !strings.Contains(rep.Reason, `stage "fetch" did not finish within its deadline of 1s: 2 items not done were cancelled`) {
		t.Errorf("reason %q", rep.Reason)
	}
	if time.Duration(rep.Duration) != time.Second || time.Duration(f.Duration) != time.Second {
		t.Errorf("run %s, stage %s, want exactly the deadline 1s", time.Duration(rep.Duration), time.Duration(f.Duration))
	}
	// 4 starts once 1 is done (a worker frees at 100ms) and ends at 500ms;
	// 15 starts at 0 and is cancelled by the deadline at 1s.
	for _, c := range []struct {
		index      int64
		start, end time.Duration
		outcome    report.Outcome
	}{
		{0, 0, 100 * time.Millisecond, report.Succeeded},
		{2, 0, 300 * time.Millisecond, report.Succeeded},
		{3, 0, time.Second, report.Cancelled},
		{4, 100 * time.Millisecond, 500 * time.Millisecond, report.Cancelled},
	} {
		e := ev.byIndex(c.index)
		if e == nil || len(e.Attempts) != 1 || e.Outcome != c.outcome {
			t.Errorf("item %d: %+v", c.index, e)
			continue
		}
		a := e.Attempts[0]
		if a.Start.Sub(vt0) != c.start || a.End.Sub(vt0) != c.end {
			t.Errorf("item %d ran from %s to %s, want %s to %s", c.index, a.Start.Sub(vt0), a.End.Sub(vt0), c.start, c.end)
		}
	}
}

// A Retry-After from the step is waited in full on the virtual clock.
func TestVirtualRetryAfter(t *testing.T) {
	var n atomic.Int32
	step := fn(steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
		if n.Add(1) == 1 {
			return nil, &steps.Error{Err: errors.New("429"), Class: "http_429", RetryAfter: 7 * time.Second}
		}
		return in.Item, nil
	}))
	ev := &recordEvents{stage: "work"}
	runVirtual(t, reg, `
version: 1
stages:
  - {name: src, source: {nums: 1}}
  - name: work
    step: fn
    with: {fn: `+step+`}
    retry: {attempts: 2, backoff: 100ms}
`, ev)
	if got, want := starts(t, ev, 0), []time.Duration{0, 7 * time.Second}; !slices.Equal(got, want) {
		t.Errorf("attempts at %v, want %v", got, want)
	}
}

// The pipeline timeout cancels what runs at exactly its instant; the
// items that finished before it are handed on.
func TestVirtualPipelineTimeout(t *testing.T) {
	ev := &recordEvents{stage: "work"}
	rep, out, _ := runVirtual(t, all.Registry(), `
version: 1
timeout: 2500ms
stages:
  - name: n
    source: {items: [1, 2, 3, 4]}
  - name: work
    step: compute
    workers: 1
    with: {value: "${ sleep(item) ?? item }"}
  - name: out
    sink: {print: {template: "${ item }"}}
`, ev)
	if out != "1\n" {
		t.Errorf("printed %q, want 1 (2 needs until 3s)", out)
	}
	w := stageOf(t, rep, "work")
	if rep.Status != "timed_out" || w.Succeeded != 1 || w.Cancelled != 3 || w.TimedOut != 3 {
		t.Errorf("status %s, work %+v", rep.Status, *w)
	}
	if time.Duration(rep.Duration) != 2500*time.Millisecond {
		t.Errorf("run took %s, want 2.5s", time.Duration(rep.Duration))
	}
	if e := ev.byIndex(1); e == nil || len(e.Attempts) != 1 || e.Attempts[0].End.Sub(vt0) != 2500*time.Millisecond {
		t.Errorf("item 1 (sleeping from 1s to 3s): %+v", e)
	}
}

// A stage deadline counts from the stage's first item and stops the run at
// exactly its instant, whatever the real time.
func TestVirtualStageDeadline(t *testing.T) {
	var mu sync.Mutex
	var ends []time.Duration
	step := fn(steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
		err := clock.Sleep(ctx, time.Duration(in.Item.(int64)+1)*300*time.Millisecond)
		mu.Lock()
		ends = append(ends, clock.From(ctx).Now().Sub(vt0))
		mu.Unlock()
		return in.Item, err
	}))
	rep, _, _ := runVirtual(t, reg, `
version: 1
stages:
  - {name: src, source: {nums: 5}}
  - {name: work, step: fn, with: {fn: `+step+`}, workers: 1, deadline: 1s}
`, nil)
	w := stageOf(t, rep, "work")
	// 300ms, then 600ms more (900ms), then 900ms more: cut at 1s.
	if rep.Status != "timed_out" || w.Succeeded != 2 || w.TimedOut != 3 {
		t.Errorf("status %s, work %+v", rep.Status, *w)
	}
	want := []time.Duration{300 * time.Millisecond, 900 * time.Millisecond, time.Second}
	if !slices.Equal(ends, want) {
		t.Errorf("attempts ended at %v, want %v", ends, want)
	}
}

// Waits due at the same instant are released in the order they were set:
// an attempt's timeout is set before the step starts, so timeout: 1s ends
// sleep(1), on every run.
func TestVirtualTimeoutWinsATie(t *testing.T) {
	rep, _, _ := runVirtual(t, all.Registry(), `
version: 1
stages:
  - name: one
    source: {items: [1, 2]}
  - name: slow
    step: compute
    timeout: 1s
    on_error: skip
    with: {value: "${ sleep(item) ?? item }"}
`, nil)
	if s := stageOf(t, rep, "slow"); s.TimedOut != 2 || s.Skipped != 2 {
		t.Errorf("slow %+v: sleep(1) and sleep(2) both time out at 1s", *s)
	}
	if time.Duration(rep.Duration) != time.Second {
		t.Errorf("run took %s, want 1s", time.Duration(rep.Duration))
	}
}

// A named limit shared by two stages hands out one slot every 100ms to
// both: 20 starts, the last at 1.9s.
func TestVirtualSharedLimit(t *testing.T) {
	a, b := &recordEvents{stage: "a"}, &recordEvents{stage: "b"}
	rep, _, _ := runVirtual(t, reg, `
version: 1
limits:
  api: {rate: 10/s}
stages:
  - {name: src, source: {nums: 10}}
  - {name: a, step: pass, workers: 1, limit: [api]}
  - {name: b, step: pass, workers: 1, limit: [api]}
`, fanout{a, b})
	var got []time.Duration
	for i := range int64(10) {
		got = append(got, starts(t, a, i)...)
		got = append(got, starts(t, b, i)...)
	}
	slices.Sort(got)
	for k, s := range got {
		if s != time.Duration(k)*100*time.Millisecond {
			t.Fatalf("starts %v, want one every 100ms from 0 to 1.9s", got)
		}
	}
	if time.Duration(rep.Duration) != 1900*time.Millisecond {
		t.Errorf("run took %s, want 1.9s", time.Duration(rep.Duration))
	}
}

type fanout []EventSink

func (f fanout) StageStarted(s string, w int, n int64) {
	for _, e := range f {
		e.StageStarted(s, w, n)
	}
}
func (f fanout) ItemDone(ev *ItemEvent) {
	for _, e := range f {
		e.ItemDone(ev)
	}
}
func (f fanout) StageDone(s string) {
	for _, e := range f {
		e.StageDone(s)
	}
}

// On a virtual clock every item is timed for the latency percentiles, not a
// sample of them: which items a sample holds would vary between runs.
func TestVirtualLatencyOfEveryItem(t *testing.T) {
	step := fn(steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
		switch in.Index {
		case 0: // makes the stage's measure of an item nonzero, then
			// the items of no time bring it near zero: sampling
			return in.Item, clock.Sleep(ctx, time.Millisecond)
		case 150:
			return in.Item, clock.Sleep(ctx, time.Second)
		}
		return in.Item, nil
	}))
	rep, _, _ := runVirtual(t, reg, `
version: 1
stages:
  - {name: src, source: {nums: 200}}
  - {name: work, step: fn, with: {fn: `+step+`}, workers: 1}
`, nil)
	if w := stageOf(t, rep, "work"); time.Duration(w.LatencyMax) != time.Second {
		t.Errorf("latency max %s, want the 1s of item 150", time.Duration(w.LatencyMax))
	}
}

// A source that waits on the clock between items: each item reaches the
// step at the instant it was emitted. (With the real clock's flush tick an
// item could sit in a partial batch while the virtual clock, seeing every
// goroutine blocked, jumped to the source's next wait.)
func TestVirtualSlowSource(t *testing.T) {
	src := fn(sourceFunc(func(ctx context.Context, emit func(any) error) error {
		for i := range int64(4) {
			if i > 0 {
				if err := clock.Sleep(ctx, time.Second); err != nil {
					return err
				}
			}
			if err := emit(i); err != nil {
				return err
			}
		}
		return nil
	}))
	ev := &recordEvents{stage: "work"}
	runVirtual(t, reg, `
version: 1
stages:
  - {name: src, source: {src: `+src+`}}
  - {name: work, step: pass, workers: 1}
`, ev)
	for i := range int64(4) {
		if got, want := starts(t, ev, i), []time.Duration{time.Duration(i) * time.Second}; !slices.Equal(got, want) {
			t.Errorf("item %d started at %v, want %v", i, got, want)
		}
	}
}

// A stage whose runner is not the thread runner does its waiting where a
// virtual clock cannot see it: Run refuses the pair before anything runs;
// the thread runner given for another mode (as flow test does) runs.
func TestVirtualClockNeedsThreadRunner(t *testing.T) {
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 5}}
  - {name: heavy, step: pass, mode: process, workers: 2}
`)
	fr := &fakeRunner{}
	_, err := Run(context.Background(), p, Options{Registry: reg, Stdout: &strings.Builder{}, Clock: clock.NewVirtual(vt0),
		Runners: Runners{spec.ModeProcess: func(StageRun) (Runner, error) { return fr, nil }}})
	var se *SetupError
	if !errors.As(err, &se) || se.Stage != "heavy" || !strings.Contains(err.Error(), "virtual clock") || !strings.Contains(err.Error(), "mode: process") {
		t.Fatalf("err %v, want a setup error of stage heavy about the virtual clock", err)
	}
	if fr.calls.Load() != 0 || fr.closed.Load() != 1 {
		t.Errorf("calls %d closed %d: the refused runner ran or was not closed", fr.calls.Load(), fr.closed.Load())
	}
	var out strings.Builder
	rep, err := Run(context.Background(), p, Options{Registry: reg, Stdout: &out, Clock: clock.NewVirtual(vt0),
		Runners: Runners{spec.ModeProcess: ThreadRunner}})
	if err != nil || rep.Status != "succeeded" || strings.Count(out.String(), "\n") != 5 {
		t.Fatalf("thread runner for mode: process: err %v, report %+v, out %q", err, rep, out.String())
	}
}

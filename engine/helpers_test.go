package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/flowrun/flow/clock"
	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Fake kinds. Steps and sources are Go functions registered under a name
// that the pipeline names in `with: {fn: NAME}`, so each test writes its
// behaviour in Go and the engine never sees a real kind.

var (
	fnMu    sync.Mutex
	fns     = map[string]any{}
	fnCount atomic.Int64
)

// fn registers f (a steps.Func, a source func or a *collector) and returns
// its name.
func fn(f any) string {
	name := fmt.Sprintf("f%d", fnCount.Add(1))
	fnMu.Lock()
	fns[name] = f
	fnMu.Unlock()
	return name
}

func lookupFn(name string) any {
	fnMu.Lock()
	defer fnMu.Unlock()
	return fns[name]
}

type fnConf struct {
	Fn string `yaml:"fn"`
}

func (*fnConf) Shorthand() string { return "fn" }

type rangeConf struct {
	N int64 `yaml:"n"`
}

func (*rangeConf) Shorthand() string { return "n" }

type sourceFunc func(ctx context.Context, emit func(any) error) error

type funcSource struct {
	f sourceFunc
	n int64
}

func (s funcSource) Items(ctx context.Context, emit func(any) error) error { return s.f(ctx, emit) }
func (s funcSource) Count() (int64, bool)                                  { return s.n, s.n >= 0 }

// lazyRange emits 0..n-1 without ever holding them.
type lazyRange struct{ n int64 }

func (r lazyRange) Count() (int64, bool) { return r.n, true }
func (r lazyRange) Items(ctx context.Context, emit func(any) error) error {
	for i := int64(0); i < r.n; i++ {
		if err := emit(i); err != nil {
			return err
		}
	}
	return nil
}

// bulkRange is lazyRange handing its items over in slices of up to 7
// (a BulkSource), reusing the slice as the range source does.
type bulkRange struct{ lazyRange }

func (r bulkRange) ItemsBulk(ctx context.Context, emit func([]any) error) error {
	buf := make([]any, 0, 7)
	for i := int64(0); i < r.n; i++ {
		buf = append(buf, i)
		if len(buf) == cap(buf) || i == r.n-1 {
			if err := emit(buf); err != nil {
				return err
			}
			clear(buf)
			buf = buf[:0]
		}
	}
	return nil
}

// batchCollector is a collector taking whole batches (a BatchSink).
type batchCollector struct{ *collector }

func (c batchCollector) WriteBatch(ctx context.Context, recs []steps.Record) (int, error) {
	c.batches.Add(1)
	for i, r := range recs {
		if err := c.Write(ctx, r); err != nil {
			return i, err
		}
	}
	return len(recs), nil
}

// collector is a sink that keeps what it receives.
type collector struct {
	mu       sync.Mutex
	recs     []steps.Record
	count    atomic.Int64
	keep     bool
	closed   int
	closeErr error
	writeErr func(steps.Record) error
	batches  atomic.Int64 // WriteBatch calls (batchCollector)
}

func (c *collector) Write(ctx context.Context, r steps.Record) error {
	if c.writeErr != nil {
		if err := c.writeErr(r); err != nil {
			return err
		}
	}
	c.count.Add(1)
	if c.keep {
		c.mu.Lock()
		c.recs = append(c.recs, r)
		c.mu.Unlock()
	}
	return nil
}

func (c *collector) Close(ctx context.Context, runErr error) error {
	c.mu.Lock()
	c.closed++
	c.closeErr = runErr
	c.mu.Unlock()
	return nil
}

func (c *collector) items() []any {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]any, len(c.recs))
	for i, r := range c.recs {
		out[i] = r.Item
	}
	return out
}

func (c *collector) indexes() []int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]int64, len(c.recs))
	for i, r := range c.recs {
		out[i] = r.Index
	}
	return out
}

// topN is a barrier keeping the first n items it is given.
type topN struct {
	n    int
	kept []steps.Input
}

func (t *topN) Add(in steps.Input) error {
	if len(t.kept) < t.n {
		t.kept = append(t.kept, in)
	}
	return nil
}
func (t *topN) Flush(ctx context.Context, emit func(steps.Input) error) error {
	for _, in := range t.kept {
		if err := emit(in); err != nil {
			return err
		}
	}
	return nil
}

// jsonlPrint stands in for the real print sink (the engine's default sink).
type jsonlPrint struct{ w io.Writer }

func (p jsonlPrint) Write(ctx context.Context, r steps.Record) error {
	b, err := json.Marshal(r.Item)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(p.w, "%s\n", b)
	return err
}
func (p jsonlPrint) Close(context.Context, error) error { return nil }

type printConf struct {
	Format string `yaml:"format"`
}

func (*printConf) Shorthand() string { return "format" }

func testRegistry() *steps.Registry {
	r := steps.NewRegistry()
	steps.RegisterSource(r, steps.Kind{Name: "nums"}, func(c *rangeConf, env *steps.Env) (steps.Source, error) {
		return lazyRange{c.N}, nil
	})
	steps.RegisterSource(r, steps.Kind{Name: "bulknums"}, func(c *rangeConf, env *steps.Env) (steps.Source, error) {
		return bulkRange{lazyRange{c.N}}, nil
	})
	steps.RegisterSource(r, steps.Kind{Name: "src"}, func(c *fnConf, env *steps.Env) (steps.Source, error) {
		switch f := lookupFn(c.Fn).(type) {
		case sourceFunc:
			return funcSource{f: f, n: -1}, nil
		case funcSource:
			return f, nil
		}
		return nil, fmt.Errorf("no source function %q", c.Fn)
	})
	steps.RegisterStep(r, steps.Kind{Name: "pass"}, func(c *struct{}, env *steps.Env) (steps.Step, error) {
		return steps.Func(func(ctx context.Context, in steps.Input) (any, error) { return in.Item, nil }), nil
	})
	steps.RegisterStep(r, steps.Kind{Name: "fn"}, func(c *fnConf, env *steps.Env) (steps.Step, error) {
		f, ok := lookupFn(c.Fn).(steps.Func)
		if !ok {
			return nil, fmt.Errorf("no step function %q", c.Fn)
		}
		return f, nil
	})
	steps.RegisterStep(r, steps.Kind{Name: "broken"}, func(c *struct{}, env *steps.Env) (steps.Step, error) {
		return nil, fmt.Errorf("cannot build: the model file is missing")
	})
	steps.RegisterBarrier(r, steps.Kind{Name: "topn"}, func(c *rangeConf, env *steps.Env) (steps.Barrier, error) {
		return &topN{n: int(c.N)}, nil
	})
	steps.RegisterSink(r, steps.Kind{Name: "collect"}, func(c *fnConf, env *steps.Env) (steps.Sink, error) {
		col, ok := lookupFn(c.Fn).(*collector)
		if !ok {
			return nil, fmt.Errorf("no collector %q", c.Fn)
		}
		return col, nil
	})
	steps.RegisterSink(r, steps.Kind{Name: "bcollect"}, func(c *fnConf, env *steps.Env) (steps.Sink, error) {
		col, ok := lookupFn(c.Fn).(*collector)
		if !ok {
			return nil, fmt.Errorf("no collector %q", c.Fn)
		}
		return batchCollector{col}, nil
	})
	steps.RegisterSink(r, steps.Kind{Name: "print"}, func(c *printConf, env *steps.Env) (steps.Sink, error) {
		if c.Format != "jsonl" {
			return nil, fmt.Errorf("fake print supports jsonl only, got %q", c.Format)
		}
		return jsonlPrint{env.Stdout}, nil
	})
	return r
}

var reg = testRegistry()

// parse parses a pipeline written in YAML, failing the test on any problem.
func parse(t testing.TB, src string) *spec.Pipeline {
	t.Helper()
	p, err := spec.Parse("test.yaml", []byte(src), spec.Options{}, reg)
	if err != nil {
		t.Fatalf("pipeline does not parse: %v\n%s", err, src)
	}
	return p
}

// runT runs p with the test registry and checks the invariants that hold
// whatever happens.
func runT(t testing.TB, ctx context.Context, p *spec.Pipeline, cfg config, ev EventSink) *report.Report {
	t.Helper()
	var out strings.Builder
	rep, err := runPipeline(ctx, p, Options{Registry: reg, Stdout: &out, Events: ev}, cfg)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	checkReport(t, rep)
	return rep
}

func checkReport(t testing.TB, rep *report.Report) {
	t.Helper()
	for i, s := range rep.Stages {
		if !s.Balanced() {
			t.Errorf("stage %s not balanced: %+v", s.Name, *s)
		}
		if s.TimedOut > s.Failed+s.Cancelled+s.Skipped {
			t.Errorf("stage %s: timed_out %d exceeds failed+cancelled+skipped: %+v", s.Name, s.TimedOut, *s)
		}
		if i > 0 && rep.Stages[i-1].Out != s.In {
			t.Errorf("stage %s received %d items, but %s handed on %d", s.Name, s.In, rep.Stages[i-1].Name, rep.Stages[i-1].Out)
		}
	}
	switch rep.Status {
	case "succeeded":
		if rep.ExitCode != 0 {
			t.Errorf("succeeded with exit code %d", rep.ExitCode)
		}
	case "failed", "timed_out":
		if rep.ExitCode != 1 || rep.Reason == "" {
			t.Errorf("status %s with exit code %d, reason %q", rep.Status, rep.ExitCode, rep.Reason)
		}
	case "interrupted":
		if rep.ExitCode != 130 {
			t.Errorf("interrupted with exit code %d", rep.ExitCode)
		}
	default:
		t.Errorf("unknown status %q", rep.Status)
	}
}

func stageOf(t testing.TB, rep *report.Report, name string) *report.Stage {
	t.Helper()
	for _, s := range rep.Stages {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no stage %q in the report", name)
	return nil
}

// fakeClock is a virtual clock: Sleep returns at once and moves time to the
// end of the sleep (never backwards), and every sleep is recorded.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	sleeps []time.Duration
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) SleepUntil(ctx context.Context, t time.Time) error {
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sleeps = append(c.sleeps, t.Sub(c.now))
	// Sleeps overlapping in virtual time end at the latest wake-up.
	if t.After(c.now) {
		c.now = t
	}
	return nil
}

// AfterFunc runs f after d of real time: only sleeps are virtual here
// (clock.Virtual is the whole virtual clock).
func (c *fakeClock) AfterFunc(d time.Duration, f func()) clock.Timer { return time.AfterFunc(d, f) }

func (c *fakeClock) elapsed(from time.Time) time.Duration { return c.Now().Sub(from) }

func (c *fakeClock) recorded() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.sleeps...)
}

// countingEvents counts events per stage and outcome.
type countingEvents struct {
	mu      sync.Mutex
	started map[string]int64
	done    map[string]int
	items   map[string]map[string]int64
}

func newCountingEvents() *countingEvents {
	return &countingEvents{started: map[string]int64{}, done: map[string]int{}, items: map[string]map[string]int64{}}
}

func (e *countingEvents) StageStarted(stage string, workers int, total int64) {
	e.mu.Lock()
	e.started[stage] = total
	e.mu.Unlock()
}

func (e *countingEvents) ItemDone(ev *ItemEvent) {
	stage, outcome, in := ev.Stage, string(ev.Outcome), steps.Input{Index: ev.Index, Item: ev.Item}
	_, _, _ = stage, outcome, in
	e.mu.Lock()
	if e.items[stage] == nil {
		e.items[stage] = map[string]int64{}
	}
	e.items[stage][outcome]++
	e.mu.Unlock()
}

func (e *countingEvents) StageDone(stage string) {
	e.mu.Lock()
	e.done[stage]++
	e.mu.Unlock()
}

func compileT(src string) (*tmplT, error) { return tmplCompile(src) }

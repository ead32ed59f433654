package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
)

// Tuning of the hand-offs. Items travel between stages in batches so that a
// channel operation is paid per batch, not per item; a stage flushes a
// partial batch as soon as it has nothing else to do, so slow pipelines still
// stream item by item.
const (
	batchSize   = 128 // records per batch between two stages
	edgeBatches = 4   // batches buffered between two stages
	// MaxFailures is how many failed items the report lists; the rest are
	// only counted (report.FailuresOmitted), so memory stays flat.
	MaxFailures = 1000
	// sourceGrace is how long a stopped run waits for a source that does
	// not return (one blocked reading a terminal, say) before reporting
	// without it.
	sourceGrace = 500 * time.Millisecond
)

// SetupError is returned by Run when a stage cannot be built; nothing ran.
// Err may be a conf.Diags (options that only fail when built).
type SetupError struct {
	Stage string
	Err   error
}

func (e *SetupError) Error() string { return fmt.Sprintf("stage %q: %v", e.Stage, e.Err) }
func (e *SetupError) Unwrap() error { return e.Err }

// Run runs a validated pipeline and returns its report.
//
// The error is only for setup failures (a stage that cannot be built, a
// process-mode stage without Options.Process): then nothing ran and the
// report is nil. Otherwise the report is complete, whatever happened, with
// ExitCode 0 when every item succeeded or failures stayed within the
// policies, 1 when items failed, a policy or a timeout stopped the run, and
// 130 with Status "interrupted" when ctx was cancelled from outside (the CLI
// turns that into 130 or 143 by signal).
//
// Accounting, for every stage: In = Succeeded + Failed + Skipped + Cancelled
// + Filtered. An item is Succeeded once its result was handed downstream (for
// a sink: written); a result that could not be handed on because the run
// stopped is Cancelled. Items for which `when:` is false, and items a barrier
// (top) does not emit, are Filtered: they are dropped from the stream.
func Run(ctx context.Context, p *spec.Pipeline, opts Options) (*report.Report, error) {
	return runPipeline(ctx, p, opts, config{})
}

// config holds what tests may change.
type config struct {
	clock  clock
	window int // reorder window of `order: input`, in items (0: default)
}

type run struct {
	p      *spec.Pipeline
	opts   Options
	cfg    config
	clk    clock
	ev     EventSink
	red    *redactor
	vars   map[string]any
	env    map[string]string
	limits map[string]*limit

	ctx    context.Context
	cancel context.CancelCauseFunc

	mu       sync.Mutex
	stop     *runStop
	failures []report.Failure
	omitted  int64
}

// runStop is why a run stopped early; it is the cause of the run context.
type runStop struct {
	status string // failed, timed_out, interrupted
	msg    string
	// timeout marks stops by the pipeline timeout (stage == "") or by the
	// deadline of stage: the items they cancel are counted as timed out.
	timeout bool
	stage   string
	limit   time.Duration
}

func (s *runStop) Error() string { return s.msg }

// errPolicyMet is the cause of a stage context cancelled because its
// completion policy (complete: first) was met: its upstream stops, its
// downstream carries on.
var errPolicyMet = errors.New("completion policy met")

// errStopped is what a source's emit returns once the run is stopping.
var errStopped = errors.New("flow: the run is stopping")

func runPipeline(parent context.Context, p *spec.Pipeline, opts Options, cfg config) (*report.Report, error) {
	if opts.Registry == nil {
		return nil, errors.New("engine: Options.Registry is nil")
	}
	if len(p.Stages) == 0 {
		return nil, errors.New("engine: the pipeline has no stages")
	}
	r := &run{p: p, opts: opts, cfg: cfg, clk: cfg.clock, ev: opts.Events, red: newRedactor(p.Vars.Secrets())}
	if r.clk == nil {
		r.clk = realClock{}
	}
	r.vars = p.Vars.Map()
	r.env = environ()
	r.limits = buildLimits(p, r.clk)

	stages, err := r.build()
	if err != nil {
		return nil, err
	}

	rep := &report.Report{Pipeline: p.Name, File: p.File, Start: time.Now(), Failures: []report.Failure{}}
	base := parent
	if p.Timeout > 0 {
		var cancelT context.CancelFunc
		base, cancelT = context.WithTimeoutCause(parent, p.Timeout, &runStop{
			status: "timed_out", timeout: true, limit: p.Timeout,
			msg: fmt.Sprintf("the pipeline timeout of %s passed; running work was cancelled (raise timeout: to allow more time)", p.Timeout),
		})
		defer cancelT()
	}
	r.ctx, r.cancel = context.WithCancelCause(base)
	defer r.cancel(nil)

	// Each stage's context is a child of the next one's: stopping a stage
	// (complete: first) stops everything upstream of it and nothing below.
	parentCtx := r.ctx
	for i := len(stages) - 1; i >= 0; i-- {
		st := stages[i].base()
		st.ctx, st.cancel = context.WithCancelCause(parentCtx)
		parentCtx = st.ctx
		if i+1 < len(stages) {
			st.downCtx = stages[i+1].base().ctx
		} else {
			st.downCtx = st.ctx
		}
	}
	for i := 0; i+1 < len(stages); i++ {
		ch := make(chan *batch, edgeBatches)
		stages[i].base().out = ch
		stages[i+1].base().in = ch
	}
	total := r.totals(stages)
	for i, s := range stages {
		b := s.base()
		rep.Stages = append(rep.Stages, b.rep)
		b.total = total[i]
		if r.ev != nil {
			r.ev.StageStarted(b.name, b.rep.Workers, total[i])
		}
	}

	var wg sync.WaitGroup
	for _, s := range stages {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := s.base()
			s.exec()
			b.finish()
			if r.ev != nil {
				r.ev.StageDone(b.name)
			}
		}()
	}
	wg.Wait()
	for _, s := range stages {
		s.base().cancel(nil)
	}

	rep.End = time.Now()
	rep.Duration = report.Duration(rep.End.Sub(rep.Start))
	r.finalize(rep, stages)
	return rep, nil
}

// stop records why the run stops (the first reason wins) and cancels it.
func (r *run) stopRun(s *runStop) {
	s.msg = r.red.String(s.msg)
	r.mu.Lock()
	if r.stop == nil {
		r.stop = s
	}
	r.mu.Unlock()
	r.cancel(s)
}

// stopReason is why the run stopped, or nil while it has not.
func (r *run) stopReason() *runStop {
	r.mu.Lock()
	s := r.stop
	r.mu.Unlock()
	if s != nil {
		return s
	}
	if r.ctx.Err() == nil {
		return nil
	}
	cause := context.Cause(r.ctx)
	var rs *runStop
	if errors.As(cause, &rs) {
		return rs
	}
	msg := "interrupted"
	if cause != nil && !errors.Is(cause, context.Canceled) {
		msg = "interrupted: " + cause.Error()
	}
	return &runStop{status: "interrupted", msg: msg}
}

// runErr is the error handed to sinks' Close: nil when the run succeeded.
func (r *run) runErr() error {
	if s := r.stopReason(); s != nil {
		return s
	}
	return nil
}

func (r *run) finalize(rep *report.Report, stages []stageExec) {
	stop := r.stopReason()
	switch {
	case stop == nil:
		rep.Status, rep.ExitCode = "succeeded", 0
	case stop.status == "interrupted":
		rep.Status, rep.ExitCode, rep.Reason = "interrupted", 130, stop.msg
	default:
		rep.Status, rep.ExitCode, rep.Reason = stop.status, 1, stop.msg
		if stop.timeout && stop.stage != "" {
			for _, s := range stages {
				if b := s.base(); b.name == stop.stage {
					rep.Reason = fmt.Sprintf("stage %q did not finish within its deadline of %s: %d items not done were cancelled (like executor.map(timeout=) raising TimeoutError; raise deadline: to allow more time)",
						b.name, stop.limit, b.rep.TimedOut)
				}
			}
		}
	}
	r.mu.Lock()
	rep.Failures = append(rep.Failures, r.failures...)
	rep.FailuresOmitted = r.omitted
	r.mu.Unlock()
	order := map[string]int{}
	for i, s := range stages {
		order[s.base().name] = i
	}
	sort.SliceStable(rep.Failures, func(i, j int) bool {
		a, b := rep.Failures[i], rep.Failures[j]
		if order[a.Stage] != order[b.Stage] {
			return order[a.Stage] < order[b.Stage]
		}
		return a.Index < b.Index
	})
}

// addFailure records a failed item, redacted, keeping the first MaxFailures.
func (r *run) addFailure(f report.Failure) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.failures) >= MaxFailures {
		r.omitted++
		return
	}
	f.Error = r.red.String(f.Error)
	f.Item = r.red.Value(f.Item)
	r.failures = append(r.failures, f)
}

// totals gives each stage the number of items it should see, when known:
// the source's count, carried down while every stage passes each item on.
func (r *run) totals(stages []stageExec) []int64 {
	out := make([]int64, len(stages))
	n := int64(-1)
	if src, ok := stages[0].(*sourceStage); ok {
		if c, ok := src.src.(steps.Counter); ok {
			if v, ok := c.Count(); ok {
				n = v
			}
		}
	}
	for i, s := range stages {
		out[i] = n
		st := s.base().spec
		if st.When != nil {
			n = -1
		}
		switch x := s.(type) {
		case *barrierStage:
			n = -1
		case *stepStage:
			if x.onError == "skip" || x.first > 0 {
				n = -1
			}
		}
	}
	return out
}

func environ() map[string]string {
	m := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// workersOf resolves a stage's worker count.
func workersOf(s *spec.Stage) int {
	if s.Workers.N > 0 && !s.Workers.Auto {
		return s.Workers.N
	}
	if s.Mode == "process" {
		return runtime.NumCPU()
	}
	return min(32, 4*runtime.NumCPU())
}

// build constructs every stage; on failure, what was built is closed again.
func (r *run) build() (_ []stageExec, err error) {
	var out []stageExec
	defer func() {
		if err != nil {
			for _, s := range out {
				s.abort(err)
			}
		}
	}()
	last := r.p.Stages[len(r.p.Stages)-1]
	for i, s := range r.p.Stages {
		st, err := r.buildStage(i, s)
		if err != nil {
			return out, &SetupError{Stage: s.Name, Err: err}
		}
		out = append(out, st)
	}
	if last.Role != spec.RoleSink {
		name := "print"
		for _, s := range r.p.Stages {
			if s.Name == name {
				name = "output"
			}
		}
		s := &spec.Stage{Name: name, Role: spec.RoleSink, Kind: "print", Mode: "thread", Order: "input", OnError: "fail",
			Options: &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "jsonl"}}
		st, err := r.buildStage(len(r.p.Stages), s)
		if err != nil {
			return out, &SetupError{Stage: name, Err: fmt.Errorf("the default sink (print: jsonl): %w", err)}
		}
		out = append(out, st)
	}
	return out, nil
}

func (r *run) buildStage(i int, s *spec.Stage) (stageExec, error) {
	k, ok := r.opts.Registry.Lookup(s.Kind)
	if !ok {
		return nil, fmt.Errorf("unknown %s kind %q", s.Role, s.Kind)
	}
	if string(k.Role) != string(s.Role) {
		return nil, fmt.Errorf("%q is a %s kind, not a %s", s.Kind, k.Role, s.Role)
	}
	mode := s.Mode
	if mode == "" {
		mode = "thread"
	}
	workers := 1
	if s.Role == spec.RoleStep {
		workers = workersOf(s)
	}
	stdin, stdout, stderr := r.opts.Stdin, r.opts.Stdout, r.opts.Stderr
	if stdin == nil {
		stdin = os.Stdin
	}
	if stdout == nil {
		stdout = os.Stdout
	}
	if stderr == nil {
		stderr = io.Discard
	}
	env := &steps.Env{Dir: r.p.Dir, Stage: s.Name, Vars: r.vars, Env: r.env, Workers: workers,
		Stdin: stdin, Stdout: stdout, Stderr: stderr}
	v, err := k.Build(s.Options, &conf.Context{Vars: r.vars}, env)
	if err != nil {
		return nil, err
	}
	b := &stage{r: r, spec: s, idx: i, name: s.Name, when: s.When,
		rep: &report.Stage{Name: s.Name, Kind: s.Kind, Role: string(s.Role), Mode: mode, Workers: workers}}
	switch s.Role {
	case spec.RoleSource:
		src, ok := v.(steps.Source)
		if !ok {
			return nil, fmt.Errorf("kind %q built %T, not a source", s.Kind, v)
		}
		b.rep.Mode = "thread"
		b.lim = stageLimiter(s, r.limits, r.clk)
		return &sourceStage{stage: b, src: src}, nil
	case spec.RoleSink:
		sink, ok := v.(steps.Sink)
		if !ok {
			return nil, fmt.Errorf("kind %q built %T, not a sink", s.Kind, v)
		}
		b.rep.Mode = "thread"
		return &sinkStage{stage: b, sink: sink}, nil
	}
	if bar, ok := v.(steps.Barrier); ok {
		// A barrier sees every item in one place; it runs in this process
		// whatever the mode.
		b.rep.Mode, b.rep.Workers = "thread", 1
		return &barrierStage{stage: b, bar: bar, onError: s.OnError}, nil
	}
	st := &stepStage{stage: b, workers: workers}
	if mode == "process" {
		closeValue(v)
		if r.opts.Process == nil {
			return nil, fmt.Errorf("mode: process needs the worker process pool, which this program did not provide to the engine (Options.Process is nil); use mode: thread")
		}
		runner, err := r.opts.Process(r.p, s, workers)
		if err != nil {
			return nil, fmt.Errorf("starting worker processes: %w", err)
		}
		st.runner = runner
		// The pool queues items in its workers ahead of time so that they
		// cross the pipes in batches: it needs more callers than processes.
		if f, ok := runner.(InFlighter); ok && f.InFlight() > workers {
			st.workers = f.InFlight()
		}
	} else {
		step, ok := v.(steps.Step)
		if !ok {
			return nil, fmt.Errorf("kind %q built %T, not a step", s.Kind, v)
		}
		st.runner = stepRunner{step}
	}
	st.configure(r.limits)
	return st, nil
}

// closeValue closes a built value that holds resources and will not be used.
func closeValue(v any) {
	if c, ok := v.(io.Closer); ok {
		c.Close()
	}
}

// stepRunner runs a step in this process (mode: thread).
type stepRunner struct{ s steps.Step }

func (r stepRunner) Do(ctx context.Context, in steps.Input) (any, error) { return r.s.Do(ctx, in) }

func (r stepRunner) Close() error {
	if c, ok := r.s.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

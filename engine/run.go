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

	"github.com/flowrun/flow/clock"
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
// stage whose mode has no runner in Options.Runners): then nothing ran and the
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
	clock  clock.Clock // overrides Options.Clock
	window int         // reorder window of `order: input`, in items (0: default)
}

type run struct {
	p      *spec.Pipeline
	opts   Options
	cfg    config
	clk    clock.Clock
	ev     EventSink
	red    *redactor
	vars   map[string]any
	env    map[string]string
	limits map[string]*limit
	stderr *lockedWriter

	// timeAll: time every item for the latency percentiles, not a
	// sample: on a clock other than Real reading it is cheap, and which
	// items a sample holds would vary from run to run.
	timeAll bool

	ctx    context.Context
	cancel context.CancelCauseFunc

	mu       sync.Mutex
	stop     *runStop
	failures []report.Failure
	omitted  int64
}

// runStop is why a run stopped early; it is the cause of the run context.
type runStop struct {
	status report.Status
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
	r := &run{p: p, opts: opts, cfg: cfg, clk: opts.Clock, ev: opts.Events, red: newRedactor(p.Vars.Secrets())}
	if cfg.clock != nil {
		r.clk = cfg.clock
	}
	if r.clk == nil {
		r.clk = clock.Real
	}
	r.timeAll = !clock.IsReal(r.clk)
	r.vars = p.Vars.Map()
	// One lock on stderr for the run: steps and runners (worker processes'
	// forwarded lines) of different stages write whole lines through it, so
	// lines never interleave.
	r.stderr = &lockedWriter{w: io.Discard}
	if opts.Stderr != nil {
		r.stderr.w = opts.Stderr
	}
	r.env = environ()
	r.limits = buildLimits(p, r.clk)

	stages, err := r.build()
	if err != nil {
		return nil, err
	}
	// After build: the pools have taken their workers' share of the CPUs
	// as GOMAXPROCS stands, and "workers: auto" has been read from it.
	defer r.shareCPUs(stages)()

	rep := &report.Report{Pipeline: p.Name, File: p.File, Start: r.clk.Now(), Failures: []report.Failure{}}
	// Kinds find the run's clock in their context: compute's sleep and
	// fetch's timeout wait on it.
	base := clock.NewContext(parent, r.clk)
	if p.Timeout > 0 {
		var cancelT context.CancelFunc
		base, cancelT = clock.WithTimeoutCause(base, r.clk, p.Timeout, &runStop{
			status: report.StatusTimedOut, timeout: true, limit: p.Timeout,
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

	rep.End = r.clk.Now()
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

// failRun records why the run fails (the first reason wins) without
// cancelling it: the stage that failed stops its own upstream, and what it
// handed on before finishes downstream.
func (r *run) failRun(s *runStop) {
	s.msg = r.red.String(s.msg)
	r.mu.Lock()
	if r.stop == nil {
		r.stop = s
	}
	r.mu.Unlock()
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
	return &runStop{status: report.StatusInterrupted, msg: msg}
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
		rep.Status, rep.ExitCode = report.StatusSucceeded, 0
	case stop.status == report.StatusInterrupted:
		rep.Status, rep.ExitCode, rep.Reason = report.StatusInterrupted, 130, stop.msg
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
			if x.policy.onError == spec.OnErrorSkip || x.done.first > 0 {
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
	// GOMAXPROCS, not NumCPU: it honours a container's CPU quota (cgroup)
	// as well as the affinity mask (taskset), as os.cpu_count()... and
	// more: Python counts the quota only through os.process_cpu_count().
	cpus := runtime.GOMAXPROCS(0)
	switch s.Mode {
	case spec.ModeProcess:
		return cpus
	case spec.ModeCluster:
		// The workers' slots decide what runs at once; this bounds the
		// stage's items in flight across them.
		return 64
	}
	return min(32, 4*cpus)
}

// build constructs every stage, the default sink included; on failure,
// what was built is closed again.
func (r *run) build() (_ []stageExec, err error) {
	var out []stageExec
	defer func() {
		if err != nil {
			for _, s := range out {
				s.abort(err)
			}
		}
	}()
	for i, s := range r.p.RunStages() {
		st, err := r.buildStage(i, s)
		if err != nil {
			if i >= len(r.p.Stages) {
				err = fmt.Errorf("the default sink (%s): %w", spec.DefaultSink, err)
			}
			return out, &SetupError{Stage: s.Name, Err: err}
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
	if k.Role != s.Role {
		return nil, fmt.Errorf("%q is a %s kind, not a %s", s.Kind, k.Role, s.Role)
	}
	workers := 1
	if s.Role == steps.RoleStep && !k.Barrier {
		workers = workersOf(s)
	}
	env := r.stepEnv(s, workers)
	b := &stage{r: r, spec: s, name: s.Name, when: s.When,
		rep: &report.Stage{Name: s.Name, Kind: s.Kind, Role: string(s.Role), Mode: string(spec.ModeThread), Workers: workers}}
	if s.Role == steps.RoleStep && !k.Barrier {
		return r.buildStepStage(b, s, k, env, workers)
	}
	// Sources, barriers and sinks run in this process whatever the mode: a
	// barrier sees every item in one place, the ends are the run's own.
	built, err := k.Build(s.Options, &conf.Context{Vars: r.vars}, env)
	if err != nil {
		return nil, err
	}
	switch {
	case built.Source != nil:
		b.lim = stageLimiter(s, r.limits, r.clk)
		return &sourceStage{stage: b, src: built.Source}, nil
	case built.Barrier != nil:
		return &barrierStage{stage: b, bar: built.Barrier, policy: newErrorPolicy(s, r.red)}, nil
	default:
		return &sinkStage{stage: b, sink: built.Sink}, nil
	}
}

// buildStepStage gives a step stage the runner of its mode.
func (r *run) buildStepStage(b *stage, s *spec.Stage, k *steps.Kind, env *steps.Env, workers int) (stageExec, error) {
	factory := r.opts.Runners[s.Mode]
	if factory == nil && s.Mode == spec.ModeThread {
		factory = ThreadRunner
	}
	if factory == nil {
		return nil, fmt.Errorf("mode: %s needs a runner that this program did not give the engine (Options.Runners has no %q); use mode: thread", s.Mode, s.Mode)
	}
	if s.Mode != spec.ModeThread {
		// The step is built elsewhere; building it here once too finds
		// what can never work (a bad option value, an out_dir outside the
		// folder) before anything runs, as in thread mode, instead of as
		// the failure of every item.
		built, err := k.Build(s.Options, &conf.Context{Vars: r.vars}, env)
		if err != nil {
			return nil, err
		}
		_ = built.Close()
	}
	runner, err := factory(StageRun{Pipeline: r.p, Stage: s, Workers: workers, Registry: r.opts.Registry, Env: env, Stderr: env.Stderr})
	if err != nil {
		if s.Mode == spec.ModeThread {
			return nil, err
		}
		return nil, fmt.Errorf("starting the %s runner: %w", s.Mode, err)
	}
	// A virtual clock moves when this process is idle: an item waiting on
	// a worker process or machine would look idle, and its own timeout
	// would fire at once in virtual time.
	// (Clocks that jump when asked, as tests' fake clocks do, are not
	// concerned: only a clock that reads idleness, which has Busy.)
	_, readsIdle := r.clk.(interface{ Busy() func() })
	if _, inThread := runner.(stepRunner); !inThread && readsIdle {
		_ = runner.Close()
		return nil, fmt.Errorf("mode: %s runs items outside this process, which a virtual clock (flow test) cannot follow; run the stage with the thread runner (engine.ThreadRunner)", s.Mode)
	}
	b.rep.Mode = string(s.Mode)
	if s.Mode != spec.ModeThread {
		// Which process or machine ran what; goroutine slots of thread
		// mode say nothing worth a map update per item.
		b.rep.ByWorker = map[string]int64{}
	}
	st := &stepStage{stage: b, runner: runner, workers: workers}
	// A runner that queues items ahead (the process pool batches them
	// over its pipes) needs more callers than workers.
	if f, ok := runner.(InFlighter); ok && f.InFlight() > workers {
		st.workers = f.InFlight()
	}
	st.configure(r.limits)
	return st, nil
}

// stepEnv is the environment of a kind built in this process.
func (r *run) stepEnv(s *spec.Stage, workers int) *steps.Env {
	stdin, stdout := r.opts.Stdin, r.opts.Stdout
	if stdin == nil {
		stdin = os.Stdin
	}
	if stdout == nil {
		stdout = os.Stdout
	}
	return &steps.Env{Dir: r.p.Dir, Stage: s.Name, Vars: r.vars, Env: r.env, Workers: workers, Timeout: s.Timeout,
		Stdin: stdin, Stdout: stdout, Stderr: r.stderr, Outside: r.opts.Outside}
}

// ThreadRunner is the runner of `mode: thread`: the step built in this
// process, called from the stage's goroutines.
func ThreadRunner(sr StageRun) (Runner, error) {
	k, ok := sr.Registry.Lookup(sr.Stage.Kind)
	if !ok {
		return nil, fmt.Errorf("unknown step kind %q", sr.Stage.Kind)
	}
	built, err := k.Build(sr.Stage.Options, &conf.Context{Vars: sr.Env.Vars}, sr.Env)
	if err != nil {
		return nil, err
	}
	return stepRunner{built}, nil
}

// stepRunner runs a step in this process.
type stepRunner struct{ b steps.Built }

func (r stepRunner) Do(ctx context.Context, in steps.Input, _ *Attempt) (any, error) {
	return r.b.Step.Do(ctx, in)
}

func (r stepRunner) Close() error { return r.b.Close() }

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

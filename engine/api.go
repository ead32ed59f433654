// Package engine runs a validated pipeline: one executor per stage, stages
// connected by bounded channels so results stream with backpressure. It knows
// steps only through the steps interfaces and imports no step kind; it runs
// a step stage's items through the Runner of the stage's mode.
package engine

import (
	"context"
	"io"
	"time"

	"github.com/flowrun/flow/clock"
	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
)

// Runner runs one attempt of one item of a stage: in this process (thread
// mode), in a worker process (process mode), or wherever its mode sends it.
// Do is called concurrently by up to the stage's worker count goroutines
// (InFlight, when the runner has it) and must return promptly once ctx is
// done. at describes the attempt: the engine fills in what it knows, and a
// runner that moves the item elsewhere names the worker that ran it.
type Runner interface {
	Do(ctx context.Context, in steps.Input, at *Attempt) (any, error)
	Close() error
}

// InFlighter is implemented by a Runner that can serve more items at once
// than the stage has workers. The process pool does: it queues cheap items
// in its worker processes ahead of time so that they cross the pipes by the
// hundred instead of paying a round trip each (about 9x the throughput for
// trivial items). The engine should then call Do from up to InFlight()
// goroutines; the stage's worker count still bounds the processes.
type InFlighter interface {
	InFlight() int
}

// BatchRunner is implemented by a Runner that takes many items per call:
// one hand-over of hundreds of items instead of a goroutine waiting on each
// (the process pool sends cheap items to its workers by the frame anyway,
// and a goroutine hop per item would cost more than the item).
//
// The engine uses DoBatch for the first attempt of the items of a stage
// with `order: input`, without a per-attempt timeout, rate and concurrency
// limits or `complete: first`; everything else (later attempts after a
// failure, stages it does not batch) goes through Do, which a BatchRunner
// must serve as well.
// A runner that wraps another (a cache) and does not implement DoBatch
// itself gets Do calls only.
type BatchRunner interface {
	Runner
	// DoBatch runs one attempt of each item. It calls done(i, v, err)
	// exactly once for each items[i], from any goroutine, as soon as that
	// item is answered, having first filled in items[i].At (the worker that
	// ran it, its redeliveries); it returns once every item was answered.
	// done must not block. When ctx ends, DoBatch answers every item still
	// unanswered at once with an error wrapping ctx.Err(), as Do would.
	DoBatch(ctx context.Context, items []BatchItem, done func(i int, v any, err error))
}

// RunsBatchRunner is a BatchRunner that can also answer the items of a
// call in runs: the process pool reads its workers' answers by the frame,
// hundreds at a time, and the engine settles a run under one lock instead
// of one per item.
type RunsBatchRunner interface {
	BatchRunner
	// DoBatchRuns is DoBatch, with run as a second way to answer: run(as)
	// answers the items as[j].I, each exactly once over both ways, with
	// the contract of done for each (At filled in first, any goroutine).
	// run must not block; as is the runner's again once run returns.
	DoBatchRuns(ctx context.Context, items []BatchItem, done func(i int, v any, err error), run func(as []BatchAnswer))
}

// BatchAnswer is the answer to items[I] of a DoBatchRuns call.
type BatchAnswer struct {
	I   int
	V   any
	Err error
}

// BatchItem is one item of a DoBatch call and its attempt.
type BatchItem struct {
	In steps.Input
	At *Attempt
}

// StageRun is what a RunnerFactory gets to build the runner of one stage.
type StageRun struct {
	Pipeline *spec.Pipeline // validated; Pipeline.Source is the text to send
	Stage    *spec.Stage
	Workers  int // resolved worker count
	Registry *steps.Registry
	// Env is the environment a step built in this process gets; a runner
	// that builds the step elsewhere rebuilds its own from the pipeline.
	Env *steps.Env
	// Stderr receives what the runner has to say (workers' output, restarts).
	Stderr io.Writer
}

// RunnerFactory builds the Runner of a stage of its mode.
type RunnerFactory func(sr StageRun) (Runner, error)

// Runners maps each mode to its factory. Thread mode is built in (Run adds
// ThreadRunner when the map has no entry for it); every other mode is given
// by the program: procpool.Factory for process mode.
type Runners map[spec.Mode]RunnerFactory

// Options configure a run.
type Options struct {
	Registry *steps.Registry
	Stdin    io.Reader
	Stdout   io.Writer
	Stderr   io.Writer
	// Runners builds the runners of step stages by mode. A stage whose mode
	// has no factory fails to start with a clear error.
	Runners Runners
	// Events, if set, receives every item's outcome (progress bars, a
	// timeline, a journal). Without it the engine builds no events and
	// times only a sample of items, for the report's latency percentiles.
	Events EventSink
	// Clock is the time the run waits on and measures with (nil:
	// clock.Real); `flow test` gives a clock.Virtual. Its context carries
	// it to the kinds (clock.From). With a clock that moves when the
	// process is idle (clock.Virtual: it has Busy), every step stage must
	// run through ThreadRunner, or Run refuses to start.
	Clock clock.Clock
	// Outside, if set, is every kind's way out of the process (the
	// network, programs, files) in place of the real world: `flow test`
	// gives its mocks (steps.Env.Outside).
	Outside steps.Outside
	// OwnsProcess says this run is the only one in its process, as in the
	// flow command: the engine may then size the Go runtime to the run
	// (shareCPUs: fewer Ps while every step stage runs in worker
	// processes). Programs and tests that run pipelines side by side
	// leave it false.
	OwnsProcess bool
}

// EventSink receives progress as it happens. Calls come from many goroutines
// (at most one at a time per stage for ItemDone). StageStarted is called for
// every stage, in pipeline order, before any item moves, the default sink
// included (spec.Pipeline.RunStages). ItemDone is called once per item and
// stage, when its outcome is final. The event and what it points to are
// valid only during the call: a consumer copies what it keeps.
type EventSink interface {
	// StageStarted announces a stage with its resolved worker count and the
	// number of items expected (-1 when unknown).
	StageStarted(stage string, workers int, total int64)
	ItemDone(ev *ItemEvent)
	StageDone(stage string)
}

// ItemEvent is one item leaving one stage, with what a timeline, a journal
// for resume or a progress bar needs. Item, Result and Err are redacted.
type ItemEvent struct {
	Stage string
	// Index is the item's stable index from the source (-1 for an item a
	// barrier held back past the 134 million it can name).
	Index   int64
	Outcome report.Outcome // succeeded, failed, skipped, cancelled or filtered
	Item    any            // the stage's input (nil for held-back barrier items)
	Result  any            // the result handed on, on success
	Err     error          // the failure, for failed and skipped items
	// Attempts are the item's attempts in this stage, in order; empty for
	// items that never ran (filtered, cancelled while queued) and for the
	// stages that do not attempt (sources, barriers).
	Attempts []Attempt
	// Wait is the time the item spent waiting on rate and concurrency
	// limits in this stage, over all its attempts.
	Wait time.Duration
}

// Attempt is one try of one item.
type Attempt struct {
	// Worker names who ran it: "thread 3" (the stage's goroutine slot),
	// "pid 4242" (a worker process), or a remote worker's name.
	Worker string
	// Start and End bound the attempt, limits waited on excluded.
	Start, End time.Time
	// Class is the error class of a failed attempt ("" when it succeeded).
	Class string
	// Redelivered counts deliveries of this attempt beyond the first: a
	// worker that died holding the item is not the item's fault, and such
	// a delivery does not count against the retry budget.
	Redelivered int
	// Cached: the result came from a result cache, not from running the
	// step (a runner that consults one sets it). The stage counts such
	// successes in report.Stage.Cached.
	Cached bool
}

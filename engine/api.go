// Package engine runs a validated pipeline: one executor per stage, stages
// connected by bounded channels so results stream with backpressure. It knows
// steps only through the steps interfaces and imports no step kind.
package engine

import (
	"context"
	"io"

	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
)

// Runner runs one attempt of one item of a stage. In thread mode it is the
// step itself; in process mode it forwards the item to a worker process.
// Do is called concurrently by up to the stage's worker count goroutines and
// must return promptly once ctx is done.
type Runner interface {
	Do(ctx context.Context, in steps.Input) (any, error)
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

// RunnerFactory builds the Runner of a `mode: process` stage. It is given the
// pipeline (for the worker processes to load the same file and variables),
// the stage and its resolved worker count.
type RunnerFactory func(p *spec.Pipeline, s *spec.Stage, workers int) (Runner, error)

// Options configure a run.
type Options struct {
	Registry *steps.Registry
	Stdin    io.Reader
	Stdout   io.Writer
	Stderr   io.Writer
	// Process builds runners for `mode: process` stages. Nil makes such
	// stages fail to start with a clear error.
	Process RunnerFactory
	// Events, if set, receives progress events (for bars and plain lines).
	Events EventSink
}

// EventSink receives progress as it happens. Calls come from many goroutines
// (at most one at a time per stage for ItemDone). StageStarted is called for
// every stage, in pipeline order, before any item moves; the engine appends
// the default sink (named "print") when the pipeline has none. ItemDone is
// called once per item and stage, when its outcome is final: "succeeded"
// once its result was handed on, "cancelled" for items stopped before or
// while running (or whose result could not be handed on). Items a barrier
// holds back are reported with their Index (-1 past 134 million items) and
// no item. Errors are redacted.
type EventSink interface {
	// StageStarted announces a stage with its resolved worker count and the
	// number of items expected (-1 when unknown).
	StageStarted(stage string, workers int, total int64)
	// ItemDone reports one item leaving a stage: its outcome ("succeeded",
	// "failed", "skipped", "cancelled", "filtered"), its input and result.
	ItemDone(stage string, outcome string, in steps.Input, result any, err error)
	StageDone(stage string)
}

// Package steps is the contract between the engine and the kinds of work a
// stage can do. Each kind lives in a package of its own under steps/ and
// registers itself by name in a Registry (steps/all wires them all); the
// registry drives validation, `flow steps`, the docs and schema.json.
//
// Steps handle one item at a time and honour ctx. The engine alone owns
// concurrency, order, limits, timeouts, retries and completion policies.
package steps

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/flowrun/flow/tmpl"
)

// Role says where in a pipeline a kind may stand.
type Role string

const (
	RoleSource Role = "source" // first stage: produces items
	RoleStep   Role = "step"   // middle: one item in, one result out
	RoleSink   Role = "sink"   // last stage: consumes items
)

// Input is one item handed to a step.
type Input struct {
	// Index is the item's position in the source stream; it is stable across
	// stages and is what `order: input` restores.
	Index int64
	Item  any
}

// Step handles one item. Results must be JSON-shaped values (nil, bool,
// int64, float64, string, []any, map[string]any) so that they can cross a
// process boundary and be written by any sink.
type Step interface {
	Do(ctx context.Context, in Input) (any, error)
}

// Func adapts a function to Step.
type Func func(ctx context.Context, in Input) (any, error)

func (f Func) Do(ctx context.Context, in Input) (any, error) { return f(ctx, in) }

// Source produces items lazily: emit blocks while downstream is busy
// (backpressure) and returns an error once the run is stopping, which the
// source must return promptly.
type Source interface {
	Items(ctx context.Context, emit func(item any) error) error
}

// Counter is implemented by sources that know their size up front (for
// progress totals). It must be cheap.
type Counter interface {
	Count() (n int64, ok bool)
}

// Barrier is implemented by steps that must see all their input before
// emitting (sort, top). The engine calls Add for every item in arrival order,
// then Flush once the input is exhausted.
type Barrier interface {
	Add(in Input) error
	Flush(ctx context.Context, emit func(Input) error) error
}

// Record is what reaches a sink: the item, and, for items kept under
// `on_error: keep`, the error they carry.
type Record struct {
	Index int64
	Item  any
	Err   error
}

// Sink consumes the results of a pipeline. Write is called from one
// goroutine, in the order the last stage delivers. Close is called exactly
// once; with a non-nil err the run failed or was interrupted, and a sink that
// writes a file must then leave the old file in place.
type Sink interface {
	Write(ctx context.Context, r Record) error
	Close(ctx context.Context, runErr error) error
}

// Env is what a kind's constructor may use besides its own options.
type Env struct {
	// Dir is the directory of the pipeline file; relative paths in options
	// are resolved against it.
	Dir   string
	Stage string
	Vars  map[string]any
	Env   map[string]string
	// Workers is the stage's resolved worker count.
	Workers int
	// Timeout is the stage's per-attempt timeout (0: none), for kinds with
	// a default bound of their own that the stage's should replace.
	Timeout time.Duration
	Stdin   io.Reader
	Stdout  io.Writer
	Stderr  io.Writer
	// Outside is how the kind reaches the network, programs and files; nil
	// is the real world (see Outside). `flow test` sets it to its mocks.
	Outside Outside
}

// Scope returns an expression scope for one item.
func (e *Env) Scope(ctx context.Context, in Input) *tmpl.Scope {
	return &tmpl.Scope{Item: in.Item, Index: in.Index, Vars: e.Vars, Env: e.Env, Ctx: ctx}
}

// Error is an item error with hints for the engine's retry policy.
type Error struct {
	Err error
	// Class names the failure for `retry.on`: "timeout", "connection",
	// "http_429", "http_5xx", "http_4xx", "exit", "decode", "error"...
	Class string
	// Permanent errors are never retried (bad input, 4xx other than 429).
	Permanent bool
	// RetryAfter, when set, is the least wait before the next attempt
	// (an HTTP Retry-After header).
	RetryAfter time.Duration
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Permanent marks err as not worth retrying.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &Error{Err: err, Class: ClassOf(err), Permanent: true}
}

// Errorf returns an item error of the given class.
func Errorf(class, format string, args ...any) error {
	return &Error{Err: fmt.Errorf(format, args...), Class: class}
}

// ClassOf returns the class of err ("timeout" for deadline errors, "error"
// when nothing more is known).
func ClassOf(err error) string {
	var e *Error
	if errors.As(err, &e) && e.Class != "" {
		return e.Class
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timeout"
	}
	return "error"
}

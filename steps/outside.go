package steps

import (
	"context"
	"io"
	"net/http"
)

// Outside is how kinds reach beyond the process: the network (fetch), programs
// (exec) and files (the file sources, analyze-logs, resize, the write sink).
// Env.Outside is nil in a real run, and every kind then does what it always
// did, at no cost; `flow test` sets one that answers from the test's mocks
// (package flowtest/mock) and refuses whatever the test did not mock, so that
// a test never makes a real request, runs a real program or touches a real
// file.
//
// A kind keeps its own protections on both paths: with an Outside it still
// opens files with its regular-file checks and size bounds, writes them
// atomically and confines them, only at the place Path names.
type Outside interface {
	// Transport carries every HTTP request of the stage, redirects
	// included. The request's context holds the item (AtFrom).
	Transport(stage string) http.RoundTripper

	// Run runs a program instead of starting it: it writes what the
	// program prints to c.Stdout and c.Stderr, reads c.Stdin if it likes,
	// and returns the exit code. An error means the program could not be
	// started; a *Error keeps its class. Run returns promptly, with the
	// context's cause, once ctx is done.
	Run(ctx context.Context, c *Command) (exitCode int, err error)

	// Path returns where the kind finds the file or folder the pipeline
	// names p (absolute and clean), for op. It must keep the structure
	// below p: what the pipeline calls p/x is Path(p)/x, so that a kind may
	// walk a folder, or open an os.Root, at Path(p) and find the rest
	// under it. For OpWrite the folder that holds the result exists. An
	// error (a *Error keeps its class) fails the access.
	Path(ctx context.Context, at At, op FileOp, p string) (string, error)
}

// At names who reaches outside: the stage, and the index of the item being
// handled (-1 outside any item: a source listing its files, a sink, a stage
// being built).
type At struct {
	Stage string
	Index int64
}

// FileOp is what a kind is about to do with a path.
type FileOp int

const (
	// OpRead reads a file, or lists or walks a folder.
	OpRead FileOp = iota
	// OpWrite creates or replaces a file, or a folder and files under it.
	OpWrite
)

func (o FileOp) String() string {
	if o == OpWrite {
		return "write"
	}
	return "read"
}

// Command is one run of a program as exec would start it.
type Command struct {
	At At
	// Argv is the program and its arguments. With Shell, it holds the
	// arguments "$1", "$2"... of the command line, and Line the line.
	Argv  []string
	Shell bool
	Line  string
	// Dir is the working directory.
	Dir string
	// Env holds the variables the stage adds (`env:`), KEY=VALUE; the
	// program would also inherit flow's environment, without FLOW_VAR_*.
	Env []string
	// Stdin is the standard input (nil: empty).
	Stdin io.Reader
	// Stdout and Stderr receive the program's output. Stdout refuses bytes
	// past the stage's max_output (the item then fails with 'too_large').
	Stdout, Stderr io.Writer
}

type atKey struct{}

// WithAt returns ctx carrying at, for the requests a kind makes through
// Outside.Transport.
func WithAt(ctx context.Context, at At) context.Context {
	return context.WithValue(ctx, atKey{}, at)
}

// AtFrom returns the At that ctx carries; ok is false when it carries none.
func AtFrom(ctx context.Context) (at At, ok bool) {
	at, ok = ctx.Value(atKey{}).(At)
	return at, ok
}

// ReadPath is where a kind holding env (not nil) reads the file or folder
// p: p itself when env has no Outside, the real world, else what
// Outside.Path says. It inlines to a nil check.
func ReadPath(ctx context.Context, env *Env, index int64, p string) (string, error) {
	if env.Outside != nil {
		return env.outsideRead(ctx, index, p)
	}
	return p, nil
}

// WritePath is ReadPath for a file or folder the kind writes.
func WritePath(ctx context.Context, env *Env, index int64, p string) (string, error) {
	if env.Outside != nil {
		return env.outsideWrite(ctx, index, p)
	}
	return p, nil
}

// The calls of Outside.Path stay out of line so that ReadPath and
// WritePath inline.

//go:noinline
func (e *Env) outsideRead(ctx context.Context, index int64, p string) (string, error) {
	return e.Outside.Path(ctx, At{Stage: e.Stage, Index: index}, OpRead, p)
}

//go:noinline
func (e *Env) outsideWrite(ctx context.Context, index int64, p string) (string, error) {
	return e.Outside.Path(ctx, At{Stage: e.Stage, Index: index}, OpWrite, p)
}

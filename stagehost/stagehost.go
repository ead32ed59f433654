// Package stagehost is the worker side of running a stage elsewhere,
// without any transport: what the parent sends a worker (HelloFor: the
// validated pipeline text, the effective variables, the stage) and how the
// worker builds exactly the step the parent would (Build). Worker processes
// over pipes (procpool) use it today; workers reached through a message
// queue use the same hello and the same build.
package stagehost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/protocol"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
)

// HelloFor builds the Hello that lets a worker rebuild stage s of p: the
// pipeline text that was validated (p.Source, never the file read again:
// the file may have changed since), its effective variables and the stage.
func HelloFor(p *spec.Pipeline, s *spec.Stage, workers int) (protocol.Hello, error) {
	src := p.Source
	if len(src) == 0 {
		// A pipeline built in memory: write its tree back.
		if p.Node == nil {
			return protocol.Hello{}, fmt.Errorf("stage %q: the pipeline has no text to give to workers", s.Name)
		}
		var err error
		if src, err = yaml.Marshal(p.Node); err != nil {
			return protocol.Hello{}, fmt.Errorf("stage %q: cannot give the pipeline to workers: %w", s.Name, err)
		}
	}
	return protocol.Hello{
		Version: protocol.Version,
		File:    p.File,
		Dir:     p.Dir,
		Source:  string(src),
		Vars:    p.Vars.Map(),
		Stage:   s.Name,
		Workers: workers,
		Memory:  int64(s.Memory),
	}, nil
}

// Build constructs the stage's step exactly as the parent would: same
// text, same effective variables, the worker's own environment. The step's
// output goes to stderr, which the parent forwards. The caller closes the
// returned value after the last item (steps.Built.Close).
func Build(h *protocol.Hello, reg *steps.Registry, stderr io.Writer) (steps.Built, error) {
	// Validated: the parent checked the whole text; Build below decodes
	// and checks this stage's options, the only ones a worker needs.
	p, err := spec.Parse(h.File, []byte(h.Source), spec.Options{Validated: true}, reg)
	if err != nil {
		return steps.Built{}, fmt.Errorf("worker cannot load the pipeline: %w", err)
	}
	p.Dir = h.Dir
	for _, v := range p.Vars.List {
		if val, ok := h.Vars[v.Name]; ok {
			v.Value = val
		}
	}
	var st *spec.Stage
	for _, s := range p.Stages {
		if s.Name == h.Stage {
			st = s
		}
	}
	if st == nil {
		return steps.Built{}, fmt.Errorf("the pipeline has no stage %q", h.Stage)
	}
	k, ok := reg.Lookup(st.Kind)
	if !ok || k.Role != steps.RoleStep {
		return steps.Built{}, fmt.Errorf("stage %q: %q is not a step kind of this flow binary", st.Name, st.Kind)
	}
	if k.Barrier {
		return steps.Built{}, fmt.Errorf("stage %q: kind %q does not handle items one at a time (a barrier such as sort or top runs in the parent; remove mode: %s)", st.Name, st.Kind, st.Mode)
	}
	vars := p.Vars.Map()
	env := &steps.Env{Dir: p.Dir, Stage: st.Name, Vars: vars, Env: Environ(), Workers: h.Workers, Timeout: st.Timeout,
		Stdin: bytes.NewReader(nil), Stdout: stderr, Stderr: stderr}
	b, err := k.Build(st.Options, &conf.Context{Vars: vars}, env)
	if err != nil {
		return steps.Built{}, fmt.Errorf("stage %q: %w", st.Name, err)
	}
	if h.Memory > 0 {
		// A soft limit a little under the hard one makes the Go heap
		// collect harder before the parent has to kill this worker.
		debug.SetMemoryLimit(h.Memory / 10 * 9)
	}
	return b, nil
}

// Environ is the process environment as the `env` map of expressions.
func Environ() map[string]string {
	m := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// Result is the answer to one item as it crosses to the parent: the value
// encoded, or the error with what the retry policy needs.
func Result(id uint64, v any, err error) protocol.Result {
	if err == nil {
		raw, encErr := protocol.AppendValue(nil, v)
		if encErr == nil {
			return protocol.Result{ID: id, Raw: raw}
		}
		err = steps.Permanent(fmt.Errorf("the result cannot be sent back from the worker: %w", encErr))
	}
	info := &protocol.ErrorInfo{Message: err.Error(), Class: steps.ClassOf(err)}
	var se *steps.Error
	if errors.As(err, &se) {
		info.Permanent, info.RetryAfter = se.Permanent, se.RetryAfter
	}
	switch {
	case errors.Is(err, context.Canceled):
		info.Class = "cancelled"
	case errors.Is(err, context.DeadlineExceeded):
		info.Class = "timeout"
	}
	return protocol.Result{ID: id, Err: info}
}

// ErrorOf turns an answer's error back into the item's error on the
// parent's side.
func ErrorOf(e *protocol.ErrorInfo) error {
	return &steps.Error{Err: errors.New(e.Message), Class: e.Class, Permanent: e.Permanent, RetryAfter: e.RetryAfter}
}

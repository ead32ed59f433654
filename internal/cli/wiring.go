package cli

import (
	"io"

	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/procpool"
	"github.com/flowrun/flow/progress"
	"github.com/flowrun/flow/schema"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
)

// The seams between the CLI and the packages that do the work.

// runEngine runs a validated pipeline.
// A variable so that the CLI's own tests can stand in for it.
var runEngine = engine.Run

// runners builds the runners of step stages by mode (thread mode is the
// engine's own): `mode: process` stages get pools of worker processes
// re-executing this binary (see cmd/flow's main).
var runners = engine.Runners{spec.ModeProcess: procpool.Factory}

// runOutput is where a run's progress, results and messages go.
type runOutput struct {
	events engine.EventSink
	// stdout and stderr are what everything of the run writes to, so that
	// progress bars never overwrite it (progress.Outputs).
	stdout, stderr io.Writer
	// close finishes the progress output; after it, stdout and stderr
	// write straight through (the closing summary comes after it).
	close func()
}

// newProgress returns the progress sink for a --progress mode and the
// writers the run must use beside it.
func newProgress(mode string, stdout, stderr io.Writer, p *spec.Pipeline, reg *steps.Registry) (*runOutput, error) {
	s, err := progress.New(mode, stderr, p, reg)
	if err != nil {
		return nil, err
	}
	o := &runOutput{events: s, close: s.Close}
	if _, none := s.(progress.None); none {
		// No consumer: the engine then builds no events and reads the
		// clock for a sample of items only.
		o.events = nil
	}
	o.stdout, o.stderr = progress.Outputs(s, stdout, stderr)
	return o, nil
}

// generateSchema returns schema.json as generated from the registry.
func generateSchema(reg *steps.Registry) ([]byte, error) { return schema.Generate(reg) }

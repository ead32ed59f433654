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

// newProgress returns the progress sink for a --progress mode and a function
// that finishes its output (before the closing summary is printed).
func newProgress(mode string, stderr io.Writer, p *spec.Pipeline, reg *steps.Registry) (engine.EventSink, func(), error) {
	s, err := progress.New(mode, stderr, p, reg)
	if err != nil {
		return nil, nil, err
	}
	if _, none := s.(progress.None); none {
		// No consumer: the engine then builds no events and reads the
		// clock for a sample of items only.
		return nil, s.Close, nil
	}
	return s, s.Close, nil
}

// generateSchema returns schema.json as generated from the registry.
func generateSchema(reg *steps.Registry) ([]byte, error) { return schema.Generate(reg) }

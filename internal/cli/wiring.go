package cli

import (
	"context"
	"errors"
	"io"

	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/schema"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
)

// The seams to packages built alongside the CLI. Each placeholder is replaced
// by the real call as soon as the package lands.

// runEngine runs a validated pipeline.
var runEngine = func(ctx context.Context, p *spec.Pipeline, o engine.Options) (*report.Report, error) {
	return nil, errors.New("the engine is not built into this binary yet")
}

// processFactory builds the runners of `mode: process` stages.
func processFactory() engine.RunnerFactory { return nil }

// newProgress returns the progress sink for a --progress mode and a function
// that finishes its output.
func newProgress(mode string, stderr io.Writer, p *spec.Pipeline) (engine.EventSink, func()) {
	return nil, func() {}
}

// generateSchema returns schema.json as generated from the registry.
func generateSchema(reg *steps.Registry) ([]byte, error) { return schema.Generate(reg) }

// Package all wires every built-in kind into a registry: the one place that
// knows the full list.
package all

import (
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/steps/analyzelogs"
	"github.com/flowrun/flow/steps/barrier"
	"github.com/flowrun/flow/steps/compute"
	"github.com/flowrun/flow/steps/exec"
	"github.com/flowrun/flow/steps/fetch"
	"github.com/flowrun/flow/steps/resize"
	"github.com/flowrun/flow/steps/sink"
	"github.com/flowrun/flow/steps/source"
)

// Registry returns a new registry holding every built-in kind.
func Registry() *steps.Registry {
	r := steps.NewRegistry()
	source.Register(r)
	sink.Register(r)
	barrier.Register(r)
	compute.Register(r)
	fetch.Register(r)
	analyzelogs.Register(r)
	resize.Register(r)
	exec.Register(r)
	return r
}

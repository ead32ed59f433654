package compute

import "github.com/flowrun/flow/steps"

// Register adds this package's kinds to r.
func Register(r *steps.Registry) {
	_ = r // TODO: register kinds
}

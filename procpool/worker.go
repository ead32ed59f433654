// Package procpool runs a stage's items in worker processes: re-executions of
// the flow binary in a worker role, speaking the protocol package's framed
// messages over pipes.
package procpool

import (
	"fmt"
	"os"

	"github.com/flowrun/flow/steps"
)

// RoleEnv is the environment variable that starts a binary in the worker role.
const RoleEnv = "FLOW_ROLE"

// IsWorker reports whether this process was started as a worker. main (and
// TestMain of tests that use process mode) must check it first thing.
func IsWorker() bool { return os.Getenv(RoleEnv) == "worker" }

// WorkerMain serves items on stdin/stdout until the parent closes stdin, and
// returns the process exit code.
func WorkerMain(reg *steps.Registry) int {
	_ = reg
	fmt.Fprintln(os.Stderr, "flow: worker role not implemented yet")
	return 2
}

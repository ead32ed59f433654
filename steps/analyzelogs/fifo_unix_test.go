//go:build unix

package analyzelogs

import (
	"testing"

	"github.com/flowrun/flow/steps/steptest"
)

// A FIFO (a glob can match one) used to block the step in open(2), where
// no timeout or signal reaches; it must fail its item at once, permanently.
func TestStepRefusesNonRegularFiles(t *testing.T) {
	dir := t.TempDir()
	steptest.RefusesNonRegularFiles(t, dir, "pipe.log", mustBuild(t, dir, "{}"))
}

//go:build unix

package resize

import (
	"testing"

	"github.com/flowrun/flow/steps/steptest"
)

// A FIFO (a glob can match one) used to block os.ReadFile in open(2),
// where no timeout or signal reaches; a device is endless. Both must fail
// their item at once, permanently.
func TestNonRegularFilesRefused(t *testing.T) {
	dir := t.TempDir()
	steptest.RefusesNonRegularFiles(t, dir, "pipe.png", mustStep(t, dir, "width: 10"))
}

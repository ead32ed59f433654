package mock_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flowrun/flow/steps"
)

// Under mocks exec starts no process at all: not the program, and not the
// guard a real exec stage starts once to kill what its programs leave.
func TestExecUnderMocksStartsNoProcess(t *testing.T) {
	rec, _, _ := install(t, decode(t, "exec:\n  - {argv: [true]}\n"), nil)
	if _, err := execStep(t, rec, `argv: ["true"]`).Do(context.Background(), steps.Input{Item: 1}); err != nil {
		t.Fatal(err)
	}
	tasks, _ := filepath.Glob("/proc/self/task/*/children")
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Skipf("cannot read %s: %v", f, err)
		}
		if s := strings.TrimSpace(string(b)); s != "" {
			t.Errorf("child processes %s (%s)", s, f)
		}
	}
}

//go:build unix

// Package leftovertest helps tests of atomic writes make the leftovers of a
// killed run.
package leftovertest

import (
	"os/exec"
	"testing"

	"github.com/flowrun/flow/internal/leftover"
)

// DeadPID returns the pid of a child that has exited and been reaped: the
// owner of a leftover whose writer is gone. The test is skipped when no such
// pid can be had (no 'true' to run, or the pid already reused).
func DeadPID(t testing.TB) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skipf("cannot run 'true' to get a dead pid: %v", err)
	}
	pid := cmd.Process.Pid
	if !leftover.Gone(pid) {
		t.Skipf("pid %d was reused already", pid)
	}
	return pid
}

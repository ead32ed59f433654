//go:build unix

package exec

import (
	osexec "os/exec"
	"sync"
	"syscall"
)

// group is the process group of one run: the program is its leader, and
// whatever the program starts joins it unless it asks otherwise.
type group struct {
	cmd  *osexec.Cmd
	once sync.Once
}

func newGroup(cmd *osexec.Cmd) *group {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return &group{cmd: cmd}
}

// terminate asks the whole group to stop (exec's Cancel hook: it runs when
// the item's context is done). exec kills the leader WaitDelay later if it
// is still running, and kill then finishes off the rest of the group.
func (g *group) terminate() error {
	if g.cmd.Process == nil {
		return nil
	}
	// The group id is the leader's pid (Setpgid with Pgid 0).
	err := syscall.Kill(-g.cmd.Process.Pid, syscall.SIGTERM)
	if err == syscall.ESRCH {
		return nil
	}
	return err
}

// kill sends SIGKILL to the whole group, once. While any member lives the
// kernel does not hand the group id to a new process; once all are gone the
// call finds no group (ESRCH) and does nothing.
func (g *group) kill() {
	g.once.Do(func() {
		if g.cmd.Process != nil {
			_ = syscall.Kill(-g.cmd.Process.Pid, syscall.SIGKILL)
		}
	})
}

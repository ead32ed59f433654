//go:build !unix

package exec

import (
	osexec "os/exec"
	"sync"
)

// group falls back to the program alone where process groups do not exist.
type group struct {
	cmd  *osexec.Cmd
	once sync.Once
}

func newGroup(cmd *osexec.Cmd) *group { return &group{cmd: cmd} }

func (g *group) terminate() error { return g.cmd.Process.Kill() }

func (g *group) kill() {
	g.once.Do(func() {
		if g.cmd.Process != nil {
			_ = g.cmd.Process.Kill()
		}
	})
}

//go:build !linux

package procpool

import "syscall"

// sysProcAttr puts a worker in a process group of its own. Without
// Linux's parent-death signal a worker notices its parent's death when its
// input pipe ends, once its running item is done.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

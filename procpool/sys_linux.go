package procpool

import "syscall"

// sysProcAttr puts a worker in a process group of its own, so that signals
// reach what it starts, and asks the kernel to send it SIGTERM should the
// parent die: the worker then cancels its running step and exits within
// termGrace. (The signal follows the parent thread that forked the worker;
// Go keeps that thread alive for the life of the program unless a goroutine
// locked to it exits, which flow does not do.)
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

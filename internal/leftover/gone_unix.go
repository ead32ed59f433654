//go:build unix

package leftover

import (
	"errors"
	"syscall"
)

// Gone is true only when the kernel says no such process exists; EPERM
// means it exists under another user, so its file is left alone.
func Gone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

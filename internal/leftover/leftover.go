// Package leftover removes what atomic writes leave behind when their
// process is killed outright (SIGKILL, the OOM killer): a hidden temporary
// file next to the destination, named with the writer's pid. A file is
// removed only once no process with that pid exists, so a run never deletes
// the temporary file of a concurrent run that is still writing it.
package leftover

import (
	"os"
	"path/filepath"
)

// Owner reports the writer's pid when name is a temporary file the caller
// recognises as its own kind, and false for anything else.
type Owner func(name string) (pid int, ok bool)

// Sweep removes the regular files of the directory sub of root that owner
// recognises and whose writer no longer exists. It never leaves root, even
// through a symbolic link. It is best effort: a run does not depend on it,
// so errors (an unreadable directory, a file removed meanwhile) are ignored.
func Sweep(root *os.Root, sub string, owner Owner) {
	d, err := root.Open(sub)
	if err != nil {
		return
	}
	entries, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		return
	}
	self := os.Getpid()
	for _, e := range entries {
		pid, ok := owner(e.Name())
		// Only regular files: a directory or symbolic link with this name
		// was not made by an atomic write.
		if !ok || pid <= 0 || pid == self || !e.Type().IsRegular() || !Gone(pid) {
			continue
		}
		_ = root.Remove(filepath.Join(sub, e.Name()))
	}
}

// AllDigits reports whether s is a non-empty run of ASCII digits.
func AllDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

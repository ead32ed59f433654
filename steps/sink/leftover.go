package sink

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// A write sink names its temporary file ".NAME.tmp-PID-RANDOM". The pid is
// what makes a leftover safe to delete: a run killed with SIGKILL cannot
// remove its own temporary file, and only a file whose writer is gone may be
// removed by the next run, never one a concurrent run is still writing.

// tempPattern is the os.CreateTemp pattern for a temporary file of dest
// written by this process.
func tempPattern(dest string) string {
	return "." + filepath.Base(dest) + ".tmp-" + strconv.Itoa(os.Getpid()) + "-*"
}

// leftoverPID reports the writer's pid when name is exactly a temporary
// file of the destination base ("." + base + ".tmp-" + digits + "-" +
// digits, the random part of os.CreateTemp being decimal). Anything else,
// including temporary files of other destinations whose name merely starts
// the same way, is not ours to touch.
func leftoverPID(base, name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, "."+base+".tmp-")
	if !ok {
		return 0, false
	}
	pidStr, rnd, ok := strings.Cut(rest, "-")
	if !ok || !allDigits(pidStr) || !allDigits(rnd) {
		return 0, false
	}
	pid, err := strconv.Atoi(pidStr)
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

func allDigits(s string) bool {
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

// removeLeftovers deletes the temporary files of dest left by writers that
// no longer exist. It is best effort: the run does not depend on it, so
// errors (an unreadable directory, a file removed meanwhile) are ignored.
func removeLeftovers(dest string) {
	dir, base := filepath.Dir(dest), filepath.Base(dest)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		pid, ok := leftoverPID(base, e.Name())
		// Only regular files: a directory or symbolic link with this name
		// was not made by a sink.
		if !ok || !e.Type().IsRegular() || pid == os.Getpid() || !processGone(pid) {
			continue
		}
		_ = os.Remove(filepath.Join(dir, e.Name()))
	}
}

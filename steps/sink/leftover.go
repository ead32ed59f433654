package sink

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/flowrun/flow/internal/leftover"
)

// A write sink names its temporary file ".NAME.tmp-PID-RANDOM". The pid is
// what makes a leftover safe to delete: a run killed with SIGKILL cannot
// remove its own temporary file, and only a file whose writer is gone may be
// removed by the next run, never one a concurrent run is still writing.

// tempPrefix starts the name of a temporary file of dest written by this
// process; a random decimal number ends it.
func tempPrefix(dest string) string {
	return "." + filepath.Base(dest) + ".tmp-" + strconv.Itoa(os.Getpid()) + "-"
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
	if !ok || !leftover.AllDigits(pidStr) || !leftover.AllDigits(rnd) {
		return 0, false
	}
	pid, err := strconv.Atoi(pidStr)
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

// removeLeftovers deletes the temporary files of the destination base in
// dir left by writers that no longer exist (see package leftover).
func removeLeftovers(dir *os.Root, base string) {
	leftover.Sweep(dir, ".", func(name string) (int, bool) { return leftoverPID(base, name) })
}

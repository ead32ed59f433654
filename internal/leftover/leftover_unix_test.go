//go:build unix

package leftover_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/flowrun/flow/internal/leftover"
	"github.com/flowrun/flow/internal/leftover/leftovertest"
)

func TestSweep(t *testing.T) {
	dir := t.TempDir()
	dead := strconv.Itoa(leftovertest.DeadPID(t))
	owner := func(name string) (int, bool) {
		pid, ok := strings.CutPrefix(name, ".tmp-")
		if !ok || !leftover.AllDigits(pid) {
			return 0, false
		}
		n, err := strconv.Atoi(pid)
		return n, err == nil
	}
	files := map[string]bool{ // name -> should still exist after the sweep
		".tmp-" + dead:                       false, // killed writer
		".tmp-" + strconv.Itoa(os.Getpid()):  true,  // this process
		".tmp-" + strconv.Itoa(os.Getppid()): true,  // another live process
		".tmp-x" + dead:                      true,  // not the owner's pattern
		"sub/.tmp-" + dead:                   true,  // another directory
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name := range files {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// A matching directory, and a matching symbolic link to a file outside
	// the root: neither was made by an atomic write.
	outside := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(outside, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, ".tmp-1"), 0o755); err != nil {
		t.Fatal(err)
	}
	link := ".tmp-" + strconv.Itoa(leftovertest.DeadPID(t))
	if err := os.Symlink(outside, filepath.Join(dir, link)); err != nil {
		t.Fatal(err)
	}
	files[".tmp-1"], files[link] = true, true

	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	leftover.Sweep(root, ".", owner)
	for name, keep := range files {
		_, err := os.Lstat(filepath.Join(dir, name))
		if exists := err == nil; exists != keep {
			t.Errorf("%s: exists %v, want %v", name, exists, keep)
		}
	}
	if _, err := os.Stat(outside); err != nil {
		t.Errorf("the file a link pointed to is gone: %v", err)
	}
	// A directory that does not exist is no error.
	leftover.Sweep(root, "missing", owner)
}

//go:build unix

package leftover

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// DeadPID returns the pid of a child that has exited and been reaped.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skipf("cannot run 'true' to get a dead pid: %v", err)
	}
	if !Gone(cmd.Process.Pid) {
		t.Skipf("pid %d was reused already", cmd.Process.Pid)
	}
	return cmd.Process.Pid
}

func TestSweep(t *testing.T) {
	dir := t.TempDir()
	dead := strconv.Itoa(deadPID(t))
	owner := func(name string) (int, bool) {
		pid, ok := strings.CutPrefix(name, ".tmp-")
		if !ok || !AllDigits(pid) {
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
	link := ".tmp-" + strconv.Itoa(deadPID(t))
	if err := os.Symlink(outside, filepath.Join(dir, link)); err != nil {
		t.Fatal(err)
	}
	files[".tmp-1"], files[link] = true, true

	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	Sweep(root, ".", owner)
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
	Sweep(root, "missing", owner)
}

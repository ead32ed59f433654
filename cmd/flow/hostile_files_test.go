package main

// Hostile files (issue 13, classes 2, 3 and 8; issue 14, point 5): lock
// paths that point at other files, glob matches that are not regular files,
// over-long lines, and inputs that are missing or empty. The real CLI in a
// process of its own, as in reliability_test.go.

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// hostileRun runs `flow run ARGS...` in dir and returns its exit code and
// stderr. Unlike relRun it expects no report: several of these runs are
// refused before any report could be written.
func hostileRun(t *testing.T, dir string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"run", "--progress", "none"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), cliEnv+"=1")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return relWait(t, cmd), stderr.String()
}

// hostileFile writes content to path with an old mtime, and returns a
// check that it is still exactly that, unwritten.
func hostileFile(t *testing.T, path, content string) func() {
	t.Helper()
	relWrite(t, path, []byte(content))
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			return
		}
		if data, _ := os.ReadFile(path); string(data) != content || !fi.ModTime().Equal(old) {
			t.Errorf("%s was written: now %q (mtime %v), was %q", path, data, fi.ModTime(), content)
		}
	}
}

const hostileShort = `version: 1
LOCK
stages:
  - name: nums
    source: {range: {from: 1, to: 3}}
  - name: out
    sink: {write: out.jsonl}
`

// A lock never empties or writes into a file that is not a lock of ours,
// never follows a link, and a pipeline's lock: stays in its folder.
func TestHostileLockFiles(t *testing.T) {
	t.Run("committed link to a file outside", func(t *testing.T) {
		dir := t.TempDir()
		notes := filepath.Join(t.TempDir(), "notes.txt")
		same := hostileFile(t, notes, "my notes\n")
		if err := os.Symlink(notes, filepath.Join(dir, "run.lock")); err != nil {
			t.Fatal(err)
		}
		relWrite(t, filepath.Join(dir, "p.yaml"), []byte(strings.Replace(hostileShort, "LOCK", "lock: run.lock", 1)))
		code, stderr := hostileRun(t, dir, "p.yaml", "--report", "report.json")
		if code != 2 || !strings.Contains(stderr, "p.yaml:2:7: lock: lock file") || !strings.Contains(stderr, "is a symbolic link") {
			t.Errorf("exit %d, want 2 naming p.yaml:2:7 and the link:\n%s", code, stderr)
		}
		same()
		if _, err := os.Stat(filepath.Join(dir, "out.jsonl")); err == nil {
			t.Error("the run ran")
		}
		if rep, err := os.ReadFile(filepath.Join(dir, "report.json")); err != nil || !strings.Contains(string(rep), "symbolic link") {
			t.Errorf("report %s (%v) does not say why nothing ran", rep, err)
		}
	})
	t.Run("link to a directory outside", func(t *testing.T) {
		dir := t.TempDir()
		outside := t.TempDir()
		if err := os.Symlink(outside, filepath.Join(dir, "locks")); err != nil {
			t.Fatal(err)
		}
		relWrite(t, filepath.Join(dir, "p.yaml"), []byte(strings.Replace(hostileShort, "LOCK", "lock: {file: locks/run.lock}", 1)))
		code, stderr := hostileRun(t, dir, "p.yaml")
		if code != 2 || !strings.Contains(stderr, "p.yaml:2:14: lock:") || !strings.Contains(stderr, "leads out of") {
			t.Errorf("exit %d, want 2 naming p.yaml:2:14:\n%s", code, stderr)
		}
		if entries, _ := os.ReadDir(outside); len(entries) != 0 {
			t.Errorf("created outside the pipeline's folder: %v", entries)
		}
	})
	t.Run("../ escape", func(t *testing.T) {
		base := t.TempDir()
		dir := filepath.Join(base, "a", "b")
		same := hostileFile(t, filepath.Join(base, "somefile"), "precious\n")
		relWrite(t, filepath.Join(dir, "p.yaml"), []byte(strings.Replace(hostileShort, "LOCK", "lock: ../../somefile", 1)))
		code, stderr := hostileRun(t, dir, "p.yaml")
		if code != 2 || !strings.Contains(stderr, "p.yaml:2:7:") || !strings.Contains(stderr, "leaves the pipeline's folder") || !strings.Contains(stderr, "--lock ../../somefile") {
			t.Errorf("exit %d, want 2 at p.yaml:2:7 saying what to do:\n%s", code, stderr)
		}
		same()
		// flow validate says the same.
		cmd := exec.Command(os.Args[0], "validate", "p.yaml")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), cliEnv+"=1")
		out, _ := cmd.CombinedOutput()
		if !strings.Contains(string(out), "p.yaml:2:7:") {
			t.Errorf("validate does not refuse it:\n%s", out)
		}
	})
	t.Run("--lock names the pipeline file", func(t *testing.T) {
		dir := t.TempDir()
		pipeline := strings.Replace(hostileShort, "LOCK", "", 1)
		same := hostileFile(t, filepath.Join(dir, "p.yaml"), pipeline)
		code, stderr := hostileRun(t, dir, "p.yaml", "--lock", "p.yaml")
		if code != 2 || !strings.Contains(stderr, "--lock: lock file p.yaml is not a lock file") {
			t.Errorf("exit %d, want 2 saying p.yaml is not a lock file:\n%s", code, stderr)
		}
		same()
	})
	t.Run("a lock of ours is still taken", func(t *testing.T) {
		dir := t.TempDir()
		relWrite(t, filepath.Join(dir, "p.yaml"), []byte(strings.Replace(hostileShort, "LOCK", "lock: run.lock", 1)))
		for range 2 { // the second run takes the file the first left
			if code, stderr := hostileRun(t, dir, "p.yaml"); code != 0 {
				t.Fatalf("exit %d:\n%s", code, stderr)
			}
		}
		if data, err := os.ReadFile(filepath.Join(dir, "run.lock")); err != nil || len(data) != 0 {
			t.Errorf("run.lock after the runs: %q %v", data, err)
		}
	})
}

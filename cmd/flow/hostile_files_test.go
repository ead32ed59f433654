package main

// Hostile files (issue 13, classes 2, 3 and 8; issue 14, point 5): lock
// paths that point at other files, glob matches that are not regular files,
// over-long lines, and inputs that are missing or empty. The real CLI in a
// process of its own, as in reliability_test.go.

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
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
	t.Run("allow_outside is the opt-in", func(t *testing.T) {
		base := t.TempDir()
		dir := filepath.Join(base, "a", "b")
		relWrite(t, filepath.Join(dir, "p.yaml"), []byte(strings.Replace(hostileShort, "LOCK", "lock: {file: ../../shared.lock, allow_outside: true}", 1)))
		if code, stderr := hostileRun(t, dir, "p.yaml"); code != 0 {
			t.Fatalf("exit %d:\n%s", code, stderr)
		}
		if _, err := os.Stat(filepath.Join(base, "shared.lock")); err != nil {
			t.Errorf("the lock outside was not taken: %v", err)
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

// hostileStart runs pipeline in dir (prepared by the caller) as relRun does.
func hostileStart(t *testing.T, dir, pipeline string, args ...string) *relResult {
	t.Helper()
	cmd := relCommand(t, dir, pipeline, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return relCollect(t, dir, relWait(t, cmd), stdout.String(), stderr.String())
}

// One line of a gzip bomb (64 MiB of zeros without a line feed, 64 KiB
// compressed) is refused at max_line, naming the file and line, instead of
// being read whole; the item before it went through, the run fails, the old
// output stays. Peak memory is in docs/reliability.md (1 GiB of zeros:
// 4.2 GB before the bound, 46 MB after).
func TestHostileLongLine(t *testing.T) {
	dir := t.TempDir()
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	zw.Write([]byte("{\"a\": 1}\n"))
	zeros := make([]byte, 1<<20)
	for range 64 {
		zw.Write(zeros)
	}
	zw.Close()
	relWrite(t, filepath.Join(dir, "rows.jsonl.gz"), gz.Bytes())
	for _, kind := range []string{"jsonl", "lines"} {
		r := hostileStart(t, dir, `version: 1
stages:
  - name: rows
    source: {`+kind+`: rows.jsonl.gz}
  - name: out
    sink: {write: out.jsonl}
`)
		r.check(t, 1, 2, nil)
		want := "rows.jsonl.gz:2: the line is longer than 16MiB (max_line)"
		if !strings.Contains(r.rep.Reason, want) || !strings.Contains(r.stderr, want) {
			t.Errorf("%s: reason %q, want %q\nstderr:\n%s", kind, r.rep.Reason, want, r.stderr)
		}
		if rows := r.stage(t, "rows"); rows.Out != 1 {
			t.Errorf("%s: the line before the long one did not go through: %+v", kind, rows)
		}
	}
}

// glob yields regular files only: a FIFO that matches is never emitted
// (the step would block opening it), a directory neither; a broken link is
// emitted, so the step fails that item and the report names it.
func TestHostileGlobMatches(t *testing.T) {
	dir := t.TempDir()
	relWrite(t, filepath.Join(dir, "logs", "a.log"), []byte("INFO x\nERROR y\n"))
	if err := syscall.Mkfifo(filepath.Join(dir, "logs", "fifo.log"), 0o644); err != nil {
		t.Skip("mkfifo:", err)
	}
	if err := os.Mkdir(filepath.Join(dir, "logs", "dir.log"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("rotated-away.log", filepath.Join(dir, "logs", "broken.log")); err != nil {
		t.Fatal(err)
	}
	r := hostileStart(t, dir, `version: 1
stages:
  - name: files
    source: {glob: "logs/*.log"}
  - name: analyze
    step: analyze-logs
    on_error: skip
    with: {path: "${ item }"}
  - name: out
    sink: {write: out.jsonl}
`)
	lines := relLines(t, filepath.Join(dir, "out.jsonl"))
	r.check(t, 0, 3, lines)
	if files := r.stage(t, "files"); files.Out != 2 {
		t.Errorf("glob emitted %d files, want a.log and broken.log", files.Out)
	}
	if an := r.stage(t, "analyze"); an.Succeeded != 1 || an.Skipped != 1 || len(lines) != 1 {
		t.Errorf("analyze: %d ok, %d skipped, %d results; want 1, 1, 1", an.Succeeded, an.Skipped, len(lines))
	}
	if f := r.failure(t, "analyze"); !strings.Contains(f.Error, "broken.log") {
		t.Errorf("the failure does not name the broken link: %q", f.Error)
	}
}

// A source that finds nothing to read fails the run by default, naming the
// source and the pattern, and the previous output stays (issue 14, 5);
// on_empty: warn runs with no items and says so; ok says nothing. Either
// way a run that succeeds writes what it found: an empty output.
func TestHostileEmptyInputs(t *testing.T) {
	pipeline := func(source string) string {
		return "version: 1\nstages:\n  - name: files\n    source: " + source + "\n  - name: out\n    sink: {write: out.jsonl}\n"
	}
	dir := t.TempDir()
	r := hostileStart(t, dir, pipeline(`{glob: "incoming/*.csv"}`))
	r.check(t, 1, 2, nil)
	want := `source "files": glob "incoming/*.csv" matched no file: the directory ` + filepath.Join(dir, "incoming") + ` does not exist`
	if !strings.Contains(r.stderr, want) || !strings.Contains(r.rep.Reason, "on_empty") {
		t.Errorf("stderr does not say %q, or the report does not say what to set:\n%s\nreason: %s", want, r.stderr, r.rep.Reason)
	}

	relWrite(t, filepath.Join(dir, "empty.jsonl"), nil)
	r = hostileStart(t, dir, pipeline(`{jsonl: empty.jsonl}`))
	r.check(t, 1, 2, nil)
	if !strings.Contains(r.stderr, "empty.jsonl holds no JSON value") {
		t.Errorf("stderr:\n%s", r.stderr)
	}

	r = hostileStart(t, dir, pipeline(`{glob: {patterns: "incoming/*.csv", on_empty: warn}}`))
	r.check(t, 0, 2, []string{})
	if !strings.Contains(r.stderr, `flow: warning: source "files": glob "incoming/*.csv" matched no file`) {
		t.Errorf("no warning:\n%s", r.stderr)
	}

	r = hostileStart(t, dir, pipeline(`{glob: {patterns: "incoming/*.csv", on_empty: ok}}`))
	r.check(t, 0, 2, []string{})
	if strings.Contains(r.stderr, "warning") {
		t.Errorf("on_empty: ok warned:\n%s", r.stderr)
	}
}

// The write sink's directory swapped for a link to a directory outside the
// pipeline's folder while the run works (after the sink checked it): the
// output never lands outside; the sink fails, the run exits 1.
func TestHostileWriteDirectorySwapped(t *testing.T) {
	dir := t.TempDir()
	outside := t.TempDir()
	sub := filepath.Join(dir, "sub")
	relWrite(t, filepath.Join(sub, "keep.txt"), []byte("x"))
	// Every item waits for the go file, so the directory is swapped after
	// the sink was set up and before it writes.
	cmd := relCommand(t, dir, fmt.Sprintf(`version: 1
stages:
  - name: src
    source: {range: {from: 1, to: 5}}
  - name: gate
    step: exec
    with:
      argv: ["sh", "-c", "touch %[1]s/started; while [ ! -e %[1]s/go ]; do sleep 0.02; done; echo $1", "sh", "${ item }"]
  - name: out
    sink: {write: {path: sub/out.jsonl}}
`, dir))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(relGuard); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(dir, "started")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("the run did not start")
		}
	}
	if err := os.Rename(sub, sub+".real"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, sub); err != nil {
		t.Fatal(err)
	}
	relWrite(t, filepath.Join(dir, "go"), nil)
	r := relCollect(t, dir, relWait(t, cmd), "", stderr.String())
	r.check(t, 1, 3, nil)
	if !strings.Contains(r.stderr, "sub/out.jsonl") || !strings.Contains(r.stderr, "was replaced by a symbolic link") {
		t.Errorf("stderr does not say why sub/out.jsonl was not written:\n%s", r.stderr)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("written outside the pipeline's folder: %v", entries)
	}
	relNoTemp(t, sub+".real")
}

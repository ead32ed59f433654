package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/flowrun/flow/store"
)

// flowRuns runs `flow runs --json` in dir and decodes its list.
func flowRuns(t *testing.T, dir string) []store.Run {
	t.Helper()
	cmd := exec.Command(os.Args[0], "runs", "--json", "--limit", "0")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), cliEnv+"=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("flow runs: %v\n%s", err, errb.String())
	}
	var runs []store.Run
	if err := json.Unmarshal(out.Bytes(), &runs); err != nil {
		t.Fatalf("flow runs --json: %v\n%s", err, out.String())
	}
	return runs
}

// An interrupted run is recorded as interrupted with its exit code and
// report; a run killed with SIGKILL stays "running" in the database and is
// shown as died.
func TestHostileStoreInterruptedAndKilledRuns(t *testing.T) {
	dir := t.TempDir()
	cmd, stderr := relStartLong(t, dir, relLong)
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := relWait(t, cmd); code != 130 {
		t.Fatalf("SIGINT: exit %d, want 130\n%s", code, stderr.String())
	}
	cmd, stderr = relStartLong(t, dir, relLong)
	cmd.Process.Kill()
	if code := relWait(t, cmd); code != -int(syscall.SIGKILL) {
		t.Fatalf("SIGKILL: exit %d\n%s", code, stderr.String())
	}

	runs := flowRuns(t, dir)
	if len(runs) != 2 {
		t.Fatalf("%d runs recorded, want 2: %+v", len(runs), runs)
	}
	killed, interrupted := runs[0], runs[1]
	if interrupted.Status != "interrupted" || interrupted.ExitCode == nil || *interrupted.ExitCode != 130 || len(interrupted.Stages) != 3 {
		t.Errorf("interrupted run recorded as %+v", interrupted)
	}
	if killed.Status != store.StatusDied || killed.End != nil || killed.ExitCode != nil {
		t.Errorf("killed run recorded as %+v", killed)
	}
}

// Two runs of one pipeline at once, sharing the default state database,
// both recorded, neither failing on it.
func TestHostileStoreConcurrentRuns(t *testing.T) {
	dir := t.TempDir()
	pipeline := `version: 1
stages:
  - name: src
    source: {range: {from: 1, to: 2000}}
  - name: out
    sink: {write: {path: out.jsonl}}
`
	var wg sync.WaitGroup
	const n = 4
	codes := make([]int, n)
	stderrs := make([]bytes.Buffer, n)
	// Every command first: relCommand rewrites p.yaml, which must not
	// happen while a run reads it.
	cmds := make([]*exec.Cmd, n)
	for i := range n {
		cmds[i] = relCommand(t, dir, pipeline)
		cmds[i].Stderr = &stderrs[i]
	}
	for i, cmd := range cmds {
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = relWait(t, cmds[i])
		}()
	}
	wg.Wait()
	for i, c := range codes {
		if c != 0 || bytes.Contains(stderrs[i].Bytes(), []byte("warning")) {
			t.Errorf("run %d: exit %d\n%s", i, c, stderrs[i].String())
		}
	}
	runs := flowRuns(t, dir)
	if len(runs) != n {
		t.Fatalf("%d runs recorded, want %d", len(runs), n)
	}
	for _, r := range runs {
		if r.Status != "succeeded" || r.File != filepath.Join(dir, "p.yaml") || len(r.FileSHA256) != 64 {
			t.Errorf("run %+v", r)
		}
	}
}

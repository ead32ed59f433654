package main

// Issue 13, class 7: what an exec item starts ends with the item, whatever
// it does, and with flow when flow is killed. Linux only: elsewhere the
// process group is all flow has (docs/reliability.md).

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// execGone is how long killed processes may take to disappear: only a
// guard against a broken build, far above the milliseconds it takes.
const execGone = 30 * time.Second

// execAlive reports whether pid runs (a zombie has ended: its parent,
// possibly this test process, just has not reaped it).
func execAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// execPIDs waits until path holds n pids, one a line, and returns them.
func execPIDs(t *testing.T, path string, n int) []int {
	t.Helper()
	deadline := time.Now().Add(relGuard)
	for {
		b, _ := os.ReadFile(path)
		if lines := strings.Fields(string(b)); len(lines) >= n && strings.HasSuffix(string(b), "\n") {
			var pids []int
			for _, l := range lines {
				p, err := strconv.Atoi(l)
				if err != nil {
					t.Fatalf("%s: %q", path, b)
				}
				pids = append(pids, p)
			}
			t.Cleanup(func() {
				for _, p := range pids {
					syscall.Kill(p, syscall.SIGKILL)
				}
			})
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatalf("the programs did not start: %s holds %q", path, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// execWaitGone fails unless every pid ends within execGone.
func execWaitGone(t *testing.T, pids []int, what string) {
	t.Helper()
	deadline := time.Now().Add(execGone)
	for _, p := range pids {
		for execAlive(p) {
			if time.Now().After(deadline) {
				b, _ := os.ReadFile("/proc/" + strconv.Itoa(p) + "/cmdline")
				t.Fatalf("%s: process %d (%q) still runs", what, p, strings.ReplaceAll(string(b), "\x00", " "))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// A program that moves to a session of its own (setsid) is stopped at the
// item's timeout with the rest of the item.
func TestHostileExecSetsidTimeout(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Linux only")
	}
	dir := t.TempDir()
	pidfile := filepath.Join(dir, "pids")
	cmd := relCommand(t, dir, fmt.Sprintf(`version: 1
stages:
  - name: src
    source: {items: [%s]}
  - name: run
    step: exec
    timeout: 1s
    on_error: skip
    with:
      shell: true
      command: setsid sh -c 'echo $$ >> "$0"; exec sleep 600' "$1" & setsid -f sh -c 'echo $$ >> "$0"; exec sleep 600' "$1"; wait
      argv: ["${ item }"]
      kill_grace: 100ms
  - name: out
    sink: {write: {path: out.jsonl}}
`, relYAML(pidfile)))
	r := secretRun(t, dir, cmd)
	if s := r.stage(t, "run"); s.TimedOut != 1 {
		t.Fatalf("the item did not time out: %+v\n%s", s, r.stderr)
	}
	// The sweep runs as the attempt returns; should the engine give up on
	// an attempt before that, the guard still ends them when flow exits.
	execWaitGone(t, execPIDs(t, pidfile, 2), "after the item's timeout")
}

// When flow itself is killed (SIGKILL: no handler runs), the programs of
// its exec items end too: the program (Pdeathsig), its children in its
// process group, and those that left it with setsid (the guard).
func TestHostileExecFlowKilled(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Linux only")
	}
	for _, mode := range []string{"thread", "process"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			pidfile := filepath.Join(dir, "pids")
			cmd := relCommand(t, dir, fmt.Sprintf(`version: 1
stages:
  - name: src
    source: {items: [%s]}
  - name: run
    step: exec
    mode: %s
    with:
      shell: true
      command: echo $$ >> "$1"; sleep 600 & echo $! >> "$1"; setsid sh -c 'echo $$ >> "$0"; exec sleep 600' "$1" & wait
      argv: ["${ item }"]
  - name: out
    sink: {write: {path: out.jsonl}}
`, relYAML(pidfile), mode))
			var stderr relBuffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			pids := execPIDs(t, pidfile, 3)
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			if code := relWait(t, cmd); code != -int(syscall.SIGKILL) {
				t.Fatalf("flow exited %d, not killed:\n%s", code, stderr.String())
			}
			execWaitGone(t, pids, "after flow was killed")
		})
	}
}

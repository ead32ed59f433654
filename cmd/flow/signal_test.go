package main

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flowrun/flow/report"
)

// These tests run the real CLI in a process of its own (this test binary with
// cliEnv set) and signal it, as a user pressing Ctrl-C or a service manager
// stopping it would.

// hangGuard only keeps a broken build from hanging the test run; it is not a
// speed assertion.
const hangGuard = 2 * time.Minute

func flowCommand(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), cliEnv+"=1")
	return cmd
}

func waitExit(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	code := relWait(t, cmd)
	if code < 0 {
		t.Fatalf("flow was killed by %v instead of exiting: no handler", syscall.Signal(-code))
	}
	return code
}

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// A long pipeline: far more work than the test waits for.
const longPipeline = `version: 1
name: long
stages:
  - name: numbers
    source: {range: {from: 1, to: 1000000}}
  - name: slow
    step: compute
    workers: 4
    with:
      value: "${ sleep('20ms') == nil ? item : item }"
  - name: out
    sink: {print: jsonl}
`

func TestSignalStopsRunAndWritesReport(t *testing.T) {
	for _, tc := range []struct {
		sig  syscall.Signal
		name string
		code int
		// group signals the whole process group, as a terminal's Ctrl-C
		// does: worker processes of mode: process get it too.
		group    bool
		pipeline string
	}{
		{syscall.SIGINT, "SIGINT", 130, false, longPipeline},
		{syscall.SIGTERM, "SIGTERM", 143, false, longPipeline},
		{syscall.SIGINT, "SIGINT", 130, true, strings.Replace(longPipeline, "workers: 4", "workers: 2\n    mode: process", 1)},
	} {
		name := tc.name
		if tc.group {
			name += "/process-group"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			file := writeFile(t, dir, "long.yaml", tc.pipeline)
			out := filepath.Join(dir, "report.json")
			cmd := flowCommand(t, "run", file, "--report", out, "--progress", "none")
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// The first result proves the run is under way (and the handler
			// installed); the rest is drained so the sink never blocks.
			r := bufio.NewReader(stdout)
			if _, err := r.ReadString('\n'); err != nil {
				t.Fatalf("no result before the signal: %v\nstderr:\n%s", err, stderr.String())
			}
			drained := make(chan struct{})
			go func() { io.Copy(io.Discard, r); close(drained) }()
			pid := cmd.Process.Pid
			if tc.group {
				pid = -pid
			}
			if err := syscall.Kill(pid, tc.sig); err != nil {
				t.Fatal(err)
			}
			code := waitExit(t, cmd)
			<-drained
			if code != tc.code {
				t.Fatalf("exit code %d, want %d\nstderr:\n%s", code, tc.code, stderr.String())
			}
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatalf("report not written: %v\nstderr:\n%s", err, stderr.String())
			}
			var rep report.Report
			if err := json.Unmarshal(b, &rep); err != nil {
				t.Fatalf("report is not JSON: %v\n%s", err, b)
			}
			if rep.ExitCode != tc.code || rep.Status != "interrupted" {
				t.Errorf("report: exit_code %d status %q, want %d interrupted", rep.ExitCode, rep.Status, tc.code)
			}
			if len(rep.Stages) != 3 {
				t.Fatalf("report has %d stages, want 3:\n%s", len(rep.Stages), b)
			}
			for _, s := range rep.Stages {
				if !s.Balanced() {
					t.Errorf("stage %s does not account for its items: in %d = %d ok + %d failed + %d skipped + %d cancelled + %d filtered",
						s.Name, s.In, s.Succeeded, s.Failed, s.Skipped, s.Cancelled, s.Filtered)
				}
			}
			if slow := rep.Stages[1]; slow.Succeeded < 1 || slow.In >= 1000000 {
				t.Errorf("stage slow: %d succeeded of %d in; want a run stopped part way", slow.Succeeded, slow.In)
			}
			if !strings.Contains(stderr.String(), tc.name+": stopping") {
				t.Errorf("stderr does not announce the stop:\n%s", stderr.String())
			}
		})
	}
}

// TestSecondSignalExitsAtOnce runs a program that ignores SIGTERM, with a
// long kill grace, so the graceful stop cannot finish soon: only the second
// signal can end flow.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, dir, "stubborn.yaml", `version: 1
name: stubborn
stages:
  - name: one
    source: {items: [1]}
  - name: hold
    step: exec
    with:
      argv: [/bin/sh, -c, "trap '' TERM; echo $$ > started.tmp && mv started.tmp started; exec sleep 120"]
      kill_grace: 10m
`)
	cmd := flowCommand(t, "run", file, "--progress", "none")
	stderrPipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The program outlives flow when flow exits at once; end it with the test.
	started := filepath.Join(dir, "started")
	t.Cleanup(func() {
		if b, err := os.ReadFile(started); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				_ = syscall.Kill(-pid, syscall.SIGKILL)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stderrPipe)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	deadline := time.Now().Add(hangGuard)
	for {
		if _, err := os.Stat(started); err == nil {
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("the exec step did not start within %v", hangGuard)
		}
		time.Sleep(5 * time.Millisecond)
	}
	waitLine := func(want string) {
		t.Helper()
		timeout := time.After(hangGuard)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("stderr closed before %q", want)
				}
				if strings.Contains(l, want) {
					return
				}
			case <-timeout:
				t.Fatalf("no %q on stderr", want)
			}
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	waitLine("SIGINT: stopping")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitLine("second SIGTERM: exiting at once")
	if code := waitExit(t, cmd); code != 143 {
		t.Fatalf("exit code %d, want 143 (the second signal's)", code)
	}
}

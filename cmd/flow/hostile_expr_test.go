package main

// Issue 13, expressions written against the data: a CPU-bound expression
// ends at its timeout, a value grown from the data fails its item instead of
// the process, a division by zero fails its item, and no number an item
// holds (NaN, infinities) stops the sink or the report. The real binary in
// a process of its own, through reliability_test.go's helpers.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flowrun/flow/report"
)

// relBigItem writes one YAML item holding a string of n bytes as item.s.
func relBigItem(n int, extra string) string {
	return fmt.Sprintf("{s: %s%s}", strings.Repeat("x", n), extra)
}

// A CPU-bound expression (a reduce over sha256 of a long string: some
// minutes of hashing) stops at the stage timeout, and the run writes its
// report; without a stage timeout, the pipeline timeout ends it. Timings are
// logged, not asserted: relGuard only catches a hang.
func TestHostileExprCPUBoundStopsAtTimeout(t *testing.T) {
	const heavy = `"${ reduce(1..900000, #acc + len(sha256(item.s)), 0) }"`
	for _, tc := range []struct {
		name, stageOpts string
		status          report.Status
		class           string
	}{
		{"stage timeout", "\n    timeout: 1s", report.StatusFailed, "timeout"},
		{"pipeline timeout", "", report.StatusTimedOut, ""},
		{"stage timeout in a worker process", "\n    mode: process\n    timeout: 1s", report.StatusFailed, "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			r := relRun(t, fmt.Sprintf(`version: 1
timeout: 3s
stages:
  - name: src
    source: {items: [%s]}
  - name: hash
    step: compute%s
    with: {value: %s}
  - name: out
    sink: {write: {path: out.jsonl}}
`, relBigItem(100_000, ""), tc.stageOpts, heavy))
			t.Logf("%s: the run ended %v after it started", tc.name, time.Since(start).Round(time.Millisecond))
			r.check(t, 1, 3, nil)
			if r.rep.Status != tc.status {
				t.Errorf("status %q, want %q (reason %q)", r.rep.Status, tc.status, r.rep.Reason)
			}
			hash := r.stage(t, "hash")
			if hash.TimedOut != 1 || hash.Succeeded != 0 {
				t.Errorf("hash: %+v; want its one item timed out", hash)
			}
			if tc.class != "" {
				if f := r.failure(t, "hash"); f.Class != tc.class || f.Outcome != report.TimedOut {
					t.Errorf("failure %q class %q outcome %q, want class %s, timed out", f.Error, f.Class, f.Outcome, tc.class)
				}
			}
		})
	}
}

// SIGTERM stops a CPU-bound expression too: exit 143, report written.
func TestHostileExprCPUBoundStopsOnSIGTERM(t *testing.T) {
	dir := t.TempDir()
	// The run takes its --lock right after it starts handling signals: the
	// lock file is the sign to signal, however slowly the process started.
	lock := filepath.Join(dir, "run.lock")
	cmd := relCommand(t, dir, fmt.Sprintf(`version: 1
stages:
  - name: src
    source: {items: [%s]}
  - name: hash
    step: compute
    with: {value: "${ reduce(1..900000, #acc + len(sha256(item.s)), 0) }"}
  - name: out
    sink: {write: {path: out.jsonl}}
`, relBigItem(100_000, "")), "--lock", lock)
	stderr := &relBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	for deadline := time.Now().Add(relGuard); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(lock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the run never took its lock:\n%s", stderr.String())
		}
	}
	time.Sleep(300 * time.Millisecond) // let the expression start; a signal before it is handled the same
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r := relCollect(t, dir, relWait(t, cmd), "", stderr.String())
	t.Logf("flow exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	r.check(t, 143, 3, nil)
	if r.rep.Status != report.StatusInterrupted {
		t.Errorf("status %q, want interrupted", r.rep.Status)
	}
}

// repeat() sized by the data asks for 20 GB, and + in a loop grows a string
// without end: each fails its item with a too_large error, checked before
// the memory is taken; the process lives on to write the report and the
// other items.
func TestHostileExprMemoryBudget(t *testing.T) {
	r := relRun(t, fmt.Sprintf(`version: 1
stages:
  - name: src
    source: {items: [%s, %s, {s: ok, n: 2}]}
  - name: grow
    step: compute
    on_error: skip
    with: {value: "${ item.n == 0 ? reduce(1..100000, #acc + item.s, '') : repeat(item.s, item.n) }"}
  - name: out
    sink: {write: {path: out.jsonl}}
`, relBigItem(20_000, ", n: 1000000"), relBigItem(20_000, ", n: 0")))
	r.check(t, 0, 3, []string{`"okok"`})
	if g := r.stage(t, "grow"); g.Skipped != 2 || g.Succeeded != 1 {
		t.Errorf("grow: %+v; want 2 items skipped and 1 ok", g)
	}
	for _, f := range r.rep.Failures {
		if f.Class != "too_large" || !strings.Contains(f.Error, "too large") || !strings.Contains(f.Error, "memory budget") {
			t.Errorf("failure %q class %q, want a too_large budget error", f.Error, f.Class)
		}
	}
}

// Division and modulo by zero fail the item under its on_error, as
// Python's ZeroDivisionError does; NaN and infinities reach the sink and the
// report as strings, and neither fails.
func TestHostileExprNumbers(t *testing.T) {
	r := relRun(t, `version: 1
stages:
  - name: src
    source: {items: [{a: 1, b: 0}, {a: 7, b: 0, mod: true}, {a: 4, b: 2}]}
  - name: div
    step: compute
    on_error: skip
    with: {value: "${ get(item, 'mod') == true ? item.a % item.b : item.a / item.b }"}
  - name: out
    sink: {write: {path: out.jsonl}}
`)
	r.check(t, 0, 3, []string{"2"})
	if len(r.rep.Failures) != 2 {
		t.Fatalf("failures %+v, want the two divisions by zero", r.rep.Failures)
	}
	for _, f := range r.rep.Failures {
		if !strings.Contains(f.Error, "by zero") || f.Outcome != report.Skipped {
			t.Errorf("failure %+v, want a skipped division by zero", f)
		}
	}

	// NaN and an infinity in results, and in an item the report lists.
	r = relRun(t, `version: 1
stages:
  - name: src
    source: {items: [1, 2]}
  - name: odd
    step: compute
    with: {value: {nan: "${ float('NaN') }", inf: "${ 10.0 ** 400 }", neg: "${ -(10.0 ** 400) }", i: "${ item }"}}
  - name: pick
    step: compute
    on_error: skip
    with: {value: "${ item.i == 2 ? fail('dropped') : item }"}
  - name: out
    sink: {write: {path: out.jsonl}}
`)
	r.check(t, 0, 4, []string{`{"i":1,"inf":"Infinity","nan":"NaN","neg":"-Infinity"}`})
	if f := r.failure(t, "pick"); !strings.Contains(string(r.raw), `"nan": "NaN"`) || f.Error != "dropped" {
		t.Errorf("report does not list the item with NaN as a string:\n%s", r.raw)
	}
}

// sleep() takes the integers that --set and the data give (int64), not
// only literals.
func TestHostileExprSleepFromData(t *testing.T) {
	dir := t.TempDir()
	cmd := relCommand(t, dir, `version: 1
vars: {delay: 0.5}
stages:
  - name: src
    source: {items: [{d: 0}]}
  - name: wait
    step: compute
    with: {value: "${ sleep(vars.delay) ?? sleep(item.d) ?? 'slept' }"}
  - name: out
    sink: {write: {path: out.jsonl}}
`, "--set", "delay=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("flow run --set delay=0: %v\n%s", err, out)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "out.jsonl"))
	if string(got) != "\"slept\"\n" {
		t.Errorf("out.jsonl = %q", got)
	}
}

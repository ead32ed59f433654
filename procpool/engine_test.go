package procpool

import (
	"bytes"
	"context"
	"github.com/flowrun/flow/stagehost"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/spec"
)

// testFactory is Factory with the orphan mark in the workers' environment.
func testFactory(sr engine.StageRun) (engine.Runner, error) {
	hello, err := stagehost.HelloFor(sr.Pipeline, sr.Stage, sr.Workers)
	if err != nil {
		return nil, err
	}
	cfg := ConfigFor(sr.Stage, sr.Workers)
	cfg.Env = []string{testMark}
	cfg.Stderr = &bytes.Buffer{}
	return New(hello, cfg)
}

// runPipeline runs a pipeline through the engine with process mode wired,
// checks the accounting invariant and that no process is left behind.
func runPipeline(t *testing.T, text string) (*report.Report, string) {
	t.Helper()
	return runPipelineWith(t, text, testFactory, &bytes.Buffer{})
}

func runPipelineWith(t *testing.T, text string, factory engine.RunnerFactory, stderr io.Writer) (*report.Report, string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "pipeline.yaml")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	reg := testRegistry()
	p, err := spec.Parse(file, []byte(text), spec.Options{}, reg)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	rep, err := engine.Run(context.Background(), p, engine.Options{Registry: reg, Runners: engine.Runners{spec.ModeProcess: factory}, Stdout: &out, Stderr: stderr})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range rep.Stages {
		if !s.Balanced() {
			t.Errorf("stage %s does not account for every item: %+v", s.Name, *s)
		}
	}
	checkNoOrphans(t)
	return rep, out.String()
}

func stageNamed(rep *report.Report, name string) *report.Stage {
	for _, s := range rep.Stages {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func failureClasses(rep *report.Report) []string {
	var out []string
	for _, f := range rep.Failures {
		out = append(out, f.Class)
	}
	sort.Strings(out)
	return out
}

func TestEngineCrashIsolation(t *testing.T) {
	rep, out := runPipeline(t, `version: 1
stages:
  - name: src
    source: {items: [echo, "exit:3", echo, panic, echo, gopanic, echo]}
  - name: work
    step: test
    mode: process
    workers: 2
    on_error: skip
    retry: {attempts: 2, backoff: 1ms}
`)
	st := stageNamed(rep, "work")
	if st.Succeeded != 4 || st.Skipped != 3 || st.Retries != 3 {
		t.Errorf("work: %+v; want 4 succeeded, 3 skipped after one retry each", *st)
	}
	if got := strings.Join(failureClasses(rep), ","); got != "crash,crash,crash" {
		t.Errorf("failure classes %s, want crash x3", got)
	}
	if n := strings.Count(out, `"pid"`); n != 4 {
		t.Errorf("%d results printed, want 4:\n%s", n, out)
	}
}

// With the engine calling Do from many goroutines, each worker holds many
// items around the one that kills it; the others run again unseen: no
// error, no retry counted.
func TestEngineCrashAmongManyQueuedItems(t *testing.T) {
	var items []string
	for i := range 400 {
		if i%100 == 50 {
			items = append(items, `"exit:3"`)
		}
		items = append(items, "echo")
	}
	rep, out := runPipeline(t, `version: 1
stages:
  - name: src
    source: {items: [`+strings.Join(items, ", ")+`]}
  - name: work
    step: test
    mode: process
    workers: 2
    on_error: skip
    retry: {attempts: 2, backoff: 1ms}
`)
	st := stageNamed(rep, "work")
	if st.Succeeded != 400 || st.Skipped != 4 || st.Retries != 4 {
		t.Errorf("work: %+v; want 400 succeeded, the 4 exits skipped after one retry each, no other retry", *st)
	}
	if got := strings.Join(failureClasses(rep), ","); got != "crash,crash,crash,crash" {
		t.Errorf("failure classes %s, want crash x4", got)
	}
	if n := strings.Count(out, `"pid"`); n != 400 {
		t.Errorf("%d results printed, want 400", n)
	}
}

func TestFactorySendsWorkerOutputToTheRunsStderr(t *testing.T) {
	// Factory takes no environment: the workers inherit the mark.
	k, v, _ := strings.Cut(testMark, "=")
	t.Setenv(k, v)
	stderr := &syncBuffer{}
	rep, _ := runPipelineWith(t, `version: 1
stages:
  - name: src
    source: {items: ["print:one", "print:two"]}
  - name: work
    step: test
    mode: process
    workers: 2
`, Factory, stderr)
	if st := stageNamed(rep, "work"); st.Succeeded != 2 {
		t.Fatalf("work: %+v", *st)
	}
	for _, want := range []string{"flow: stage work: worker ", ": printed to stdout: one", ": printed to stderr: two"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("the run's stderr lacks %q:\n%s", want, stderr)
		}
	}
}

func TestEngineTimeoutKillsHungItem(t *testing.T) {
	rep, _ := runPipeline(t, `version: 1
stages:
  - name: src
    source: {items: [spin, echo, echo]}
  - name: work
    step: test
    mode: process
    workers: 2
    timeout: 3s
    on_error: skip
`)
	// The timeout covers a worker's start too: 3s leaves a loaded machine
	// (a race build, a busy CI) room to start one for the echo items.
	st := stageNamed(rep, "work")
	if st.Succeeded != 2 || st.Skipped != 1 || st.TimedOut != 1 {
		t.Errorf("work: %+v; want the spinning item timed out and the others done", *st)
	}
}

func TestEngineCompleteFirstCancelsTheRest(t *testing.T) {
	rep, _ := runPipeline(t, `version: 1
stages:
  - name: src
    source: {items: ["sleep:1h", "sleep:1h", spin, "sleep:20ms"]}
  - name: work
    step: test
    mode: process
    workers: 4
    complete: first
`)
	st := stageNamed(rep, "work")
	if st.Succeeded != 1 || st.Cancelled != 3 || rep.ExitCode != 0 {
		t.Errorf("work: %+v (exit %d); want one winner and three cancelled", *st, rep.ExitCode)
	}
}

func TestEngineMemoryLimit(t *testing.T) {
	rep, _ := runPipeline(t, `version: 1
stages:
  - name: src
    source: {items: [hog, echo]}
  - name: work
    step: test
    mode: process
    workers: 1
    memory: 100MiB
    on_error: skip
`)
	st := stageNamed(rep, "work")
	if st.Succeeded != 1 || st.Skipped != 1 || strings.Join(failureClasses(rep), ",") != "memory" {
		t.Errorf("work: %+v, failures %+v; want the hog failed with class memory", *st, rep.Failures)
	}
	if len(rep.Failures) == 1 && !strings.Contains(rep.Failures[0].Error, "100MiB") {
		t.Errorf("failure %q does not name the limit", rep.Failures[0].Error)
	}
}

func TestEngineMaxTasksPerChild(t *testing.T) {
	_, out := runPipeline(t, `version: 1
stages:
  - name: src
    source: {items: [echo, echo, echo, echo, echo, echo, echo, echo, echo, echo]}
  - name: work
    step: test
    mode: process
    workers: 1
    max_tasks_per_child: 4
`)
	pids := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		i := strings.Index(line, `"pid":`)
		if i < 0 {
			t.Fatalf("unexpected output line %q", line)
		}
		pid := strings.TrimRight(strings.SplitN(line[i+6:], ",", 2)[0], "}")
		pids[pid]++
	}
	if len(pids) != 3 {
		t.Errorf("10 items at 4 per worker ran in %d workers (%v), want 3", len(pids), pids)
	}
}

// workerEvents records the workers named in the attempts of one stage.
type workerEvents struct {
	mu      sync.Mutex
	workers map[string]int
	redeliv int
}

func (w *workerEvents) StageStarted(string, int, int64) {}
func (w *workerEvents) StageDone(string)                {}
func (w *workerEvents) ItemDone(ev *engine.ItemEvent) {
	if ev.Stage != "work" {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, a := range ev.Attempts {
		w.workers[a.Worker]++
		w.redeliv += a.Redelivered
	}
}

// Each attempt names the worker process that ran it: a timeline draws one
// lane per process, not per calling goroutine.
func TestAttemptsNameTheWorkerProcess(t *testing.T) {
	text := `version: 1
stages:
  - {name: src, source: {items: [echo, echo, echo, echo, echo, echo]}}
  - {name: work, step: test, mode: process, workers: 2}
`
	file := filepath.Join(t.TempDir(), "pipeline.yaml")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	reg := testRegistry()
	p, err := spec.Parse(file, []byte(text), spec.Options{}, reg)
	if err != nil {
		t.Fatal(err)
	}
	ev := &workerEvents{workers: map[string]int{}}
	rep, err := engine.Run(context.Background(), p, engine.Options{Registry: reg, Runners: engine.Runners{spec.ModeProcess: testFactory},
		Stdout: io.Discard, Stderr: io.Discard, Events: ev})
	if err != nil {
		t.Fatal(err)
	}
	checkNoOrphans(t)
	st := stageNamed(rep, "work")
	if st.Succeeded != 6 {
		t.Fatalf("work: %+v", *st)
	}
	var byWorker int64
	for w, n := range st.ByWorker {
		if !strings.HasPrefix(w, "pid ") {
			t.Errorf("report counts items of worker %q", w)
		}
		byWorker += n
	}
	if byWorker != 6 {
		t.Errorf("the report's counts by worker add up to %d, want 6: %v", byWorker, st.ByWorker)
	}
	n := 0
	for w, c := range ev.workers {
		if !strings.HasPrefix(w, "pid ") {
			t.Errorf("attempt worker %q, want pid N", w)
		}
		n += c
	}
	if n != 6 || len(ev.workers) == 0 || len(ev.workers) > 2 || ev.redeliv != 0 {
		t.Errorf("workers %v, redelivered %d: want 6 attempts over at most 2 processes, none redelivered", ev.workers, ev.redeliv)
	}
}

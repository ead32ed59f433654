package engine

import (
	"context"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
)

// procsRunner records the GOMAXPROCS its items run under.
type procsRunner struct{ procs atomic.Int64 }

func (r *procsRunner) Do(_ context.Context, in steps.Input, _ *Attempt) (any, error) {
	r.procs.Store(int64(runtime.GOMAXPROCS(0)))
	return in.Item, nil
}
func (r *procsRunner) Close() error { return nil }

// runProcs runs src with its process-mode stages on a procsRunner and
// returns the GOMAXPROCS the items saw (0: none ran there).
func runProcs(t *testing.T, src string, owns bool) int {
	t.Helper()
	r := &procsRunner{}
	var out strings.Builder
	rep, err := Run(context.Background(), parse(t, src), Options{Registry: reg, Stdout: &out, OwnsProcess: owns,
		Runners: Runners{spec.ModeProcess: func(StageRun) (Runner, error) { return r, nil }}})
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, rep)
	return int(r.procs.Load())
}

// Not parallel: GOMAXPROCS is the test process's own.
func TestShareCPUsWithWorkerProcesses(t *testing.T) {
	cpus := runtime.GOMAXPROCS(0)
	for _, tc := range []struct {
		name, src string
		owns      bool
		want      int
	}{
		{"every step stage in worker processes", `
version: 1
stages:
  - {name: src, source: {nums: 20}}
  - {name: a, step: pass, mode: process, workers: 1}
  - {name: b, step: pass, mode: process, workers: 1}
`, true, max(1, cpus-2)},
		{"workers: auto takes every CPU", `
version: 1
stages:
  - {name: src, source: {nums: 20}}
  - {name: a, step: pass, mode: process, workers: auto}
`, true, 1},
		{"a thread-mode stage keeps the machine", `
version: 1
stages:
  - {name: src, source: {nums: 20}}
  - {name: a, step: pass, mode: process, workers: 1}
  - {name: t, step: pass}
`, true, cpus},
		{"a run that does not own its process", `
version: 1
stages:
  - {name: src, source: {nums: 20}}
  - {name: a, step: pass, mode: process, workers: 1}
`, false, cpus},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := runProcs(t, tc.src, tc.owns); got != tc.want {
				t.Errorf("items ran with GOMAXPROCS %d, want %d (of %d)", got, tc.want, cpus)
			}
			if got := runtime.GOMAXPROCS(0); got != cpus {
				t.Errorf("GOMAXPROCS %d after the run, want %d back", got, cpus)
			}
		})
	}
	t.Run("the user's GOMAXPROCS", func(t *testing.T) {
		t.Setenv("GOMAXPROCS", strconv.Itoa(cpus))
		src := `
version: 1
stages:
  - {name: src, source: {nums: 20}}
  - {name: a, step: pass, mode: process, workers: auto}
`
		if got := runProcs(t, src, true); got != cpus {
			t.Errorf("items ran with GOMAXPROCS %d, want the user's %d", got, cpus)
		}
	})
}

func TestParentProcs(t *testing.T) {
	for _, c := range []struct{ cpus, workers, want int }{
		{2, 2, 1}, {2, 1, 1}, {8, 2, 6}, {8, 8, 1}, {8, 20, 1}, {1, 1, 1},
	} {
		if got := parentProcs(c.cpus, c.workers); got != c.want {
			t.Errorf("parentProcs(%d, %d) = %d, want %d", c.cpus, c.workers, got, c.want)
		}
	}
}

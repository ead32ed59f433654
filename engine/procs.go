package engine

import (
	"os"
	"runtime"

	"github.com/flowrun/flow/spec"
)

// shareCPUs sizes this process's Go runtime to the CPUs a run leaves it
// when every step stage runs in worker processes, and returns what puts
// the runtime back. Each worker runs one item at a time and so keeps
// about one CPU busy; what is left to this process is then coordination:
// the source, handing items out, settling results, the sink. With a P per
// CPU, those goroutines wake each other across threads (futex) and idle
// Ps spin looking for work, stealing what another was about to run: on
// 2 CPUs with two workers that was a third of the run's CPU for tiny
// items (docs/benchmarks.md). Every thread-mode or cluster stage keeps the
// whole machine, as does a GOMAXPROCS the user set, and a run that does
// not own its process (Options.OwnsProcess).
func (r *run) shareCPUs(stages []stageExec) (restore func()) {
	none := func() {}
	if !r.opts.OwnsProcess {
		return none
	}
	if _, set := os.LookupEnv("GOMAXPROCS"); set {
		return none
	}
	workers := 0
	for _, s := range stages {
		st, ok := s.(*stepStage)
		if !ok {
			continue // sources, barriers and sinks: this process's own work
		}
		if st.spec.Mode != spec.ModeProcess {
			return none
		}
		workers += st.rep.Workers
	}
	cpus := runtime.GOMAXPROCS(0)
	want := parentProcs(cpus, workers)
	if workers == 0 || want >= cpus {
		return none
	}
	runtime.GOMAXPROCS(want)
	// The default again, not cpus: set once, GOMAXPROCS no longer follows
	// a change of the container's CPU limit.
	return runtime.SetDefaultGOMAXPROCS
}

// parentProcs is the GOMAXPROCS of a process whose step stages have
// workers worker processes between them on cpus CPUs: the CPUs they leave,
// at least one.
func parentProcs(cpus, workers int) int {
	return max(1, cpus-workers)
}

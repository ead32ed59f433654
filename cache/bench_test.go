package cache

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps/all"
	"github.com/flowrun/flow/store"
)

// BenchmarkEngineCache is the bench harness's engine workload (a range,
// two trivial computes, JSON Lines to stdout, here discarded) with the
// computes' cache off, on for a run that stores every result (cold), and
// on for a run answered entirely from the store (warm). It reports items/s
// (source items through both stages) and the state database's size per
// million stored results.
//
//	go test -run XXX -bench EngineCache -benchtime 200000x ./cache
func BenchmarkEngineCache(b *testing.B) {
	for _, c := range []struct{ name, cache string }{{"off", "off"}, {"cold", "on"}, {"warm", "on"}} {
		b.Run(c.name, func(b *testing.B) {
			dir := b.TempDir()
			src := fmt.Sprintf(`version: 1
name: bench-engine
stages:
  - name: numbers
    source: {range: {from: 1, to: %d}}
  - name: plus-one
    step: compute
    cache: %s
    with: {value: "${ item + 1 }"}
  - name: plus-two
    step: compute
    cache: %s
    with: {value: "${ item + 1 }"}
  - name: out
    sink: {print: jsonl}
`, b.N, c.cache, c.cache)
			file := filepath.Join(dir, "p.yaml")
			reg := all.Registry()
			p, err := spec.Parse(file, []byte(src), spec.Options{Resolve: true}, reg)
			if err != nil {
				b.Fatal(err)
			}
			path := filepath.Join(dir, store.FileName)
			db, err := store.Open(path, store.Options{})
			if err != nil {
				b.Fatal(err)
			}
			run := func() time.Duration {
				opts := Options{DB: db, Pipeline: file, Run: func() string { return "bench" }}
				start := time.Now()
				rep, err := engine.Run(context.Background(), p, engine.Options{Registry: reg, Stdout: io.Discard, Stderr: io.Discard,
					Runners: engine.Runners{spec.ModeThread: Wrap(engine.ThreadRunner, opts)}})
				if err != nil || rep.Status != report.StatusSucceeded {
					b.Fatalf("run: %v, %v", err, rep)
				}
				return time.Since(start)
			}
			if c.name == "warm" {
				run()
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuTime()
			el := run()
			b.StopTimer()
			// Close commits the queued results: the cold run's time
			// includes them, as a real run's end does.
			start := time.Now()
			if err := db.Close(); err != nil {
				b.Fatal(err)
			}
			if c.name != "warm" {
				el += time.Since(start)
			}
			b.ReportMetric(float64(b.N)/el.Seconds(), "items/s")
			// CPU time is what a loaded machine does not distort.
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/item")
			if c.cache == "on" {
				var size int64
				for _, suffix := range []string{"", "-wal"} {
					if fi, err := os.Stat(path + suffix); err == nil {
						size += fi.Size()
					}
				}
				// Two stored results per source item.
				b.ReportMetric(float64(size)/float64(2*b.N)*1e6/(1<<20), "MiB/M-results")
			}
		})
	}
}

// cpuTime is the process's user and system time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

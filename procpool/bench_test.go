package procpool

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
)

// BenchmarkTrivialItems measures items per second through a pool of two
// worker processes running a step that returns its item: the cost of the
// process boundary itself (encode, pipe, decode, both ways). Callers keep
// InFlight() items in flight, as the engine should.
func BenchmarkTrivialItems(b *testing.B) {
	for _, workers := range []int{1, 2} {
		b.Run(map[int]string{1: "workers=1", 2: "workers=2"}[workers], func(b *testing.B) {
			text := strings.Replace(testPipeline, `tag: "${ vars.tag }"`, "plain: true", 1)
			pool, _ := newTestPool(b, text, nil, Config{Workers: workers, InFlight: workers * inFlightPerWorker})
			ctx := context.Background()
			// Start the workers and let the pool measure the items.
			for i := range 1000 {
				if _, err := pool.Do(ctx, steps.Input{Index: int64(i), Item: int64(i)}, nil); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			var next atomic.Int64
			var wg sync.WaitGroup
			n := int64(b.N)
			for range pool.InFlight() {
				wg.Go(func() {
					for {
						i := next.Add(1) - 1
						if i >= n {
							return
						}
						v, err := pool.Do(ctx, steps.Input{Index: i, Item: i}, nil)
						if err != nil || v != i {
							b.Errorf("item %d: got %v, %v", i, v, err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "items/s")
		})
	}
}

// BenchmarkTrivialItemsOnePerWorker is the same with only one item in
// flight per worker (an engine that ignores InFlight): every item pays a
// round trip between the processes.
func BenchmarkTrivialItemsOnePerWorker(b *testing.B) {
	text := strings.Replace(testPipeline, `tag: "${ vars.tag }"`, "plain: true", 1)
	pool, _ := newTestPool(b, text, nil, Config{Workers: 2})
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	n := int64(b.N)
	for range 2 {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= n {
					return
				}
				if v, err := pool.Do(ctx, steps.Input{Index: i, Item: i}, nil); err != nil || v != i {
					b.Errorf("item %d: got %v, %v", i, v, err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "items/s")
}

// BenchmarkEngineProcessStage runs range -> a process stage returning its
// item -> a discarded JSON Lines sink through engine.Run: the throughput a
// user sees, engine included. It depends on the engine calling Do from
// InFlight() goroutines (engine.InFlighter); with one call per worker every
// item pays a round trip between the processes.
func BenchmarkEngineProcessStage(b *testing.B) {
	text := fmt.Sprintf(`version: 1
stages:
  - name: src
    source: {range: {from: 1, to: %d}}
  - name: work
    step: test
    mode: process
    workers: 2
    with: {plain: true}
`, b.N)
	file := filepath.Join(b.TempDir(), "pipeline.yaml")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		b.Fatal(err)
	}
	reg := testRegistry()
	p, err := spec.Parse(file, []byte(text), spec.Options{}, reg)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	rep, err := engine.Run(context.Background(), p, engine.Options{Registry: reg, Runners: engine.Runners{spec.ModeProcess: testFactory}, Stdout: io.Discard, Stderr: io.Discard})
	if err != nil {
		b.Fatal(err)
	}
	if st := rep.Stages[1]; st.Succeeded != int64(b.N) {
		b.Fatalf("work: %+v", *st)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "items/s")
}

// BenchmarkDoBatchParentCPU feeds tiny items through DoBatch, as the engine
// does, from two callers per worker, and reports the CPU time of this
// process alone (the workers are other processes) per item: the parent's
// share of the cost of an item, without the engine's.
func BenchmarkDoBatchParentCPU(b *testing.B) {
	const callers, size = 4, 512
	text := strings.Replace(testPipeline, `tag: "${ vars.tag }"`, "plain: true", 1)
	pool, _ := newTestPool(b, text, nil, Config{Workers: 2, InFlight: 2 * inFlightPerWorker})
	ctx := context.Background()
	run := func(n int64) {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range callers {
			wg.Go(func() {
				items := make([]engine.BatchItem, size)
				got := make([]any, size)
				ats := make([]engine.Attempt, size)
				for {
					first := next.Add(size) - size
					if first >= n {
						return
					}
					k := int(min(size, n-first))
					for i := range k {
						items[i] = engine.BatchItem{In: steps.Input{Index: first + int64(i), Item: first + int64(i)}, At: &ats[i]}
					}
					pool.DoBatch(ctx, items[:k], func(i int, v any, err error) {
						if err != nil {
							b.Errorf("item %d: %v", first+int64(i), err)
						}
						got[i] = v
					})
					for i := range k {
						if got[i] != first+int64(i) {
							b.Errorf("item %d: got %v", first+int64(i), got[i])
							return
						}
					}
				}
			})
		}
		wg.Wait()
	}
	run(20000) // start the workers and let the pool measure the items
	before := selfCPU()
	b.ResetTimer()
	run(int64(b.N))
	b.StopTimer()
	b.ReportMetric(float64(selfCPU()-before)/float64(b.N), "parent-cpu-ns/item")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "items/s")
}

// selfCPU is this process's CPU time (user and system), in nanoseconds.
func selfCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

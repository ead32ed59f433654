package engine

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/flowrun/flow/clock"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/tmpl"
)

// BenchmarkThreeStages measures items per second through a lazy source,
// three trivial steps and a counting sink. Target: >= 1,000,000 items/s on
// 2 cores in both orders.
func BenchmarkThreeStages(b *testing.B) {
	for _, order := range []string{"input", "completion"} {
		b.Run(order, func(b *testing.B) {
			col := &collector{}
			p := parse(b, fmt.Sprintf(`
version: 1
stages:
  - {name: src, source: {nums: %d}}
  - {name: a, step: pass, order: %s}
  - {name: b, step: pass, order: %s}
  - {name: c, step: pass, order: %s}
  - {name: out, sink: {collect: %s}}
`, b.N, order, order, order, fn(col)))
			runItems(b, p, col)
		})
	}
}

// runItems times one run of p, whose sink is col, over b.N items and
// reports its throughput; a run that loses an item fails the benchmark.
func runItems(b *testing.B, p *spec.Pipeline, col *collector) {
	b.Helper()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	rep, err := runPipeline(context.Background(), p, Options{Registry: reg}, config{})
	el := time.Since(start)
	b.StopTimer()
	if err != nil || rep.Status != "succeeded" || col.count.Load() != int64(b.N) {
		b.Fatalf("err %v, status %s, sink got %d of %d", err, rep.Status, col.count.Load(), b.N)
	}
	b.ReportMetric(float64(b.N)/el.Seconds(), "items/s")
}

// BenchmarkThreeStagesBulk is BenchmarkThreeStages with the ends' bulk
// seams: a BulkSource (as range is) and a BatchSink (as print is).
func BenchmarkThreeStagesBulk(b *testing.B) {
	col := &collector{}
	p := parse(b, fmt.Sprintf(`
version: 1
stages:
  - {name: src, source: {bulknums: %d}}
  - {name: a, step: pass}
  - {name: b, step: pass}
  - {name: c, step: pass}
  - {name: out, sink: {bcollect: %s}}
`, b.N, fn(col)))
	runItems(b, p, col)
}

// BenchmarkFlatMemory runs 10,000,000 items through three stages and
// reports the peak heap seen while they flow: it must not grow with the
// number of items.
func BenchmarkFlatMemory(b *testing.B) {
	for range b.N {
		peak := flowAndMeasure(b, 10_000_000)
		b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
	}
}

// flowAndMeasure runs n items through three stages and returns the peak
// heap in use, sampled as they flow.
func flowAndMeasure(tb testing.TB, n int) uint64 {
	col := &collector{}
	p := parse(tb, fmt.Sprintf(`
version: 1
stages:
  - {name: src, source: {nums: %d}}
  - {name: a, step: pass}
  - {name: b, step: pass, order: completion}
  - {name: c, step: pass}
  - {name: out, sink: {collect: %s}}
`, n, fn(col)))
	done := make(chan struct{})
	peakc := make(chan uint64)
	go func() {
		var peak uint64
		var ms runtime.MemStats
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				peakc <- peak
				return
			case <-t.C:
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapInuse)
			}
		}
	}()
	rep, err := runPipeline(context.Background(), p, Options{Registry: reg}, config{})
	close(done)
	peak := <-peakc
	if err != nil || rep.Status != "succeeded" || col.count.Load() != int64(n) {
		tb.Fatalf("err %v, sink got %d of %d", err, col.count.Load(), n)
	}
	return peak
}

// TestMemoryFlat checks that the heap does not grow with the number of
// items: 4,000,000 items must not need much more than 250,000 do.
func TestMemoryFlat(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("runs millions of items; skipped with -short and -race")
	}
	small := flowAndMeasure(t, 250_000)
	large := flowAndMeasure(t, 4_000_000)
	t.Logf("peak heap: %.1f MiB for 250k items, %.1f MiB for 4M items", float64(small)/(1<<20), float64(large)/(1<<20))
	if large > 2*small+8<<20 {
		t.Errorf("peak heap grew from %d to %d bytes with 16 times the items", small, large)
	}
}

// BenchmarkLimiter measures what a limit costs per attempt when it does not
// make anyone wait (the rate is far above what the loop reaches): taking
// and giving back a rate token, a concurrency slot, a keyed bucket. Run
// with -cpu 1,2 to see contention on the shared limit.
func BenchmarkLimiter(b *testing.B) {
	fast := &spec.Rate{N: 1e12, Per: time.Second}
	for _, bc := range []struct {
		name string
		lim  func() *limit
		keys int
	}{
		{"rate", func() *limit { return newLimit("r", fast, 1, 0, nil, 0, clock.Real) }, 0},
		{"concurrency", func() *limit { return newLimit("c", nil, 0, 1<<20, nil, 0, clock.Real) }, 0},
		{"rate+concurrency", func() *limit { return newLimit("rc", fast, 1, 1<<20, nil, 0, clock.Real) }, 0},
		{"keyed-rate-1000-keys", func() *limit {
			key, err := tmpl.Compile("${ item }")
			if err != nil {
				b.Fatal(err)
			}
			return newLimit("k", fast, 1, 0, key, 0, clock.Real)
		}, 1000},
	} {
		b.Run(bc.name, func(b *testing.B) {
			lm := &limiter{limits: []*limit{bc.lim()}}
			keys := make([][]string, max(bc.keys, 1))
			for i := range keys {
				if bc.keys > 0 {
					keys[i] = []string{strconv.Itoa(i)}
				}
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				var h held
				i := 0
				for pb.Next() {
					if err := lm.acquire(context.Background(), keys[i%len(keys)], &h); err != nil {
						b.Error(err)
						return
					}
					lm.done(&h)
					i++
				}
			})
		})
	}
}

// BenchmarkRateAccuracy runs items through a stage limited to 2,000/s and
// reports the rate achieved, measured as the bench harness does at its
// server: (n - 1) / (last start - first start). It should read 2000.
func BenchmarkRateAccuracy(b *testing.B) {
	const n = 1000
	for range b.N {
		var mu sync.Mutex
		var first, last time.Time
		stamp := steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
			now := time.Now()
			mu.Lock()
			if first.IsZero() || now.Before(first) {
				first = now
			}
			if now.After(last) {
				last = now
			}
			mu.Unlock()
			return in.Item, nil
		})
		col := &collector{}
		p := parse(b, fmt.Sprintf(`
version: 1
stages:
  - {name: src, source: {nums: %d}}
  - {name: a, step: fn, with: {fn: %s}, workers: 8, rate: 2000/s}
  - {name: out, sink: {collect: %s}}
`, n, fn(stamp), fn(col)))
		rep, err := runPipeline(context.Background(), p, Options{Registry: reg}, config{})
		if err != nil || rep.Status != "succeeded" || col.count.Load() != n {
			b.Fatalf("err %v, sink got %d of %d", err, col.count.Load(), n)
		}
		b.ReportMetric(float64(n-1)/last.Sub(first).Seconds(), "items/s")
	}
}

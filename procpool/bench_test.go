package procpool

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

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
				if _, err := pool.Do(ctx, steps.Input{Index: int64(i), Item: int64(i)}); err != nil {
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
						v, err := pool.Do(ctx, steps.Input{Index: i, Item: i})
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
				if v, err := pool.Do(ctx, steps.Input{Index: i, Item: i}); err != nil || v != i {
					b.Errorf("item %d: got %v, %v", i, v, err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "items/s")
}

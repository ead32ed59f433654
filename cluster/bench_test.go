package cluster

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkClusterTrivial: trivial items through a mode: cluster stage,
// two worker processes of 2 slots over loopback TCP: the cost of the
// cluster itself.
func BenchmarkClusterTrivial(b *testing.B) {
	srv := startServer(b, "127.0.0.1:0")
	startProc(b, srv.ClientURL(), "a", 2, false)
	startProc(b, srv.ClientURL(), "b", 2, false)
	n := max(b.N, 1000)
	b.ResetTimer()
	start := time.Now()
	rep, _ := runCluster(b, srv, fmt.Sprintf(`version: 1
stages:
  - {name: src, source: {range: {from: 1, to: %d}}}
  - {name: calc, step: compute, mode: cluster, with: {value: "${ item + 1 }"}}
`, n), nil)
	el := time.Since(start)
	b.StopTimer()
	if rep.Stages[1].Succeeded != int64(n) {
		b.Fatalf("calc %+v", *rep.Stages[1])
	}
	b.ReportMetric(float64(n)/el.Seconds(), "items/s")
}

// BenchmarkClusterScale: I/O-like items (50 ms of sleep) over 1, 2, 4 and
// 8 worker processes of 4 slots each; the speed-up is against one worker.
func BenchmarkClusterScale(b *testing.B) {
	srv := startServer(b, "127.0.0.1:0")
	var base float64
	started := 0
	for _, workers := range []int{1, 2, 4, 8} {
		for ; started < workers; started++ {
			startProc(b, srv.ClientURL(), fmt.Sprintf("w%d", started), 4, false)
		}
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			n := 40 * workers // ten rounds of every slot
			var rate float64
			for range b.N {
				start := time.Now()
				rep, _ := runCluster(b, srv, fmt.Sprintf(`version: 1
stages:
  - {name: src, source: {range: {from: 1, to: %d}}}
  - {name: calc, step: compute, mode: cluster, workers: %d, with: {value: "${ sleep(0.05) ?? item }"}}
`, n, 4*workers), nil)
				if rep.Stages[1].Succeeded != int64(n) {
					b.Fatalf("calc %+v", *rep.Stages[1])
				}
				rate = float64(n) / time.Since(start).Seconds()
			}
			if workers == 1 {
				base = rate
			}
			b.ReportMetric(rate, "items/s")
			b.ReportMetric(rate/base, "speedup")
		})
	}
}

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

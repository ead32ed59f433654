package resize

import (
	"syscall"
	"testing"
	"time"
)

// cpuTimer reports CPU time per operation besides wall time: on a shared
// machine wall time mostly measures the neighbours.
type cpuTimer struct{ start time.Duration }

func cpuNow() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPU() cpuTimer { return cpuTimer{cpuNow()} }

func (c cpuTimer) report(b *testing.B, ops int) {
	b.ReportMetric(float64(cpuNow()-c.start)/float64(time.Millisecond)/float64(ops), "cpu-ms/op")
}

package cluster

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/report"
)

// BenchmarkClusterTrivial: trivial items through a mode: cluster stage,
// two worker processes of 2 slots over loopback TCP: the cost of the
// cluster itself. The run is in the server's process.
func BenchmarkClusterTrivial(b *testing.B) { benchTrivial(b, false) }

// BenchmarkClusterTrivialTCP: the same, with the run connected over TCP
// too, as `flow run --nats` is.
func BenchmarkClusterTrivialTCP(b *testing.B) { benchTrivial(b, true) }

func benchTrivial(b *testing.B, tcp bool) {
	srv := startServer(b, "127.0.0.1:0")
	startProc(b, srv.ClientURL(), "a", 2, false)
	startProc(b, srv.ClientURL(), "b", 2, false)
	conn := Conn{Embedded: srv}
	if tcp {
		conn = Conn{URL: srv.ClientURL()}
	}
	n := max(b.N, 1000)
	b.ResetTimer()
	start := time.Now()
	rep, _ := runClusterOn(b, conn, fmt.Sprintf(`version: 1
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

// redeliveries records when the first item that was redelivered after a
// worker's death came back.
type redeliveries struct {
	mu    sync.Mutex
	first time.Time
}

func (r *redeliveries) StageStarted(string, int, int64) {}
func (r *redeliveries) StageDone(string)                {}
func (r *redeliveries) ItemDone(ev *engine.ItemEvent) {
	for _, a := range ev.Attempts {
		if a.Redelivered > 0 {
			r.mu.Lock()
			if r.first.IsZero() {
				r.first = time.Now()
			}
			r.mu.Unlock()
		}
	}
}

// BenchmarkClusterRecovery: twenty runs, each with a worker process
// SIGKILLed at a random moment (and restarted, as systemd would): the time
// from the kill to its items being redelivered to the other worker (the
// first redelivered item done, less its 100 ms of work), and the items
// lost or doubled over the twenty (both must be 0).
func BenchmarkClusterRecovery(b *testing.B) {
	srv := startServer(b, "127.0.0.1:0")
	a := startProc(b, srv.ClientURL(), "a", 4, true)
	startProc(b, srv.ClientURL(), "b", 4, true)
	rng := rand.New(rand.NewPCG(3, 4))
	const n, kills = 60, 20
	var total, worst time.Duration
	lost, doubled, measured := 0, 0, 0
	b.ResetTimer()
	for range kills {
		ev := &redeliveries{}
		killed := make(chan time.Time, 1)
		go func() {
			time.Sleep(time.Duration(200+rng.IntN(400)) * time.Millisecond)
			at := time.Now()
			a.signal(syscall.SIGKILL)
			killed <- at
		}()
		rep, out := runCluster(b, srv, fmt.Sprintf(`version: 1
stages:
  - {name: src, source: {range: {from: 1, to: %d}}}
  - {name: calc, step: compute, mode: cluster, workers: 8, with: {value: "${ sleep(0.1) ?? item }"}}
`, n), ev)
		at := <-killed
		if rep.Status != report.StatusSucceeded {
			b.Fatalf("status %s: %s", rep.Status, rep.Reason)
		}
		seen := map[string]bool{}
		for _, l := range lines(out) {
			if seen[l] {
				doubled++
			}
			seen[l] = true
		}
		lost += n - len(seen)
		if !ev.first.IsZero() {
			d := ev.first.Sub(at) - 100*time.Millisecond
			total += d
			worst = max(worst, d)
			measured++
		}
	}
	b.StopTimer()
	if measured > 0 {
		b.ReportMetric(float64(total.Milliseconds())/float64(measured), "ms-to-redeliver")
		b.ReportMetric(float64(worst.Milliseconds()), "ms-worst")
	}
	b.ReportMetric(float64(testSettings.AckWait.Milliseconds()), "ms-ack-wait")
	b.ReportMetric(float64(lost), "lost")
	b.ReportMetric(float64(doubled), "doubled")
	b.Logf("%d kills, %d of them with items redelivered", kills, measured)
	if lost > 0 || doubled > 0 {
		b.Fatalf("%d items lost, %d doubled over %d kills", lost, doubled, kills)
	}
}

package procpool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/flowrun/flow/protocol"
	"github.com/flowrun/flow/steps"
)

// inProcessWorker runs a worker's loop (read and run, without its signal
// handling) in this process with step, over pipes; send writes to it, and
// results reads what it answers. exited gives run's code.
type inProcessWorker struct {
	w       *worker
	send    *protocol.Writer
	in      *os.File
	results *protocol.Reader
	exited  chan int
}

func startInProcessWorker(t *testing.T, page runningPage, step steps.Step, crossing func()) *inProcessWorker {
	t.Helper()
	inR, inW := testPipe(t)
	outR, outW := testPipe(t)
	t.Cleanup(func() { inW.Close(); outR.Close() })
	w := newWorker(protocol.NewWriter(outW), page)
	w.step, w.crossing = step, crossing
	p := &inProcessWorker{w: w, send: protocol.NewWriter(inW), in: inW, results: protocol.NewReader(outR), exited: make(chan int, 1)}
	go w.read(protocol.NewReader(inR))
	go func() { p.exited <- w.run(); outW.Close() }()
	return p
}

// collect reads results until the worker's output ends.
func (p *inProcessWorker) collect(t *testing.T) []protocol.Result {
	t.Helper()
	var out []protocol.Result
	for {
		m, err := p.results.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("after %d results: %v", len(out), err)
		}
		if r, ok := m.(*protocol.Results); ok {
			out = append(out, r.Results...)
		}
	}
}

func waitRunning(t *testing.T, w *worker, id uint64) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); w.runningID() != id; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("item %d never started", id)
		}
	}
}

// blockStep runs items "block" until their context ends, and answers
// others with their value; it records every item it starts.
type blockStep struct {
	mu      sync.Mutex
	started []uint64
}

func (s *blockStep) Do(ctx context.Context, in steps.Input) (any, error) {
	s.mu.Lock()
	s.started = append(s.started, uint64(in.Index))
	s.mu.Unlock()
	if in.Item == "block" {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return in.Item, nil
}

// The worker takes what its queue holds as a batch and runs it without a
// lock: a Cancel of an item of that batch that has not started still
// withdraws it, and spares the others.
func TestCancelOfAnItemTakenButNotStarted(t *testing.T) {
	for _, withPage := range []bool{false, true} {
		t.Run(fmt.Sprintf("page=%v", withPage), func(t *testing.T) {
			page := testPage(t, withPage)
			step := &blockStep{}
			p := startInProcessWorker(t, page, step, nil)
			// One frame: the worker takes all three at once.
			if err := p.send.Write(&protocol.Items{{ID: 1, Index: 1, Value: "block"}, {ID: 2, Index: 2, Value: "two"}, {ID: 3, Index: 3, Value: "three"}}); err != nil {
				t.Fatal(err)
			}
			waitRunning(t, p.w, 1)
			if err := p.send.Write(&protocol.Cancel{2, 1}); err != nil {
				t.Fatal(err)
			}
			p.in.Close()
			got := p.collect(t)
			if len(got) != 3 || got[0].ID != 1 || got[1].ID != 2 || got[2].ID != 3 {
				t.Fatalf("results %+v, want items 1, 2, 3 in order", got)
			}
			if e := got[0].Err; e == nil || !strings.Contains(e.Message, "context canceled") {
				t.Errorf("running item 1: %+v, want its context cancelled", got[0])
			}
			if e := got[1].Err; e == nil || e.Class != "cancelled" || !strings.Contains(e.Message, "before it started") {
				t.Errorf("withdrawn item 2: %+v, want cancelled before it started", got[1])
			}
			if got[2].Err != nil {
				t.Errorf("item 3: %s", got[2].Err.Message)
			}
			step.mu.Lock()
			defer step.mu.Unlock()
			if fmt.Sprint(step.started) != "[1 3]" {
				t.Errorf("started %v, want [1 3]: item 2 must not start", step.started)
			}
			if code := <-p.exited; code != 0 {
				t.Errorf("run returned %d", code)
			}
		})
	}
}

// SIGTERM (terminate) in the middle of a batch: the running item's context
// ends, and no other item of the batch starts.
func TestTerminateStopsTheBatch(t *testing.T) {
	step := &blockStep{}
	p := startInProcessWorker(t, runningPage{}, step, nil)
	if err := p.send.Write(&protocol.Items{{ID: 1, Index: 1, Value: "block"}, {ID: 2, Index: 2, Value: "two"}, {ID: 3, Index: 3, Value: "three"}}); err != nil {
		t.Fatal(err)
	}
	waitRunning(t, p.w, 1)
	p.w.terminate()
	if code := <-p.exited; code != 128+int(syscall.SIGTERM) {
		t.Errorf("run returned %d, want %d", code, 128+int(syscall.SIGTERM))
	}
	step.mu.Lock()
	defer step.mu.Unlock()
	if fmt.Sprint(step.started) != "[1]" {
		t.Errorf("started %v, want [1]: nothing starts once terminated", step.started)
	}
}

// Cancels crossing items as they start and end: a Cancel reaches only the
// item it names, never the one before or after it, which run starts
// without a lock (see worker.attention and worker.cancelling).
func TestCancelsLandOnlyOnTheirItem(t *testing.T) {
	for _, withPage := range []bool{false, true} {
		t.Run(fmt.Sprintf("page=%v", withPage), func(t *testing.T) {
			page := testPage(t, withPage)
			// Each item spins 50 to 130 µs, looking at its context,
			// and says whether it saw it cancelled.
			step := steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
				for deadline := time.Now().Add(time.Duration(50+in.Index%5*20) * time.Microsecond); time.Now().Before(deadline); {
					if ctx.Err() != nil {
						return nil, ctx.Err()
					}
				}
				return in.Index, ctx.Err()
			})
			// Hold the reader between its seeing an item run and its
			// cancelling it, every few Cancels: long enough for the item
			// to end and the next to start, were run not to wait.
			var crossings atomic.Int64
			p := startInProcessWorker(t, page, step, func() {
				if crossings.Add(1)%2 == 0 {
					time.Sleep(500 * time.Microsecond)
				}
			})
			const n, per = 2000, 100
			var mu sync.Mutex
			cancelled := map[uint64]bool{}
			for base := 1; base <= n; base += per {
				items := make(protocol.Items, per)
				for i := range items {
					id := uint64(base + i)
					items[i] = protocol.Item{ID: id, Index: int64(id), Value: int64(id)}
				}
				if err := p.send.Write(&items); err != nil {
					t.Fatal(err)
				}
			}
			// Withdraw the item running, again and again: many Cancels
			// cross the end of their item and the start of the next.
			stop := make(chan struct{})
			var sends sync.WaitGroup
			sends.Go(func() {
				defer p.in.Close()
				rng := rand.New(rand.NewPCG(1, 2))
				for {
					select {
					case <-stop:
						return
					default:
					}
					id := p.w.runningID()
					if id == 0 {
						continue
					}
					mu.Lock()
					cancelled[id] = true
					mu.Unlock()
					if err := p.send.Write(&protocol.Cancel{id}); err != nil {
						t.Error(err)
						return
					}
					for deadline := time.Now().Add(time.Duration(100+rng.IntN(200)) * time.Microsecond); time.Now().Before(deadline); {
					}
				}
			})
			var got []protocol.Result
			for len(got) < n {
				m, err := p.results.Read()
				if err != nil {
					t.Fatalf("after %d results: %v", len(got), err)
				}
				if r, ok := m.(*protocol.Results); ok {
					got = append(got, r.Results...)
				}
			}
			close(stop)
			sends.Wait()
			mu.Lock()
			defer mu.Unlock()
			if len(got) != n {
				t.Fatalf("%d results for %d items", len(got), n)
			}
			hit := 0
			for i, r := range got {
				if r.ID != uint64(i+1) {
					t.Fatalf("result %d is item %d: out of order", i, r.ID)
				}
				if r.Err == nil {
					continue
				}
				if !cancelled[r.ID] {
					t.Errorf("item %d, never cancelled, failed: %s (%s)", r.ID, r.Err.Message, r.Err.Class)
				}
				hit++
			}
			t.Logf("%d of %d withdrawn items were cancelled or skipped; %d crossings", hit, len(cancelled), crossings.Load())
			if code := <-p.exited; code != 0 {
				t.Errorf("run returned %d", code)
			}
		})
	}
}

func TestWorkerProcs(t *testing.T) {
	for _, c := range []struct{ cpus, workers, want int }{
		{2, 2, 1}, {2, 1, 2}, {2, 0, 2}, {8, 3, 3}, {8, 8, 1}, {2, 16, 1}, {16, 4, 4},
	} {
		if got := workerProcs(c.cpus, c.workers); got != c.want {
			t.Errorf("workerProcs(%d CPUs, %d workers) = %d, want %d", c.cpus, c.workers, got, c.want)
		}
	}
}

// testPage is the shared running page a worker test runs with, or none:
// the worker must behave the same either way.
func testPage(t *testing.T, withPage bool) runningPage {
	t.Helper()
	if !withPage {
		return runningPage{}
	}
	pg, f, err := newRunningPage()
	if err != nil {
		t.Skip("no shared page here:", err)
	}
	f.Close()
	t.Cleanup(pg.unmap)
	return pg
}

// A worker's share of the CPUs is in its environment when it starts, where
// the Go runtime reads it, not set by a call once it runs (which stops the
// world); a program the step starts does not inherit it.
func TestWorkerStartsWithItsShareOfTheCPUs(t *testing.T) {
	if _, set := os.LookupEnv("GOMAXPROCS"); set {
		t.Skip("GOMAXPROCS is set: the workers take it as it is")
	}
	n := runtime.GOMAXPROCS(0)
	want := workerProcs(n, 2)
	if want == n {
		t.Skipf("on %d CPUs a worker of 2 takes them all", n)
	}
	pool, _ := newTestPool(t, "", nil, Config{Workers: 2})
	v, err := pool.Do(context.Background(), steps.Input{Item: "procs"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := v.(map[string]any)
	if m["procs"] != int64(want) || m["initial"] != true || m["seen"] != "," {
		t.Errorf("worker: GOMAXPROCS %v (want %d), in its initial environment: %v (want true), seen by what it starts: %q (want none)", m["procs"], want, m["initial"], m["seen"])
	}
}

// GOMAXPROCS set by the user goes to the workers as it is.
func TestWorkerKeepsTheUsersGOMAXPROCS(t *testing.T) {
	pool, _ := newTestPool(t, "", nil, Config{Workers: 2, Env: []string{"GOMAXPROCS=3"}})
	v, err := pool.Do(context.Background(), steps.Input{Item: "procs"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m := v.(map[string]any); m["procs"] != int64(3) || m["seen"] != "3," {
		t.Errorf("worker: GOMAXPROCS %v, seen as %q; want the user's 3", m["procs"], m["seen"])
	}
}

// testPipe is os.Pipe for a test.
func testPipe(tb testing.TB) (r, w *os.File) {
	tb.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		tb.Fatal(err)
	}
	return r, w
}

package procpool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/flowrun/flow/protocol"
	"github.com/flowrun/flow/stagehost"
	"github.com/flowrun/flow/steps"
)

// RoleEnv is the environment variable that starts a binary in the worker role.
const RoleEnv = "FLOW_ROLE"

// The worker reads frames from descriptor 3 and writes frames to descriptor
// 4. Its stdout and stderr both go to the parent, which prefixes and
// forwards them: a step printing to stdout cannot corrupt the protocol.
const (
	fdIn  = 3
	fdOut = 4
)

// procsEnv marks a GOMAXPROCS that the pool set (Pool.procsEnv), not the
// user: the worker takes both out of its environment.
const procsEnv = "FLOW_WORKER_GOMAXPROCS"

// IsWorker reports whether this process was started as a worker. main (and
// TestMain of tests that use process mode) must check it first thing.
func IsWorker() bool { return os.Getenv(RoleEnv) == "worker" }

// WorkerMain serves one stage's items for the parent process until the
// parent sends Shutdown or closes the pipe, and returns the process exit code.
func WorkerMain(reg *steps.Registry) int {
	// Programs the step runs (exec) must not believe they are workers too,
	// nor take the worker's share of the CPUs for theirs.
	os.Unsetenv(RoleEnv)
	procsSet := false
	if k := os.Getenv(procsEnv); k != "" {
		procsSet = os.Getenv("GOMAXPROCS") == k
		os.Unsetenv(procsEnv)
		if procsSet {
			os.Unsetenv("GOMAXPROCS")
		}
	}
	inFile, in := workerPipe(fdIn, "flow-protocol-in")
	outFile, out := workerPipe(fdOut, "flow-protocol-out")
	if _, err := inFile.Stat(); err != nil {
		fmt.Fprintf(os.Stderr, "flow: %s=worker is set, but this process has no protocol pipe (descriptor %d): workers are started by flow itself for mode: process stages; unset %s\n", RoleEnv, fdIn, RoleEnv)
		return 2
	}
	if _, err := outFile.Stat(); err != nil {
		fmt.Fprintf(os.Stderr, "flow: worker has no protocol output pipe (descriptor %d)\n", fdOut)
		return 2
	}
	// Keep the pipes out of programs the step starts: one of them holding
	// the write end would hide this worker's death from the parent.
	syscall.CloseOnExec(fdIn)
	syscall.CloseOnExec(fdOut)
	w := newWorker(protocol.NewWriter(out), openRunningPage())
	w.procsSet = procsSet
	r := protocol.NewReader(in)
	r.Reuse() // read copies the items it takes into the queue
	return w.serve(reg, r)
}

// workerProcs is the GOMAXPROCS of one of the workers processes of a stage
// on cpus CPUs (GOMAXPROCS's default honours a cgroup's quota): its share,
// rounded up. The workers are the stage's parallelism; one runs an item at
// a time, and more Ps than its share only add threads that wake each other
// (futex) and spin looking for work between its goroutines (reading,
// running, heartbeats) while the other workers and the parent need the CPUs.
func workerProcs(cpus, workers int) int {
	if workers <= 1 {
		return cpus
	}
	return max(1, (cpus+workers-1)/workers)
}

func newWorker(out *protocol.Writer, page runningPage) *worker {
	w := &worker{out: out, cancelled: map[uint64]bool{}, page: page}
	w.cond = sync.NewCond(&w.mu)
	return w
}

type worker struct {
	out    *protocol.Writer
	step   steps.Step
	closer interface{ Close() error }
	page   runningPage
	local  atomic.Uint64 // the running word without a page: see runningID
	// procsSet: GOMAXPROCS is the share the pool gave in the environment.
	procsSet bool

	mu         sync.Mutex
	cond       *sync.Cond
	queue      []protocol.Item // wait for run to take them
	batch      []protocol.Item // what run took from the queue, in order
	spare      []protocol.Item // the array of the batch before, for the queue
	closing    bool            // Shutdown or end of input: finish the queue, exit
	terminated bool            // SIGTERM: drop the queue, exit
	cancelled  map[uint64]bool // items withdrawn before they started
	// cancelRunning ends the context items run in; run replaces it (and
	// the context) after a cancel.
	cancelRunning context.CancelFunc
	done          int64 // items run, as of the last frame of results

	// run takes no lock between the items of a batch: a lock per item
	// costs as much as a trivial item. What the reader and onTerm tell it
	// meanwhile goes through these words, which it loads around each item
	// (a plain load on amd64):
	//
	//   - attention is set while cancelled is not empty, and once
	//     terminated: run then looks at them, under mu, before an item;
	//   - cancelling is the ID the reader is cancelling, 0 otherwise: run,
	//     having ended an item, waits for the reader (mu) while it is set,
	//     so that a cancel meant for that item cannot land on the next.
	//
	// Each side writes its word before it reads the other's (run: the
	// running word, then attention; the running word's 0, then
	// cancelling), and atomics are sequentially consistent, so of two
	// that cross at least one sees the other.
	attention  atomic.Bool
	cancelling atomic.Uint64
	crossing   func() // nil but in tests: see cancelLocked
}

// runningID is the ID of the item running, 0 between items: the first word
// of the page shared with the parent, which reads it too, or without a
// page a word of the worker's own.
func (w *worker) runningID() uint64 {
	if w.page.valid() {
		return w.page.load()
	}
	return w.local.Load()
}

func (w *worker) begin(id uint64) {
	if w.page.valid() {
		w.page.begin(id)
	} else {
		w.local.Store(id)
	}
}

func (w *worker) end() {
	if w.page.valid() {
		w.page.end()
	} else {
		w.local.Store(0)
	}
}

func (w *worker) serve(reg *steps.Registry, r *protocol.Reader) int {
	m, err := r.Read()
	if err != nil {
		fmt.Fprintf(os.Stderr, "flow: worker: reading hello: %v\n", err)
		return 2
	}
	hello, ok := m.(*protocol.Hello)
	if !ok {
		fmt.Fprintf(os.Stderr, "flow: worker: first message is %s, want hello\n", m.Type())
		return 2
	}
	if n := runtime.GOMAXPROCS(0); !w.procsSet && os.Getenv("GOMAXPROCS") == "" && workerProcs(n, hello.Workers) != n {
		runtime.GOMAXPROCS(workerProcs(n, hello.Workers))
	}
	ready := &protocol.Ready{Version: protocol.Version, PID: os.Getpid()}
	if hello.Version != protocol.Version {
		err = fmt.Errorf("the parent speaks protocol version %d, this worker %d: the flow binary changed during the run", hello.Version, protocol.Version)
	} else {
		var b steps.Built
		b, err = stagehost.Build(hello, reg, os.Stderr)
		w.step, w.closer = b.Step, b
	}
	if err != nil {
		ready.Err = &protocol.ErrorInfo{Message: err.Error(), Class: "error", Permanent: true}
	}
	if werr := w.out.Write(ready); werr != nil || err != nil {
		return 1
	}
	w.out.Compact() // the parent speaks this version: results go compact

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	go w.onTerm(sigs)
	if hello.Heartbeat > 0 {
		go w.heartbeat(hello.Heartbeat)
	}
	go w.read(r)
	code := w.run()
	// The lifecycle's close: what the step holds (connections, files) is
	// released before the worker exits.
	if w.closer != nil {
		_ = w.closer.Close()
	}
	return code
}

// read moves frames from the parent into the queue. Reading never waits
// for the step, so Cancel reaches a running item.
func (w *worker) read(r *protocol.Reader) {
	for {
		m, err := r.Read()
		w.mu.Lock()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				fmt.Fprintf(os.Stderr, "flow: worker: reading from the parent: %v\n", err)
			}
			w.closing = true
			w.cond.Broadcast()
			w.mu.Unlock()
			return
		}
		switch m := m.(type) {
		case *protocol.Items:
			w.queue = append(w.queue, *m...)
			w.cond.Broadcast()
		case *protocol.Cancel:
			for _, id := range *m {
				w.cancelLocked(id)
			}
		case *protocol.Shutdown:
			w.closing = true
			w.cond.Broadcast()
		}
		w.mu.Unlock()
	}
}

// cancelLocked withdraws item id: if it waits, it is marked for run to
// skip; if it runs, its context is cancelled. run, between items without
// the lock, may be starting it or ending it right now: see attention and
// cancelling for why one of the two is always seen.
func (w *worker) cancelLocked(id uint64) {
	if w.holds(id) {
		w.cancelled[id] = true
		w.attention.Store(true)
	}
	w.cancelling.Store(id)
	if w.runningID() == id && w.cancelRunning != nil {
		if w.crossing != nil {
			w.crossing() // a test holds the reader here, the item may end
		}
		w.cancelRunning()
	}
	w.cancelling.Store(0)
}

// holds reports whether id is in the queue or in run's batch, where it may
// have started or ended already: run forgets the marks of its batch with it.
func (w *worker) holds(id uint64) bool {
	for _, it := range w.queue {
		if it.ID == id {
			return true
		}
	}
	for i := range w.batch {
		if w.batch[i].ID == id { // only the ID: run clears values meanwhile
			return true
		}
	}
	return false
}

// Results wait in the worker until one of these is reached, or until the
// queue runs dry: few frames for cheap items, no wait for slow ones.
const (
	flushCount = 2048
	flushDelay = 2 * time.Millisecond
)

// clockEvery is how many items may run between readings of the clock, at
// per per item: reading it costs as much as a trivial item (more on some
// virtual machines), and a result then waits at most about flushDelay/16
// longer for its frame.
func clockEvery(per time.Duration) int {
	if per <= 0 {
		return 64
	}
	return int(max(1, min(flushDelay/16/per, 64)))
}

// run executes the queue one item at a time, in order. The order is part
// of the protocol: it tells the parent which item a dead worker was running.
// It takes what the queue holds as a batch and runs it without the lock.
func (w *worker) run() int {
	var (
		pending []protocol.Result
		// arena holds the encoded values of pending: one buffer per frame
		// instead of one allocation per result.
		arena []byte
		busy  time.Duration // running the pending items
		first time.Time     // about when the oldest pending result was ready
		last  time.Time     // the last reading of the clock; zero while idle
		since int           // items run since last
		every = 1           // items between readings
		done  int64
	)
	// tick reads the clock, counting the time since the last reading as
	// busy, and learns how often to read it.
	tick := func() time.Time {
		now := time.Now()
		if !last.IsZero() && since > 0 {
			d := now.Sub(last)
			busy += d
			every = clockEvery(d / time.Duration(since))
		}
		last, since = now, 0
		return now
	}
	flush := func() bool {
		if len(pending) == 0 {
			return true
		}
		tick()
		w.mu.Lock()
		w.done = done // for heartbeats
		w.mu.Unlock()
		err := w.out.Write(&protocol.Results{Busy: busy, Results: pending})
		clear(pending)
		pending, busy = pending[:0], 0
		arena = arena[:0]
		if cap(arena) > 1<<20 {
			arena = nil // keep a modest buffer; drop one a huge result grew
		}
		// Writing is not running items: busy and the next frame's 2 ms
		// count from here.
		last = time.Now()
		return err == nil
	}
	// One context serves item after item until a Cancel (or SIGTERM) ends
	// it: a new one per item would cost as much as a trivial item.
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel() }()
	w.mu.Lock()
	w.cancelRunning = cancel
	for {
		for len(w.queue) == 0 && !w.closing {
			if len(pending) > 0 {
				w.mu.Unlock()
				if !flush() {
					return 1
				}
				w.mu.Lock()
				continue
			}
			last = time.Time{} // waiting is not busy
			w.cond.Wait()
		}
		if len(w.queue) == 0 || w.terminated {
			term := w.terminated
			w.mu.Unlock()
			flush()
			if term {
				return 128 + int(syscall.SIGTERM)
			}
			return 0
		}
		// Take the queue; the reader fills the array of the batch before.
		batch := w.queue
		w.batch = batch
		w.queue, w.spare = w.spare[:0], nil
		if ctx.Err() != nil {
			ctx, cancel = context.WithCancel(context.Background())
			w.cancelRunning = cancel
		}
		w.mu.Unlock()
		for i := range batch {
			it := &batch[i]
			// A mark or SIGTERM that came before the item is seen here
			// as it was under the lock; one crossing its start is seen
			// after begin, or the reader sees the item running.
			skip, stop := false, false
			if w.attention.Load() {
				skip, stop = w.check(it.ID)
			}
			if !skip && !stop {
				w.begin(it.ID)
				if w.attention.Load() {
					if skip, stop = w.check(it.ID); skip || stop {
						w.end()
					}
				}
			}
			if stop {
				break
			}
			var res protocol.Result
			if skip {
				res = protocol.Result{ID: it.ID, Err: &protocol.ErrorInfo{Message: "cancelled by the parent before it started", Class: "cancelled"}}
			} else {
				if last.IsZero() {
					tick() // a run of items starts
				}
				v, err := w.do(ctx, *it)
				w.end()
				res, arena = result(arena, it.ID, v, err)
				// Let the item's memory go now, not with the batch: the
				// reader only looks at IDs.
				it.Value, it.Raw = nil, nil
				since++
				done++
			}
			if w.cancelling.Load() != 0 || ctx.Err() != nil {
				// A cancel meant for the item that ended may be under
				// way: let it finish, and give the next a fresh context.
				w.mu.Lock()
				if ctx.Err() != nil {
					cancel()
					ctx, cancel = context.WithCancel(context.Background())
					w.cancelRunning = cancel
				}
				w.mu.Unlock()
			}
			if len(pending) == 0 {
				first = last
			}
			pending = append(pending, res)
			var now time.Time
			if since >= every {
				now = tick()
			}
			if len(pending) >= flushCount || !now.IsZero() && now.Sub(first) >= flushDelay {
				if !flush() {
					return 1
				}
			}
		}
		w.mu.Lock()
		// Marks for items of the batch that came once they had started
		// are of no use any more.
		if len(w.cancelled) > 0 {
			for _, it := range batch {
				delete(w.cancelled, it.ID)
			}
			w.attention.Store(len(w.cancelled) > 0 || w.terminated)
		}
		clear(batch)
		w.batch, w.spare = nil, batch[:0]
	}
}

// check is the slow path of attention, under the lock, for item id about
// to start: skip it (a Cancel withdrew it), or stop (SIGTERM): the item
// must not start.
func (w *worker) check(id uint64) (skip, stop bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.terminated {
		return false, true
	}
	if w.cancelled[id] {
		delete(w.cancelled, id)
		w.attention.Store(len(w.cancelled) > 0)
		return true, false
	}
	return false, false
}

// result is stagehost.Result with a success's value appended to arena,
// which the frame of pending results is written from.
func result(arena []byte, id uint64, v any, err error) (protocol.Result, []byte) {
	if err == nil {
		start := len(arena)
		if b, encErr := protocol.AppendValue(arena, v); encErr == nil {
			return protocol.Result{ID: id, Raw: b[start:len(b):len(b)]}, b
		}
	}
	return stagehost.Result(id, v, err), arena
}

// do runs the step on one item. A panic is the item's failure, not the
// worker's: the step's deferred cleanups have run, and the worker goes on.
func (w *worker) do(ctx context.Context, it protocol.Item) (v any, err error) {
	defer func() {
		if r := recover(); r != nil {
			stack := string(debug.Stack())
			fmt.Fprintf(os.Stderr, "panic running item %d: %v\n%s", it.Index, r, stack)
			err = &steps.Error{Err: fmt.Errorf("the step panicked: %v", r), Class: "crash"}
		}
	}()
	return w.step.Do(ctx, steps.Input{Index: it.Index, Item: it.Value})
}

func (w *worker) heartbeat(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for range t.C {
		w.mu.Lock()
		hb := &protocol.Heartbeat{Done: w.done, Running: w.runningID()}
		w.mu.Unlock()
		if w.out.Write(hb) != nil {
			return
		}
	}
}

// termGrace is how long a worker told to stop (SIGTERM: the parent killing
// a timed-out item, or the parent's death) waits for the running step to
// honour its cancelled context, e.g. for exec to stop its process group.
const termGrace = time.Second

// onTerm stops the running item and exits, within termGrace whatever the
// step does.
func (w *worker) onTerm(sigs <-chan os.Signal) {
	<-sigs
	w.terminate()
	time.Sleep(termGrace)
	os.Exit(128 + int(syscall.SIGTERM))
}

// terminate cancels the running item and drops the rest: no other starts,
// and run returns once the running one is done.
func (w *worker) terminate() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.terminated, w.closing = true, true
	w.attention.Store(true)
	w.queue = nil
	if w.cancelRunning != nil {
		w.cancelRunning()
	}
	w.cond.Broadcast()
}

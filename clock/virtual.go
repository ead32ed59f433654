package clock

import (
	"bytes"
	"container/heap"
	"context"
	"reflect"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"time"
)

// Virtual is a clock on which time moves only when the program waits for
// it: when every goroutine of the process is blocked and at least one of
// them waits on this clock (SleepUntil, AfterFunc, a context of
// WithTimeoutCause), the clock jumps to the earliest wait and releases it,
// then waits for the program to block again before it releases the next
// one. A run on it takes the real time of its computing, not of its waits,
// and the same waits give the same times on every run and every machine.
//
// # What is deterministic
//
// Every time the program reads (Now) is the instant of the wait that
// released it, and waits are released one at a time in time order; waits
// due at the same instant are released in the order they were registered
// (a timeout set before a sleep of the same length fires first). So the
// virtual time of every attempt, backoff, Retry-After, timeout, deadline
// and rate-limit slot is exact, and so is everything decided by it: which
// sleep outlasts which timeout, which items a deadline cancels, which
// attempt a retry budget ends on.
//
// What stays up to the Go scheduler, as in a real run, is the order of
// goroutines that run at the same instant without waiting on the clock
// between them: several workers that start at once race for a shared rate
// or concurrency limit, so which item gets the first slot may vary (the
// slots' times do not). One worker (workers: 1), or keys that do not
// collide, take the race away.
//
// # What takes no virtual time
//
// Computing takes no virtual time: a goroutine that runs (CPU work, a
// system call such as reading a file) holds the clock still until it
// blocks, however long it takes in real time. A goroutine blocked on
// something other than this clock (a channel, a lock, the network,
// time.Sleep, a timer of package time, os.Process.Wait for a child
// process) counts as idle: the clock may jump while it waits. Code that
// must hold the clock while it waits for the outside world (a reply over
// a socket, a child process doing the work) says so with Busy. Work that
// happens in other processes (mode: process and mode: cluster) is not on
// this clock: it would be an outside event, so the engine refuses a
// Virtual clock for a stage that does not run in threads.
//
// Busy and Hold hold the clock still: a wait on the clock while it is held
// does not end until it is released (a mocked latency sleeps outside any
// Hold).
//
// The clock reads whether the process is idle from the goroutines' states
// in a dump of all stacks (runtime.Stack, which stops the world for a
// consistent moment): blocked on a channel, a select, a lock, a condition,
// a wait group, a sleep of package time, the network or a child's exit
// is idle; running, ready to run, in any other system call, or waiting on
// the runtime's own business (a garbage collection) is not. The
// scheduler's counts (runtime/metrics) spare most dumps, not the one
// before each release: a dump stops the world for a time that grows with
// the number of goroutines, so a process with a hundred thousand of them
// pays it at every wait released. No synctest bubble and no hook into the
// runtime: it works in a command (flow test), not only in go test.
//
// If nothing waits on the clock, it does nothing: a program blocked for
// another reason stays blocked, as it would on the wall clock. If the
// program never blocks, the clock never moves.
//
// "Every goroutine of the process" is meant: the clock cannot tell a run's
// goroutines from others, so anything else running in the process (another
// test, a progress display) only delays its jumps. Several Virtual clocks
// in one process do not hold each other up.
type Virtual struct {
	mu      sync.Mutex
	now     time.Time
	seq     uint64
	waits   waitHeap
	busy    int
	gen     uint64 // changes with every wait added, removed or released
	ops     uint64 // calls of the clock: a program that calls it is busy
	driving bool
	buf     []byte // the driver's goroutine dump, dropped when it stops
	sched   []metrics.Sample
	lost    uint64 // dumps thrown away for want of room: each stopped the world
}

// NewVirtual returns a virtual clock whose time starts at start.
func NewVirtual(start time.Time) *Virtual {
	return &Virtual{now: start}
}

// Now returns the clock's time.
func (v *Virtual) Now() time.Time {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.ops++
	return v.now
}

// SleepUntil waits until the clock reaches t or ctx is done.
func (v *Virtual) SleepUntil(ctx context.Context, t time.Time) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	v.mu.Lock()
	v.ops++
	if !t.After(v.now) {
		v.mu.Unlock()
		return nil
	}
	w := &wait{t: t, ch: make(chan struct{})}
	v.add(w)
	v.mu.Unlock()
	select {
	case <-w.ch:
		return nil
	case <-ctx.Done():
		if v.remove(w) {
			return context.Cause(ctx)
		}
		// Released at the same moment: the time did come.
		<-w.ch
		return nil
	}
}

// AfterFunc calls f in its own goroutine once the clock has moved d past
// now.
func (v *Virtual) AfterFunc(d time.Duration, f func()) Timer {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.ops++
	w := &wait{t: v.now.Add(d), f: f}
	if d <= 0 {
		go f()
		w.index = -1
		return &virtualTimer{v, w}
	}
	v.add(w)
	return &virtualTimer{v, w}
}

// Busy holds the clock still until release is called: for work the clock
// cannot see, such as a wait on the network that must take no virtual
// time. release may be called more than once.
func (v *Virtual) Busy() (release func()) {
	v.mu.Lock()
	v.busy++
	v.gen++
	v.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			v.mu.Lock()
			v.busy--
			v.gen++
			v.mu.Unlock()
		})
	}
}

// Hold holds the clock of ctx still, if it is one that can be held (a
// Virtual), until release is called; on Real it does nothing. A kind
// whose wait the clock cannot see calls it around that wait (a reply
// over a real socket in a test, say): the wait then takes no virtual
// time, and no virtual timeout can end it.
func Hold(ctx context.Context) (release func()) {
	if h, ok := From(ctx).(interface{ Busy() func() }); ok {
		return h.Busy()
	}
	return func() {}
}

// Pending returns the number of waits not yet released.
func (v *Virtual) Pending() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.waits)
}

type virtualTimer struct {
	v *Virtual
	w *wait
}

func (t *virtualTimer) Stop() bool { return t.v.remove(t.w) }

// wait is one waiter: a sleeper (ch) or a function to call (f).
type wait struct {
	t     time.Time
	seq   uint64
	ch    chan struct{}
	f     func()
	index int // in the heap; -1 once released or removed
}

// add registers w; v.mu is held.
func (v *Virtual) add(w *wait) {
	v.seq++
	w.seq = v.seq
	heap.Push(&v.waits, w)
	v.gen++
	if !v.driving {
		v.driving = true
		go v.drive()
	}
}

// remove unregisters w and reports whether it was still pending.
func (v *Virtual) remove(w *wait) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if w.index < 0 {
		return false
	}
	heap.Remove(&v.waits, w.index)
	v.gen++
	return true
}

// drive releases waits one at a time while there are any, each once the
// process is idle.
func (v *Virtual) drive() {
	idleRounds := 0
	var lastOps uint64
	for {
		v.mu.Lock()
		if len(v.waits) == 0 {
			v.driving = false
			// A dump of many goroutines is big; the next driver
			// sizes its own.
			v.buf = nil
			v.mu.Unlock()
			return
		}
		gen, ops, busy := v.gen, v.ops, v.busy > 0
		v.mu.Unlock()
		// A program that used the clock since the last look is not idle:
		// no need to stop the world for a dump to know it.
		busy = busy || ops != lastOps
		lastOps = ops
		if !busy && !v.schedBusy() && v.quiescent() {
			v.mu.Lock()
			// Nothing changed since the dump: release the earliest.
			if v.gen == gen && v.ops == ops && v.busy == 0 && len(v.waits) > 0 {
				w := heap.Pop(&v.waits).(*wait)
				v.gen++
				if w.t.After(v.now) {
					v.now = w.t
				}
				if w.ch != nil {
					close(w.ch)
				} else {
					go w.f()
				}
			}
			v.mu.Unlock()
			idleRounds = 0
			continue
		}
		pause(idleRounds)
		idleRounds++
	}
}

// pause lets the program run before the next look: a few yields first
// (what was just released usually blocks again within them), then sleeps
// growing to 2 ms, so a long computation is looked at rarely.
func pause(round int) {
	if round < 4 {
		runtime.Gosched()
		return
	}
	d := 20 * time.Microsecond << min(round-4, 7)
	time.Sleep(min(d, 2*time.Millisecond))
}

// schedBusy tells from the scheduler's counts, cheaply and roughly,
// whether some goroutine other than the caller runs or is ready to: then
// there is no need to stop the world for a dump to know the program is
// not idle. (The counts cannot tell the rest: a goroutine blocked for good
// from one in a system call.)
func (v *Virtual) schedBusy() bool {
	if v.sched == nil {
		v.sched = []metrics.Sample{{Name: "/sched/goroutines/running:goroutines"}, {Name: "/sched/goroutines/runnable:goroutines"},
			{Name: "/sched/goroutines:goroutines"}}
	}
	metrics.Read(v.sched)
	running, runnable := v.sched[0].Value, v.sched[1].Value
	if running.Kind() != metrics.KindUint64 || runnable.Kind() != metrics.KindUint64 {
		return false // not in this Go: the dump decides alone
	}
	return running.Uint64() > 1 || runnable.Uint64() > 0
}

// quiescent tells whether every goroutine of the process but the caller is
// blocked on something only another goroutine, a timer or the outside
// world can end. It reads the goroutines' states from a dump of all stacks
// (runtime.Stack stops the world for it, so the states are of one moment).
func (v *Virtual) quiescent() bool {
	// A dump too small for all goroutines is thrown away, and each one
	// stops the world: size the buffer for the goroutines there are, at
	// about 1 KiB each (a blocked goroutine's record is a few hundred
	// bytes), so that one dump usually does.
	want := 64 << 10
	if v.sched != nil && v.sched[2].Value.Kind() == metrics.KindUint64 {
		want = max(want, int(min(v.sched[2].Value.Uint64(), 1<<24))<<10)
	}
	if len(v.buf) < want {
		v.buf = make([]byte, want)
	}
	var n int
	for {
		n = runtime.Stack(v.buf, true)
		if n < len(v.buf) {
			break
		}
		v.lost++
		v.buf = make([]byte, 2*len(v.buf))
	}
	return allBlocked(v.buf[:n])
}

// allBlocked reads a dump of all goroutines (runtime.Stack(buf, true)),
// whose first is the caller's, and tells whether all others are blocked.
func allBlocked(dump []byte) bool {
	first := true
	for len(dump) > 0 {
		var g []byte
		if i := bytes.Index(dump, []byte("\n\n")); i >= 0 {
			g, dump = dump[:i], dump[i+2:]
		} else {
			g, dump = dump, nil
		}
		if first {
			first = false
			continue
		}
		if !goroutineIdle(g) {
			return false
		}
	}
	return true
}

// goroutineIdle tells whether one goroutine of a dump is blocked, from its
// header ("goroutine 7 [chan receive, 2 minutes]:") and its frames.
func goroutineIdle(g []byte) bool {
	header, _, _ := bytes.Cut(g, []byte("\n"))
	if !bytes.HasPrefix(header, []byte("goroutine ")) {
		return true // not a goroutine record (a trailing note of the dump)
	}
	open := bytes.IndexByte(header, '[')
	end := bytes.LastIndexByte(header, ']')
	if open < 0 || end < open {
		return false
	}
	state, _, _ := strings.Cut(string(header[open+1:end]), ",")
	// Marks the runtime adds to the wait reason before the first comma:
	// a goroutine being scanned by the collector, blocked for good (the
	// leak-detecting collector), or blocked inside a synctest bubble is
	// still blocked as its reason says.
	for _, mark := range []string{" (durable)", " (scan)", " (leaked)"} { // printed in the reverse order
		state = strings.TrimSuffix(state, mark)
	}
	// Another virtual clock's driver between two looks: it only ever
	// releases waits, which shows as goroutines made runnable.
	if bytes.Contains(g, driveFrame) {
		return true
	}
	switch state {
	case "syscall":
		// os/signal's receiver sits in a system call for the life of
		// the process, and os.Process.Wait (waitid or wait4) for the
		// life of a child: both wait for an outside event, as a read
		// from the network does. Any other system call is work in
		// progress.
		return bytes.Contains(g, []byte("os/signal.signal_recv")) || waitsForChild(g)
	case "semacquire":
		// A semaphore of package sync or of a file's lock is held by
		// another goroutine; the runtime's own (a garbage collection
		// starting, the world being stopped for this very dump) is
		// let go of by the runtime: work in progress. The runtime's
		// frames are not shown, so the first frame tells.
		_, rest, _ := bytes.Cut(g, []byte("\n"))
		return bytes.HasPrefix(rest, []byte("sync.")) || bytes.HasPrefix(rest, []byte("internal/sync.")) ||
			bytes.HasPrefix(rest, []byte("internal/poll."))
	}
	return blockedStates[state]
}

// waitsForChild tells whether a goroutine in a system call is in
// os.Process.Wait's wait for a child to end (Go 1.23 and later block in
// waitid on the child's pidfd; without pidfds, in waitid then wait4).
func waitsForChild(g []byte) bool {
	return (bytes.Contains(g, []byte("internal/syscall/unix.Waitid(")) || bytes.Contains(g, []byte("syscall.Wait4("))) &&
		(bytes.Contains(g, []byte("os.(*Process).pidfdWait(")) || bytes.Contains(g, []byte("os.(*Process).pidWait(")))
}

// driveFrame names Virtual.drive in a stack dump.
var driveFrame []byte

func init() {
	driveFrame = []byte(runtime.FuncForPC(reflect.ValueOf((*Virtual).drive).Pointer()).Name() + "(")
}

// blockedStates are the wait reasons of goroutines that cannot go on
// without another goroutine, a timer or the outside world (see
// runtime.waitReasonStrings). Any other state (running, runnable,
// preempted, a GC assist, a system call) is work in progress: the clock
// waits for it, so a state a later Go adds only delays a jump.
var blockedStates = map[string]bool{
	"chan receive": true, "chan send": true, "select": true,
	"chan receive (nil chan)": true, "chan send (nil chan)": true, "select (no cases)": true,
	"sync.Mutex.Lock": true, "sync.RWMutex.RLock": true, "sync.RWMutex.Lock": true,
	"sync.Cond.Wait": true, "sync.WaitGroup.Wait": true,
	"sleep": true, "IO wait": true,
	// A goroutine of iter.Pull between two calls of next.
	"coroutine": true,
	// Waiting for the goroutines of a synctest bubble to block or end.
	"synctest.Run": true, "synctest.Wait": true,
	// The runtime's own helpers (finalizers, GC workers) never show:
	// runtime.Stack dumps at traceback level 1 whatever GOTRACEBACK says.
}

// waitHeap orders waits by time, then by registration.
type waitHeap []*wait

func (h waitHeap) Len() int { return len(h) }
func (h waitHeap) Less(i, j int) bool {
	if !h[i].t.Equal(h[j].t) {
		return h[i].t.Before(h[j].t)
	}
	return h[i].seq < h[j].seq
}
func (h waitHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *waitHeap) Push(x any) {
	w := x.(*wait)
	w.index = len(*h)
	*h = append(*h, w)
}
func (h *waitHeap) Pop() any {
	old := *h
	w := old[len(old)-1]
	old[len(old)-1] = nil
	w.index = -1
	*h = old[:len(old)-1]
	return w
}

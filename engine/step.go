package engine

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/tmpl"
)

// The step stage by job: this file holds its state and its life (configure,
// exec); dispatch.go hands items to workers (the shared queue, or one per
// key); attempts.go runs one item's attempts with limits, timeout and
// retries; collect.go accounts results, applies the policies (policy.go)
// and hands results on, reordering for `order: input`.

// A step stage runs `workers` goroutines over its input. Workers claim
// chunks of consecutive items from a shared queue (a chunk is one item for
// slow steps and up to maxChunk for trivial ones, sized from the measured
// latency), run them, and pass the results to one collector goroutine, which
// alone accounts, applies the policies and hands results on, in input order
// (through a bounded reorder window) or in completion order. With `order:
// key`, a dispatcher goroutine releases at most one item per key at a time.
type stepStage struct {
	*stage
	runner Runner
	// batch is the runner when it takes the items' first attempts many
	// per call (see runBatch); nil when items go to Do one by one.
	batch   BatchRunner
	workers int
	ordered bool
	keyed   bool
	key     *tmpl.T
	timeout time.Duration
	retry   *spec.Retry
	policy  errorPolicy
	done    completion

	// The work queue (order: input and completion), guarded by mu.
	mu      sync.Mutex
	cond    *sync.Cond // workers: work arrived, window room, stop
	room    *sync.Cond // feeder: queue room, stop
	queue   []*batch
	pos     int // next record in queue[0]
	inDone  bool
	seq     int64        // sequence number of the next item claimed
	waiters atomic.Int32 // workers waiting for window room
	emitted atomic.Int64 // items below this sequence number left the window
	window  int64

	// order: key
	work    chan *chunk
	keyDone chan string

	results chan *chunk
	// Chunks the collector is done with, for the next claims: a free
	// list rather than a sync.Pool, which drops them at every collection
	// (a batch runner's chunks hold thousands of entries).
	_      cacheLinePad
	freeMu sync.Mutex
	free   []*chunk
	_      cacheLinePad
	// Each worker's chunk in progress, and the collector's wake-up call
	// when it is idle and a worker finished an item of one. Workers read
	// idle after every item: it has a cache line of its own, or the
	// writes to the fields around it (the free list, the queue's lock)
	// would make each read a miss.
	idle  atomic.Bool
	_     cacheLinePad
	slots []atomic.Pointer[chunk]
	wake  chan struct{}

	// Collector state.
	stopNext *runStop // a stop decided, made once what came before is handed on
	// stopAt is the sequence number of the item whose failure stops an
	// `order: input` stage (-1: none): the stop is made once every item
	// before it was handed on. draining stops new claims meanwhile.
	stopAt   int64
	draining atomic.Bool
	halted   bool  // stopped after a failure: later successes are cancelled
	next     int64 // order: input: the sequence number to hand on next
	// A run of items answered by one worker, not yet in ByWorker.
	byName  string
	byN     int64
	waiting map[int64]*chunk
}

const (
	maxChunk = 32
	// chunkTarget is the work one claim should hold: long enough to pay
	// for the claim, short enough that a chunk never holds back much.
	chunkTarget = 20 * time.Microsecond
)

// Outcomes of one item in a stage.
const (
	outOK uint8 = iota
	outFailed
	outCancelled
	outFiltered
	outLate // succeeded after the completion policy was met: cancelled
)

type entry struct {
	in       steps.Input
	res      any
	err      error
	lat      time.Duration
	tries    tries
	outcome  uint8
	timedOut bool
	timed    bool // lat was measured (see workerState.sample)
}

// chunk is a run of items with consecutive sequence numbers (seq < 0: items
// accounted out of order, such as those cancelled while draining).
type chunk struct {
	seq  int64
	key  string
	ents []entry
	// done counts the entries the worker finished, published as it goes
	// so that the collector can hand on a chunk's first results while a
	// slow item holds up the rest.
	done atomic.Int32
	// The collector's cursors: entries decided (policies applied) and
	// taken (accounted and handed on).
	decided, taken int
}

func (st *stepStage) configure(named map[string]*limit) {
	s := st.spec
	st.ordered = s.Order == spec.OrderInput
	st.keyed = s.Order == spec.OrderKey && s.Key != nil
	st.key = s.Key
	st.timeout = s.Timeout
	st.retry = s.Retry
	st.policy = newErrorPolicy(s, st.r.red)
	st.stopAt = -1
	st.done = completion{first: s.Complete.First}
	st.lim = stageLimiter(s, named, st.r.clk)
	// Limits and a per-attempt timeout act on each attempt as it starts,
	// and a batch hands its items over together; a batch's results reach
	// the collector in input order, which order: completion and complete:
	// first cannot wait for (a success behind a slow item must count at
	// once). Such stages go one by one.
	if br, ok := st.runner.(BatchRunner); ok && st.timeout <= 0 && st.lim == nil && st.ordered && st.done.first == 0 {
		st.batch = br
		st.workers = batchCallers(st.rep.Workers)
	}
	st.cond = sync.NewCond(&st.mu)
	st.room = sync.NewCond(&st.mu)
	st.window = int64(st.r.cfg.window)
	if st.window <= 0 {
		st.window = int64(reorderWindow(st.workers))
		if st.batch != nil {
			// Every caller's batch fits in the window, or they would
			// take turns instead of keeping the runner's workers fed.
			st.window = max(st.window, int64(st.workers*batchCap(st.workers)))
		}
	}
	st.results = make(chan *chunk, st.workers+1)
	st.wake = make(chan struct{}, 1)
}

// reorderWindow is how many items of an `order: input` stage may be started
// past the oldest unfinished one: a slow head item stops new starts once the
// window is full, so buffering stays bounded.
func reorderWindow(workers int) int {
	return max(1024, 16*workers)
}

func (st *stepStage) abort(error) { st.runner.Close() }

// cacheLinePad keeps the fields on either side of it on different cache
// lines (64 bytes on amd64 and arm64; 128 covers adjacent-line prefetch).
type cacheLinePad [128]byte

// maxFree bounds the free list; more chunks than that in flight at once
// are garbage once done.
const maxFree = 64

func (st *stepStage) getChunk(n int) *chunk {
	var c *chunk
	st.freeMu.Lock()
	if k := len(st.free); k > 0 {
		c = st.free[k-1]
		st.free[k-1] = nil
		st.free = st.free[:k-1]
	}
	st.freeMu.Unlock()
	if c == nil {
		c = &chunk{ents: make([]entry, 0, max(n, maxChunk))}
	}
	if cap(c.ents) < n {
		c.ents = make([]entry, n, max(n, maxChunk))
	}
	c.ents = c.ents[:n]
	c.decided, c.taken = 0, 0
	c.done.Store(0)
	return c
}

func (st *stepStage) freeChunk(c *chunk) {
	clear(c.ents)
	c.ents = c.ents[:0]
	c.key = ""
	st.freeMu.Lock()
	if len(st.free) < maxFree {
		st.free = append(st.free, c)
	}
	st.freeMu.Unlock()
}

func (st *stepStage) exec() {
	stopWake := context.AfterFunc(st.ctx, func() {
		st.mu.Lock()
		st.cond.Broadcast()
		st.room.Broadcast()
		st.mu.Unlock()
	})
	defer stopWake()
	var wg sync.WaitGroup
	if st.keyed {
		st.work = make(chan *chunk)
		st.keyDone = make(chan string, st.workers)
		wg.Add(1)
		go func() { defer wg.Done(); st.dispatch() }()
	} else {
		wg.Add(1)
		go func() { defer wg.Done(); st.feed() }()
	}
	st.slots = make([]atomic.Pointer[chunk], st.workers)
	for i := range st.workers {
		wg.Add(1)
		go func() { defer wg.Done(); st.worker(i, &st.slots[i]) }()
	}
	go func() { wg.Wait(); close(st.results) }()
	st.collect()
	if st.stopAt >= 0 && st.stopNext != nil && st.r.stopReason() == nil {
		st.r.stopRun(st.stopNext) // the items before it never all came back
	}
	if d := st.done; d.first > 0 && !d.met && st.policy.failed > 0 && st.r.stopReason() == nil {
		// wait(FIRST_COMPLETED) then .result() raises when what completed
		// failed: no success is a failure, not an empty success.
		st.r.stopRun(&runStop{status: report.StatusFailed, msg: fmt.Sprintf("stage %q: complete: first wanted %d success(es) and got %d; %d items failed (see the failures)",
			st.name, d.first, d.successes, st.policy.failed)})
	}
	if err := st.runner.Close(); err != nil && st.r.stopReason() == nil {
		st.r.stopRun(&runStop{status: report.StatusFailed, msg: fmt.Sprintf("stage %q: closing: %v", st.name, err)})
	}
}

package engine

import (
	"sync"
	"sync/atomic"
	"time"
)

// Items of a stage whose runner is a BatchRunner go to it many per call. A
// worker goroutine claims a chunk (sized so that one call covers about
// batchTarget of the runner's throughput, up to maxBatch items), makes the
// first attempt of all its items with one DoBatch, and publishes the
// chunk's finished prefix as answers arrive, so the collector hands results
// on while the rest still run. A failed item is settled by the same retry
// policy as anywhere (again), and its further attempts go through Do from
// this goroutine: retries are the exception, the hand-over is the hot path.

const (
	// maxBatch bounds the items of one DoBatch call.
	maxBatch = 2048
	// batchWindow is the most items all callers' chunks hold together
	// before each caller's bound (batchCap) drops from maxBatch towards
	// minBatchCap: with many workers, callers x maxBatch items in flight
	// would hold memory for no gain.
	batchWindow = 8192
	minBatchCap = 512
	// firstBatch is the size of a caller's first calls, before any was
	// timed: a few slow items claimed early cost nothing (results are
	// handed on as they come), a hundred calls of one item would.
	firstBatch = 32
	// batchTarget is about how long one call should take to be answered:
	// long enough that the hand-over costs nothing per item, short enough
	// that a chunk does not hold results back.
	batchTarget = 2 * time.Millisecond
)

// batchCallers is how many goroutines call DoBatch: two per worker of the
// runner, so that each worker has a batch queued while the answers of
// another are collected.
func batchCallers(workers int) int { return 2 * max(1, workers) }

// batchCap is the most items one of callers claims at once.
func batchCap(callers int) int {
	return max(minBatchCap, min(maxBatch, batchWindow/max(1, callers)))
}

// chunkSize is how many items w claims at once. For a batch runner it
// follows the runner's throughput, starting from firstBatch items: w.ewma
// is then the time per item of a call shared by the callers (see
// runBatch).
func (st *stepStage) chunkSize(w *workerState) int {
	if st.batch == nil {
		return w.chunkSize()
	}
	if w.ewma <= 0 {
		return firstBatch
	}
	return max(1, min(int(float64(batchTarget)/w.ewma), batchCap(st.workers)))
}

// queueCap is how many input batches the feeder queues for the workers:
// enough for a whole chunk of a batch runner.
func (st *stepStage) queueCap() int {
	if st.batch != nil {
		return 1 + (batchCap(st.workers)+batchSize-1)/batchSize
	}
	return 2
}

// batchCall is one worker goroutine's DoBatch state, reused from chunk to
// chunk.
type batchCall struct {
	st    *stepStage
	w     *workerState
	c     *chunk
	items []BatchItem
	idx   []int32 // items[k] is c.ents[idx[k]]
	errs  []error // items[k]'s failure, settled once the call returned
	timed bool    // every attempt is timed (an event consumer wants them)
	calls int
	start time.Time
	// done and run are b.answer and b.answerRun, made once: a method value
	// per call would allocate.
	done func(k int, v any, err error)
	run  func(as []BatchAnswer)
	runs RunsBatchRunner // st.batch, when it answers in runs

	mu   sync.Mutex
	fin  []bool // c.ents[i] is settled
	next int    // c.ents[:next] are settled and published in c.done
}

func (st *stepStage) batchWorker(w *workerState, slot *atomic.Pointer[chunk]) {
	b := &batchCall{st: st, w: w}
	b.done, b.run = b.answer, b.answerRun
	b.runs, _ = st.batch.(RunsBatchRunner)
	for {
		c := st.claim(w)
		if c == nil {
			return
		}
		slot.Store(c)
		st.runBatch(b, c)
		slot.Store(nil)
		st.results <- c
	}
}

// runBatch runs the items of c: filter, one DoBatch for their first
// attempts, then the retry policy for those that failed.
func (st *stepStage) runBatch(b *batchCall, c *chunk) {
	n := len(c.ents)
	b.c, b.next = c, 0
	b.items, b.idx = b.items[:0], b.idx[:0]
	b.fin = b.fin[:0]
	for range n {
		b.fin = append(b.fin, false)
	}
	for i := range c.ents {
		e := &c.ents[i]
		if st.ctx.Err() != nil {
			e.outcome = outCancelled
			b.fin[i] = true
			continue
		}
		if st.when != nil {
			keep, err := st.filter(st.scope(e.in))
			switch {
			case err != nil:
				e.outcome, e.err = outFailed, err
				b.fin[i] = true
				continue
			case !keep:
				e.outcome = outFiltered
				b.fin[i] = true
				continue
			}
		}
		e.tries.n = 1
		e.tries.last = Attempt{Worker: b.w.name}
		b.items = append(b.items, BatchItem{In: e.in, At: &e.tries.last})
		b.idx = append(b.idx, int32(i))
	}
	b.errs = b.errs[:0]
	for range b.items {
		b.errs = append(b.errs, nil)
	}
	clk := st.r.clk
	b.timed = st.r.ev != nil
	// One reading of the clock for the whole call: an attempt's start is
	// when its batch was handed over.
	b.start = clk.Now()
	if b.timed {
		for _, it := range b.items {
			it.At.Start = b.start
		}
	}
	b.mu.Lock()
	b.publish() // items settled before the call (filtered, cancelled)
	b.mu.Unlock()
	if len(b.items) > 0 {
		if b.runs != nil {
			b.runs.DoBatchRuns(st.ctx, b.items, b.done, b.run)
		} else {
			st.batch.DoBatch(st.ctx, b.items, b.done)
		}
		// The callers share the runner: a call's time over its items is
		// the time per item of all of them together, times their number.
		// The first call waits for the runner to start (worker
		// processes), which says nothing of the items.
		if b.calls++; b.calls > 1 {
			b.w.observe(clk.Now().Sub(b.start) / time.Duration(len(b.items)*st.workers))
		}
	}
	for k, err := range b.errs {
		if err == nil {
			continue
		}
		e := &c.ents[b.idx[k]]
		if st.again(e, &e.tries.last, 1, err, false) {
			st.attempts(b.w, e, nil, b.timed)
			if e.timed {
				e.lat = clk.Now().Sub(b.start)
			}
		}
	}
	clear(b.errs)
	b.c = nil
	c.done.Store(int32(n))
	st.wakeCollector()
}

// answer is the runner's done callback for items[k]; it runs on the
// runner's goroutines.
func (b *batchCall) answer(k int, v any, err error) {
	if !b.record(k, v, err) {
		return
	}
	i := int(b.idx[k])
	b.mu.Lock()
	b.fin[i] = true
	// As a thread worker does (see worker), answers are published every
	// publishEvery items or when the collector waits: a store per item
	// takes the cache line the collector reads, for each item.
	moved := false
	if (i+1)%publishEvery == 0 || b.st.idle.Load() {
		moved = b.publish()
	}
	b.mu.Unlock()
	if moved {
		b.st.wakeCollector()
	}
}

// answerRun is the runner's callback for a run of answers (DoBatchRuns):
// one lock and one publication for the run, which a frame of a worker
// process's answers makes hundreds of items long.
func (b *batchCall) answerRun(as []BatchAnswer) {
	settled := false
	for _, a := range as {
		if b.record(a.I, a.V, a.Err) {
			settled = true
		}
	}
	if !settled {
		return
	}
	b.mu.Lock()
	for _, a := range as {
		if a.Err == nil {
			b.fin[b.idx[a.I]] = true
		}
	}
	moved := b.publish()
	b.mu.Unlock()
	if moved {
		b.st.wakeCollector()
	}
}

// record keeps the answer to items[k] in its entry: true when that settles
// the item (it succeeded), false when the retry policy decides it once the
// call returned.
func (b *batchCall) record(k int, v any, err error) bool {
	e := &b.c.ents[b.idx[k]]
	// Without an event consumer one item in sampleEvery is timed, for the
	// latency percentiles: reading the clock costs as much as the item.
	if b.timed || k%sampleEvery == 0 {
		end := b.st.r.clk.Now()
		if b.timed {
			e.tries.last.End = end
		}
		e.lat, e.timed = end.Sub(b.start), true
	}
	if err != nil {
		// Not published: whether it is retried is decided once the call
		// returned, and the collector must not see it before.
		b.errs[k] = err
		return false
	}
	e.outcome, e.res = outOK, v
	return true
}

// publish moves c.done past the settled prefix of the chunk; b.mu held.
func (b *batchCall) publish() bool {
	n := b.next
	for n < len(b.fin) && b.fin[n] {
		n++
	}
	if n == b.next {
		return false
	}
	b.next = n
	b.c.done.Store(int32(n))
	return true
}

// wakeCollector tells an idle collector that a chunk in progress moved.
func (st *stepStage) wakeCollector() {
	if st.idle.Load() {
		select {
		case st.wake <- struct{}{}:
		default:
		}
	}
}

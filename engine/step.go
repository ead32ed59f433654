package engine

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/tmpl"
)

// A step stage runs `workers` goroutines over its input. Workers claim
// chunks of consecutive items from a shared queue (a chunk is one item for
// slow steps and up to maxChunk for trivial ones, sized from the measured
// latency), run them, and pass the results to one collector goroutine, which
// alone accounts, applies the policies and hands results on, in input order
// (through a bounded reorder window) or in completion order. With `order:
// key`, a dispatcher goroutine releases at most one item per key at a time.
type stepStage struct {
	*stage
	runner    Runner
	workers   int
	ordered   bool
	keyed     bool
	key       *tmpl.T
	timeout   time.Duration
	retry     *spec.Retry
	onError   string
	maxErrors int
	first     int

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

	results   chan *chunk
	chunkPool sync.Pool
	// Each worker's chunk in progress, and the collector's wake-up call
	// when it is idle and a worker finished an item of one.
	slots []atomic.Pointer[chunk]
	idle  atomic.Bool
	wake  chan struct{}

	// Collector state.
	successes int
	failCount int
	policyMet bool
	stopNext  *runStop // a stop decided, made once what came before is handed on
	next      int64    // order: input: the sequence number to hand on next
	waiting   map[int64]*chunk
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
	attempts int32
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
	st.ordered = s.Order == "input" || s.Order == ""
	st.keyed = s.Order == "key" && s.Key != nil
	if st.keyed {
		st.ordered = false
	}
	st.key = s.Key
	st.timeout = s.Timeout
	st.retry = s.Retry
	st.onError = s.OnError
	if st.onError == "" {
		st.onError = "fail"
	}
	st.maxErrors = s.MaxErrors
	st.first = s.Complete.First
	st.lim = stageLimiter(s, named, st.r.clk)
	st.cond = sync.NewCond(&st.mu)
	st.room = sync.NewCond(&st.mu)
	st.window = int64(st.r.cfg.window)
	if st.window <= 0 {
		st.window = int64(reorderWindow(st.workers))
	}
	st.results = make(chan *chunk, st.workers+1)
	st.wake = make(chan struct{}, 1)
	st.chunkPool.New = func() any { return &chunk{ents: make([]entry, 0, maxChunk)} }
}

// reorderWindow is how many items of an `order: input` stage may be started
// past the oldest unfinished one: a slow head item stops new starts once the
// window is full, so buffering stays bounded.
func reorderWindow(workers int) int {
	return max(1024, 16*workers)
}

func (st *stepStage) abort(error) { st.runner.Close() }

func (st *stepStage) getChunk(n int) *chunk {
	c := st.chunkPool.Get().(*chunk)
	c.ents = c.ents[:n]
	c.decided, c.taken = 0, 0
	c.done.Store(0)
	return c
}

func (st *stepStage) freeChunk(c *chunk) {
	clear(c.ents)
	c.ents = c.ents[:0]
	c.key = ""
	st.chunkPool.Put(c)
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
		go func() { defer wg.Done(); st.worker(&st.slots[i]) }()
	}
	go func() { wg.Wait(); close(st.results) }()
	st.collect()
	if err := st.runner.Close(); err != nil && st.r.stopReason() == nil {
		st.r.stopRun(&runStop{status: "failed", msg: fmt.Sprintf("stage %q: closing: %v", st.name, err)})
	}
}

// feed moves input batches into the work queue, at most two at a time.
func (st *stepStage) feed() {
	for {
		select {
		case b, ok := <-st.in:
			if !ok {
				st.mu.Lock()
				st.inDone = true
				st.cond.Broadcast()
				st.mu.Unlock()
				return
			}
			st.begin()
			st.mu.Lock()
			for len(st.queue) >= 2 && st.ctx.Err() == nil {
				st.room.Wait()
			}
			if st.ctx.Err() != nil {
				st.mu.Unlock()
				st.cancelBatch(b)
				continue
			}
			st.queue = append(st.queue, b)
			// Wake one worker; it wakes the next if work is left, so
			// idle workers are not all woken for one small batch.
			st.cond.Signal()
			st.mu.Unlock()
		case <-st.ctx.Done():
			st.mu.Lock()
			st.cond.Broadcast()
			st.mu.Unlock()
			for b := range st.in {
				st.cancelBatch(b)
			}
			st.mu.Lock()
			st.inDone = true
			st.cond.Broadcast()
			st.mu.Unlock()
			return
		}
	}
}

// cancelBatch sends the records of b to the collector as cancelled.
func (st *stepStage) cancelBatch(b *batch) {
	for i := 0; i < len(b.recs); i += maxChunk {
		n := min(maxChunk, len(b.recs)-i)
		c := st.getChunk(n)
		c.seq = -1
		for j := range n {
			r := b.recs[i+j]
			c.ents[j] = entry{in: steps.Input{Index: r.Index, Item: r.Item}, outcome: outCancelled}
		}
		st.results <- c
	}
	freeBatch(b)
}

type workerState struct {
	ewma float64 // nanoseconds per item, from the items timed
	n    uint32
	held held
}

// Reading the clock costs 100ns or more on some virtual machines, as much
// as a trivial step: fast items are timed one in sampleEvery, which is
// plenty for quantiles; items slower than alwaysTime are all timed.
const (
	sampleEvery = 16
	alwaysTime  = 2 * time.Microsecond
)

func (w *workerState) sample() bool {
	w.n++
	return w.ewma == 0 || w.ewma >= float64(alwaysTime) || w.n%sampleEvery == 0
}

func (w *workerState) chunkSize() int {
	if w.ewma <= 0 {
		return 1
	}
	n := int(float64(chunkTarget) / w.ewma)
	return max(1, min(n, maxChunk))
}

func (w *workerState) observe(d time.Duration) {
	if w.ewma == 0 {
		w.ewma = float64(d)
		return
	}
	w.ewma += (float64(d) - w.ewma) / 8
}

// claim takes the next chunk of work, or returns nil when there is no more.
func (st *stepStage) claim(w *workerState) *chunk {
	st.mu.Lock()
	defer st.mu.Unlock()
	for {
		if st.ctx.Err() != nil {
			return nil
		}
		if len(st.queue) == 0 {
			if st.inDone {
				return nil
			}
			st.cond.Wait()
			continue
		}
		b := st.queue[0]
		n := min(w.chunkSize(), len(b.recs)-st.pos)
		if st.ordered {
			// Announce the wait before reading emitted, so that the
			// collector either sees a waiter or we see its progress.
			st.waiters.Add(1)
			room := st.emitted.Load() + st.window - st.seq
			if room <= 0 {
				st.cond.Wait()
				st.waiters.Add(-1)
				continue
			}
			st.waiters.Add(-1)
			n = min(n, int(room))
		}
		c := st.getChunk(n)
		c.seq = st.seq
		for i := range n {
			r := b.recs[st.pos+i]
			c.ents[i].in = steps.Input{Index: r.Index, Item: r.Item}
		}
		st.pos += n
		st.seq += int64(n)
		if st.pos == len(b.recs) {
			copy(st.queue, st.queue[1:])
			st.queue[len(st.queue)-1] = nil
			st.queue = st.queue[:len(st.queue)-1]
			st.pos = 0
			freeBatch(b)
			st.room.Signal()
		}
		if len(st.queue) > 0 {
			st.cond.Signal()
		}
		return c
	}
}

func (st *stepStage) worker(slot *atomic.Pointer[chunk]) {
	w := &workerState{}
	if st.keyed {
		for c := range st.work {
			st.process(w, &c.ents[0])
			key := c.key
			st.results <- c
			st.keyDone <- key
		}
		return
	}
	for {
		c := st.claim(w)
		if c == nil {
			return
		}
		if len(c.ents) == 1 {
			st.process(w, &c.ents[0])
		} else {
			slot.Store(c)
			for i := range c.ents {
				st.process(w, &c.ents[i])
				c.done.Store(int32(i + 1))
				if st.idle.Load() {
					select {
					case st.wake <- struct{}{}:
					default:
					}
				}
			}
			slot.Store(nil)
		}
		st.results <- c
	}
}

// process runs one item: filter, limits, attempts with timeout and retry.
func (st *stepStage) process(w *workerState, e *entry) {
	if st.ctx.Err() != nil {
		e.outcome = outCancelled
		return
	}
	var keys []string
	if st.when != nil || st.lim != nil {
		sc := st.scope(e.in)
		if st.when != nil {
			keep, err := st.filter(sc)
			if err != nil {
				e.outcome, e.err = outFailed, err
				return
			}
			if !keep {
				e.outcome = outFiltered
				return
			}
		}
		if st.lim != nil {
			var err error
			if keys, err = st.lim.keysOf(sc); err != nil {
				e.outcome, e.err = outFailed, &steps.Error{Err: err, Class: "expression", Permanent: true}
				return
			}
		}
	}
	if !w.sample() {
		st.attempts(w, e, keys)
		return
	}
	start := time.Now()
	st.attempts(w, e, keys)
	e.lat, e.timed = time.Since(start), true
	w.observe(e.lat)
}

var errCancelled = errors.New("cancelled")

func (st *stepStage) attempts(w *workerState, e *entry, keys []string) {
	for attempt := 1; ; attempt++ {
		if st.lim != nil {
			if err := st.lim.acquire(st.ctx, keys, &w.held); err != nil {
				e.outcome, e.attempts = outCancelled, int32(attempt-1)
				return
			}
		}
		actx, cancel := st.ctx, context.CancelFunc(nil)
		if st.timeout > 0 {
			actx, cancel = context.WithTimeout(st.ctx, st.timeout)
		}
		res, err := safeDo(st.runner, actx, e.in)
		timedOut := false
		if cancel != nil {
			timedOut = err != nil && actx.Err() == context.DeadlineExceeded
			cancel()
		}
		if st.lim != nil {
			st.lim.done(&w.held)
		}
		e.attempts = int32(attempt)
		if err == nil {
			e.outcome, e.res = outOK, res
			return
		}
		if st.ctx.Err() != nil {
			e.outcome = outCancelled
			return
		}
		if timedOut {
			err = &steps.Error{Err: fmt.Errorf("attempt timed out after %s (timeout: %s)", st.timeout, st.timeout), Class: "timeout"}
		}
		e.timedOut = timedOut
		if !st.retryable(err, attempt) {
			e.outcome, e.err = outFailed, err
			return
		}
		if sleep(st.r.clk, st.ctx, st.backoff(attempt, err)) != nil {
			e.outcome = outCancelled
			return
		}
	}
}

// safeDo runs one attempt, turning a panic into the item's error.
func safeDo(r Runner, ctx context.Context, in steps.Input) (res any, err error) {
	defer func() {
		if p := recover(); p != nil {
			res, err = nil, &steps.Error{Err: fmt.Errorf("panic: %v", p), Class: "panic", Permanent: true}
		}
	}()
	return r.Do(ctx, in)
}

func (st *stepStage) retryable(err error, attempt int) bool {
	r := st.retry
	if r == nil || attempt >= r.Attempts {
		return false
	}
	var se *steps.Error
	if errors.As(err, &se) && se.Permanent {
		return false
	}
	if len(r.On) == 0 {
		return true
	}
	class := steps.ClassOf(err)
	for _, c := range r.On {
		if c == class {
			return true
		}
	}
	return false
}

// backoff is the wait before attempt+1: exponential from retry.backoff,
// capped by max_backoff, spread by jitter, and never shorter than the
// step's RetryAfter hint.
func (st *stepStage) backoff(attempt int, err error) time.Duration {
	r := st.retry
	d := float64(r.Backoff)
	for i := 1; i < attempt && d < float64(r.MaxBackoff); i++ {
		d *= 2
	}
	if r.MaxBackoff > 0 && d > float64(r.MaxBackoff) {
		d = float64(r.MaxBackoff)
	}
	if r.Jitter != nil && *r.Jitter > 0 {
		d *= 1 + *r.Jitter*(2*rand.Float64()-1)
	}
	wait := time.Duration(d)
	var se *steps.Error
	if errors.As(err, &se) && se.RetryAfter > wait {
		wait = se.RetryAfter
	}
	return wait
}

// dispatch feeds workers for `order: key`: one item per key in flight, the
// others of that key queued in input order; different keys run in parallel.
// It holds at most window items, so a hot key applies backpressure.
func (st *stepStage) dispatch() {
	type keyQueue struct{ items []steps.Input }
	queues := map[string]*keyQueue{}
	var ready []*chunk
	held, inflight := 0, 0 // held: queued or ready, not yet with a worker
	in := st.in
	inDone, stopped := false, false
	cancelIn := func(x steps.Input) {
		c := st.getChunk(1)
		c.seq = -1
		c.ents[0] = entry{in: x, outcome: outCancelled}
		st.results <- c
	}
	stop := func() {
		stopped = true
		for _, c := range ready {
			c.ents[0].outcome = outCancelled
			st.results <- c
		}
		ready = nil
		for k, q := range queues {
			for _, x := range q.items {
				cancelIn(x)
			}
			q.items = nil
			_ = k
		}
		held = 0
	}
	for {
		if inDone && inflight == 0 && (held == 0 || stopped) {
			break
		}
		var recv <-chan *batch
		if !inDone && (stopped || held < int(st.window)) {
			recv = in
		}
		var send chan *chunk
		var head *chunk
		if !stopped && len(ready) > 0 {
			send, head = st.work, ready[0]
		}
		var done <-chan struct{}
		if !stopped {
			done = st.ctx.Done()
		}
		select {
		case b, ok := <-recv:
			if !ok {
				inDone = true
				continue
			}
			st.begin()
			for _, r := range b.recs {
				x := steps.Input{Index: r.Index, Item: r.Item}
				if stopped {
					cancelIn(x)
					continue
				}
				v, err := st.key.Eval(st.scope(x))
				if err != nil {
					c := st.getChunk(1)
					c.seq = -1
					c.ents[0] = entry{in: x, outcome: outFailed, attempts: 0,
						err: &steps.Error{Err: fmt.Errorf("key: %w", err), Class: "expression", Permanent: true}}
					st.results <- c
					continue
				}
				k := tmpl.Stringify(v)
				held++
				if q, busy := queues[k]; busy {
					q.items = append(q.items, x)
					continue
				}
				queues[k] = &keyQueue{}
				c := st.getChunk(1)
				c.seq, c.key = -1, k
				c.ents[0].in = x
				ready = append(ready, c)
			}
			freeBatch(b)
		case send <- head:
			ready[0] = nil
			ready = ready[1:]
			held--
			inflight++
		case k := <-st.keyDone:
			inflight--
			q := queues[k]
			if q == nil {
				continue
			}
			if len(q.items) == 0 || stopped {
				delete(queues, k)
				continue
			}
			x := q.items[0]
			q.items[0] = steps.Input{}
			q.items = q.items[1:]
			c := st.getChunk(1)
			c.seq, c.key = -1, k
			c.ents[0].in = x
			ready = append(ready, c)
		case <-done:
			stop()
		}
	}
	close(st.work)
}

// collect is the stage's single accountant: it decides each result's fate
// as soon as it is known (completion policy, on_error, max_errors, so that a
// failure stops the run at once even in input order), then accounts for the
// results and hands them on, in order.
func (st *stepStage) collect() {
	em := newEmitter(st.stage)
	st.waiting = map[int64]*chunk{}
	for {
		c, ok := st.nextResult(em)
		if !ok {
			break
		}
		if c != nil {
			st.arrive(c, em)
		}
		st.afterProgress(em)
	}
	// Every claimed item came back; what is still queued was never
	// claimed because the stage stopped.
	for i, b := range st.queue {
		from := 0
		if i == 0 {
			from = st.pos
		}
		for _, r := range b.recs[from:] {
			st.rep.In++
			st.cancelled(steps.Input{Index: r.Index, Item: r.Item})
		}
		freeBatch(b)
	}
	st.queue = nil
	em.close()
}

// nextResult returns the next finished chunk, or nil after handing on part
// of the chunks in progress; ok is false once every worker is done.
func (st *stepStage) nextResult(em *emitter) (*chunk, bool) {
	select {
	case c, ok := <-st.results:
		return c, ok
	default:
	}
	if st.scan(em) {
		return nil, true
	}
	// Idle: hand on what is pending before waiting.
	em.flush()
	st.idle.Store(true)
	defer st.idle.Store(false)
	// A worker may have finished an item just before idle was set.
	if st.scan(em) {
		return nil, true
	}
	select {
	case c, ok := <-st.results:
		return c, ok
	case <-st.wake:
		return nil, true
	}
}

// arrive takes a chunk whose items are all finished.
func (st *stepStage) arrive(c *chunk, em *emitter) {
	n := len(c.ents)
	st.decide(c, c.decided, n)
	c.decided = n
	if c.taken == n {
		st.freeChunk(c)
		return
	}
	if !st.ordered || c.seq < 0 {
		st.account(c, c.taken, n, em)
		st.freeChunk(c)
		return
	}
	st.waiting[c.seq+int64(c.taken)] = c
}

// scan hands on the finished items of chunks still in progress (in input
// order, only those of the chunk at the head).
func (st *stepStage) scan(em *emitter) bool {
	progress := false
	for i := range st.slots {
		c := st.slots[i].Load()
		if c == nil {
			continue
		}
		d := int(c.done.Load())
		if d > c.decided {
			st.decide(c, c.decided, d)
			c.decided = d
		}
		if d <= c.taken || st.ordered && c.seq+int64(c.taken) != st.next {
			continue
		}
		st.account(c, c.taken, d, em)
		if st.ordered {
			st.next += int64(d - c.taken)
		}
		c.taken = d
		progress = true
	}
	return progress
}

func (st *stepStage) afterProgress(em *emitter) {
	if st.ordered {
		for {
			c := st.waiting[st.next]
			if c == nil {
				break
			}
			delete(st.waiting, st.next)
			n := len(c.ents)
			st.account(c, c.taken, n, em)
			st.next += int64(n - c.taken)
			st.freeChunk(c)
		}
		st.emitted.Store(st.next)
		if st.waiters.Load() > 0 {
			st.mu.Lock()
			st.cond.Broadcast()
			st.mu.Unlock()
		}
	}
	if s := st.stopNext; s != nil {
		st.stopNext = nil
		em.flush()
		st.r.stopRun(s)
	}
}

// decide applies the policies to entries [from, to) of c as they finish.
func (st *stepStage) decide(c *chunk, from, to int) {
	for i := from; i < to; i++ {
		e := &c.ents[i]
		switch e.outcome {
		case outOK:
			if st.policyMet {
				e.outcome = outLate
				continue
			}
			st.successes++
			if st.first > 0 && st.successes >= st.first {
				st.policyMet = true
				st.cancel(errPolicyMet)
			}
		case outFailed:
			st.failCount++
			switch {
			case st.onError == "fail" && st.failCount == 1:
				st.stopNext = &runStop{status: "failed", msg: fmt.Sprintf("stage %q failed on item %d (%s): %v (on_error: fail stops the run; use on_error: skip or keep to go on)",
					st.name, e.in.Index, short(e.in.Item), e.err)}
			case st.onError != "fail" && st.maxErrors > 0 && st.failCount == st.maxErrors+1:
				st.stopNext = &runStop{status: "failed", msg: fmt.Sprintf("stage %q: %d items failed, more than max_errors: %d; the last: item %d (%s): %v",
					st.name, st.failCount, st.maxErrors, e.in.Index, short(e.in.Item), e.err)}
			}
		}
	}
}

// account counts entries [from, to) of c and queues their results.
func (st *stepStage) account(c *chunk, from, to int, em *emitter) {
	rep := st.rep
	for i := from; i < to; i++ {
		e := &c.ents[i]
		rep.In++
		if e.attempts > 1 {
			rep.Retries += int64(e.attempts - 1)
		}
		switch e.outcome {
		case outOK:
			if e.timed {
				st.hist.record(e.lat)
			}
			em.add(steps.Record{Index: e.in.Index, Item: e.res}, e.in, true)
		case outLate:
			rep.Cancelled++
			st.event("cancelled", e.in, nil, nil)
		case outCancelled:
			st.cancelled(e.in)
		case outFiltered:
			rep.Filtered++
			st.event("filtered", e.in, nil, nil)
		case outFailed:
			if e.timed {
				st.hist.record(e.lat)
			}
			if e.timedOut {
				rep.TimedOut++
			}
			attempts := int(e.attempts)
			switch st.onError {
			case "skip":
				rep.Skipped++
				st.failure(e.in, e.err, attempts, "skipped")
				st.event("skipped", e.in, nil, e.err)
			case "keep":
				rep.Failed++
				st.failure(e.in, e.err, attempts, "kept")
				st.event("failed", e.in, nil, e.err)
				kept := map[string]any{"error": st.r.red.String(e.err.Error()), "class": steps.ClassOf(e.err), "input": e.in.Item}
				em.add(steps.Record{Index: e.in.Index, Item: kept, Err: e.err}, e.in, false)
			default:
				rep.Failed++
				outcome := "failed"
				if e.timedOut {
					outcome = "timed_out"
				}
				st.failure(e.in, e.err, attempts, outcome)
				st.event("failed", e.in, nil, e.err)
			}
		}
	}
}

// short renders an item for a one-line message.
func short(v any) string {
	s := tmpl.Stringify(v)
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return s
}

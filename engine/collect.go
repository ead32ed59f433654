package engine

import (
	"unicode/utf8"

	"github.com/flowrun/flow/tmpl"

	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/steps"
)

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
			st.cancelled(steps.Input{Index: r.Index, Item: r.Item}, nil)
		}
		freeBatch(b)
	}
	st.queue = nil
	em.close()
	st.flushWorker()
}

// countWorker counts one item for worker w in the report's ByWorker, in
// runs: a worker answers many items in a row, and a map update per item
// costs more than the rest of their accounting.
func (st *stepStage) countWorker(w string) {
	if st.byN > 0 && w == st.byName {
		st.byN++
		return
	}
	st.flushWorker()
	st.byName, st.byN = w, 1
}

// flushWorker adds the run pending to ByWorker.
func (st *stepStage) flushWorker() {
	if st.byN > 0 {
		st.rep.ByWorker[st.byName] += st.byN
		st.byN = 0
	}
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
	if s := st.stopNext; s != nil && (st.stopAt < 0 || st.next > st.stopAt) {
		st.stopNext = nil
		em.flush()
		st.halt(s)
	}
}

// decide applies the policies to entries [from, to) of c as they finish.
func (st *stepStage) decide(c *chunk, from, to int) {
	for i := from; i < to; i++ {
		e := &c.ents[i]
		switch e.outcome {
		case outOK:
			late, met := st.done.success()
			if late {
				e.outcome = outLate
				continue
			}
			if met {
				st.cancel(errPolicyMet)
			}
		case outFailed:
			if stop := st.policy.fail(e.in, e.err); stop != nil {
				st.stopNext = stop
				if st.ordered && c.seq >= 0 {
					// Like executor.map: the results before the failing
					// item are handed on first; nothing new starts.
					st.stopAt = c.seq + int64(i)
					st.draining.Store(true)
					st.mu.Lock()
					st.room.Broadcast() // the feeder: cancel, do not wait
					st.cond.Broadcast() // the workers: claim nothing more
					st.mu.Unlock()
				}
			}
		}
	}
}

// account counts entries [from, to) of c and queues their results.
func (st *stepStage) account(c *chunk, from, to int, em *emitter) {
	rep := st.rep
	for i := from; i < to; i++ {
		e := &c.ents[i]
		if st.stopAt >= 0 && c.seq >= 0 && c.seq+int64(i) == st.stopAt+1 {
			// Everything up to the failing item is handed on: stop now,
			// so that what follows it is cancelled, not handed on.
			if s := st.stopNext; s != nil {
				st.stopNext = nil
				em.flush()
				st.halt(s)
			}
		}
		rep.In++
		if rep.ByWorker != nil && e.tries.n > 0 {
			st.countWorker(e.tries.last.Worker)
		}
		if e.tries.n > 1 {
			rep.Retries += int64(e.tries.n - 1)
		}
		switch e.outcome {
		case outOK:
			if e.timed {
				st.hist.record(e.lat)
			}
			if st.halted {
				st.cancelled(e.in, &e.tries) // after the failure that stopped it
				continue
			}
			if e.tries.last.Cached {
				rep.Cached++
			}
			em.add(steps.Record{Index: e.in.Index, Item: e.res}, e.in, true, &e.tries)
		case outLate:
			rep.Cancelled++
			st.event(report.Cancelled, e.in, nil, nil, &e.tries)
		case outCancelled:
			st.cancelled(e.in, &e.tries)
		case outFiltered:
			rep.Filtered++
			st.event(report.Filtered, e.in, nil, nil, nil)
		case outFailed:
			if e.timed {
				st.hist.record(e.lat)
			}
			st.accountFailure(st.policy.onError, e.in, e.err, int(e.tries.n), e.timedOut, &e.tries, em)
		}
	}
}

// short renders an item for a one-line message: redacted first, then cut
// (on a character boundary), so that no prefix of a secret is left before
// the cut where the redactor could no longer recognise it.
func short(red *redactor, v any) string {
	s := red.String(tmpl.Stringify(v))
	if len(s) > 80 {
		cut := 77
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}

// halt makes a stop the stage decided. An `order: input` stage that fails
// stops like executor.map raising: what it handed on before the failing
// item goes on downstream (printed, written) while everything upstream
// stops; the run fails all the same. Other stops stop the run at once.
func (st *stepStage) halt(s *runStop) {
	if st.stopAt < 0 {
		st.r.stopRun(s)
		return
	}
	st.stopAt, st.halted = -1, true
	st.r.failRun(s)
	st.cancel(s)
}

package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowrun/flow/clock"
	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/tmpl"
)

// stageExec is one running stage.
type stageExec interface {
	base() *stage
	// exec runs the stage until its input is exhausted or it is stopped,
	// accounts for every item it received, and closes its output.
	exec()
	// abort releases what the stage holds when the run never starts.
	abort(err error)
}

// stage is what every kind of stage shares.
type stage struct {
	r    *run
	spec *spec.Stage
	name string
	rep  *report.Stage
	when *tmpl.T
	lim  *limiter

	// ctx is cancelled when this stage must stop: the run stops, a stage
	// downstream stopped, or this stage's completion policy was met.
	ctx    context.Context
	cancel context.CancelCauseFunc
	// downCtx is the next stage's context: results are handed on while it
	// lives, even after this stage stopped taking new work.
	downCtx context.Context
	in      <-chan *batch
	out     chan *batch
	total   int64

	hist     hist
	started  time.Time
	deadline clock.Timer
	finished atomic.Bool

	toOnce sync.Once
	toCanc bool // items cancelled here count as timed out

	// The event being published, reused: ItemDone gets a pointer valid
	// for the call (see EventSink).
	evBuf  ItemEvent
	attBuf [1]Attempt
}

func (s *stage) base() *stage { return s }

// begin marks the arrival of the stage's first item: the stage's duration
// and its deadline count from there.
func (s *stage) begin() {
	if !s.started.IsZero() {
		return
	}
	s.started = s.r.clk.Now()
	if d := s.spec.Deadline; d > 0 {
		s.deadline = s.r.clk.AfterFunc(d, func() {
			if s.finished.Load() {
				return
			}
			s.r.stopRun(&runStop{status: report.StatusTimedOut, timeout: true, stage: s.name, limit: d,
				msg: fmt.Sprintf("stage %q did not finish within its deadline of %s", s.name, d)})
		})
	}
}

// finish completes the stage's report once it is done.
func (s *stage) finish() {
	s.finished.Store(true)
	if s.deadline != nil {
		s.deadline.Stop()
	}
	rep := s.rep
	rep.LatencyP50 = report.Duration(s.hist.quantile(0.50))
	rep.LatencyP95 = report.Duration(s.hist.quantile(0.95))
	rep.LatencyMax = report.Duration(s.hist.max)
	if !s.started.IsZero() {
		d := s.r.clk.Now().Sub(s.started)
		rep.Duration = report.Duration(d)
		if d > 0 {
			rep.PerSecond = float64(rep.Succeeded+rep.Failed+rep.Skipped) / d.Seconds()
		}
	}
}

// cancelCountsAsTimeout tells whether items cancelled in this stage were
// cancelled by a timeout: the pipeline's, or this stage's deadline.
func (s *stage) cancelCountsAsTimeout() bool {
	s.toOnce.Do(func() {
		var rs *runStop
		if errors.As(context.Cause(s.ctx), &rs) && rs.timeout && (rs.stage == "" || rs.stage == s.name) {
			s.toCanc = true
		}
	})
	return s.toCanc
}

// cancelled accounts for one item cancelled before or while running.
func (s *stage) cancelled(in steps.Input, tries *tries) {
	s.rep.Cancelled++
	if s.ctx.Err() != nil && s.cancelCountsAsTimeout() {
		s.rep.TimedOut++
	}
	s.event(report.Cancelled, in, nil, nil, tries)
}

// tries is what the engine knows of an item's attempts in a stage: the
// last attempt inline (most items have one), earlier ones only on retry,
// so that a stage without retries allocates nothing for them.
type tries struct {
	last    Attempt
	earlier []Attempt
	n       int32         // attempts made
	wait    time.Duration // on limits, all attempts
}

func (t *tries) list(scratch *[1]Attempt) []Attempt {
	if t == nil || t.n == 0 || t.last.Start.IsZero() {
		return nil
	}
	if len(t.earlier) == 0 {
		scratch[0] = t.last
		return scratch[:]
	}
	return append(t.earlier, t.last)
}

// event publishes one item's outcome, redacted. Calls for a stage come
// from one goroutine at a time, which the scratch space relies on.
func (s *stage) event(outcome report.Outcome, in steps.Input, res any, err error, t *tries) {
	ev := s.r.ev
	if ev == nil {
		return
	}
	if err != nil {
		err = redactedError{err, s.r.red.String(err.Error())}
	}
	e := &s.evBuf
	*e = ItemEvent{Stage: s.name, Index: in.Index, Outcome: outcome, Err: err,
		// Progress prints items and results: an item built from a secret
		// variable must not show it there either.
		Item: s.r.red.Value(in.Item), Result: s.r.red.Value(res)}
	if t != nil {
		e.Attempts, e.Wait = t.list(&s.attBuf), t.wait
	}
	ev.ItemDone(e)
	*e = ItemEvent{}
}

// redactedError keeps the chain of an error (for errors.As) while printing
// without secrets.
type redactedError struct {
	err error
	msg string
}

func (e redactedError) Error() string { return e.msg }
func (e redactedError) Unwrap() error { return e.err }

// scope returns the expression scope of one item.
func (s *stage) scope(in steps.Input) *tmpl.Scope {
	return &tmpl.Scope{Item: in.Item, Index: in.Index, Vars: s.r.vars, Env: s.r.env, Ctx: s.ctx}
}

// filter evaluates `when:`; an evaluation error is the item's failure.
func (s *stage) filter(sc *tmpl.Scope) (keep bool, err error) {
	ok, err := s.when.EvalBool(sc)
	if err != nil {
		return false, &steps.Error{Err: fmt.Errorf("when: %w", err), Class: "expression", Permanent: true}
	}
	return ok, nil
}

func (s *stage) failure(in steps.Input, err error, attempts int, outcome report.Outcome) {
	s.r.addFailure(report.Failure{Stage: s.name, Index: in.Index, Item: in.Item, Error: err.Error(),
		Class: steps.ClassOf(err), Attempts: attempts, Outcome: outcome})
}

// batch is a run of records travelling between two stages.
type batch struct {
	recs []steps.Record
}

var batchPool = sync.Pool{New: func() any { return &batch{recs: make([]steps.Record, 0, batchSize)} }}

func newBatch() *batch { return batchPool.Get().(*batch) }

func freeBatch(b *batch) {
	clear(b.recs)
	b.recs = b.recs[:0]
	batchPool.Put(b)
}

// emitter gathers a stage's results into batches and hands them on. Results
// are accounted when handed on: Succeeded when the next stage got them,
// Cancelled when it stopped first.
type emitter struct {
	s  *stage
	ev bool // the run has an event consumer
	b  *batch
	// Without an event consumer, oks counts the successes in b: that is
	// all their accounting needs (this is the hot path). With one, pend
	// and tries hold what each item's event says.
	oks   int
	pend  []pending
	tries []tries
}

type pending struct {
	in  steps.Input
	ok  bool // a success (not an item kept with its error)
	res any
}

func newEmitter(s *stage) *emitter {
	e := &emitter{s: s, ev: s.r.ev != nil}
	if e.ev {
		e.pend = make([]pending, 0, batchSize)
	}
	return e
}

// add queues one outgoing record; ok says it is a success to account,
// t (may be nil) how the item's attempts went, for its event.
func (e *emitter) add(rec steps.Record, in steps.Input, ok bool, t *tries) {
	if e.b == nil {
		e.b = newBatch()
	}
	e.b.recs = append(e.b.recs, rec)
	if e.ev {
		p := pending{ok: ok, in: in, res: rec.Item}
		var tr tries
		if t != nil {
			tr = *t
		}
		e.tries = append(e.tries, tr)
		e.pend = append(e.pend, p)
	} else if ok {
		e.oks++
	}
	if len(e.b.recs) == batchSize {
		e.flush()
	}
}

// addItems is add for successes numbered from index on, without an event
// consumer: a source's items in bulk.
func (e *emitter) addItems(index int64, items []any) {
	for len(items) > 0 {
		if e.b == nil {
			e.b = newBatch()
		}
		k := min(len(items), batchSize-len(e.b.recs))
		for j, it := range items[:k] {
			e.b.recs = append(e.b.recs, steps.Record{Index: index + int64(j), Item: it})
		}
		e.oks += k
		index += int64(k)
		items = items[k:]
		if len(e.b.recs) == batchSize {
			e.flush()
		}
	}
}

// flush hands the pending batch to the next stage, waiting while it is full.
func (e *emitter) flush() {
	b := e.b
	if b == nil || len(b.recs) == 0 {
		return
	}
	e.b = nil
	n := int64(len(b.recs)) // b belongs to the next stage once sent
	sent := false
	if e.s.downCtx.Err() == nil {
		select {
		case e.s.out <- b:
			sent = true
		case <-e.s.downCtx.Done():
		}
	}
	rep := e.s.rep
	if sent {
		rep.Out += n
	} else {
		freeBatch(b)
	}
	if !e.ev {
		if sent {
			rep.Succeeded += int64(e.oks)
		} else {
			for range e.oks {
				e.s.cancelled(steps.Input{}, nil) // counts only: no event
			}
		}
		e.oks = 0
		return
	}
	for i := range e.pend {
		p := &e.pend[i]
		t := &e.tries[i]
		switch {
		case !sent && p.ok:
			e.s.cancelled(p.in, t)
		case sent && p.ok:
			rep.Succeeded++
			e.s.event(report.Succeeded, p.in, p.res, nil, t)
		}
	}
	clear(e.tries)
	e.tries = e.tries[:0]
	clear(e.pend)
	e.pend = e.pend[:0]
}

// close flushes and closes the output.
func (e *emitter) close() {
	e.flush()
	if e.s.out != nil {
		close(e.s.out)
	}
}

package engine

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/flowrun/flow/clock"
	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/steps"
)

// sourceStage runs a source. Items are batched as they are emitted; a
// ticker hands on a partial batch that waited a tick, so a slow source (stdin
// in a terminal) still streams item by item.
//
// The tick and the grace after a stop are real time on every clock: they
// bound how long an item or a stuck source waits in this process, not a
// time of the pipeline. On a virtual clock there is no tick: every item is
// handed on as it is emitted, so that no item waits for real time while the
// virtual clock takes the run for idle.
type sourceStage struct {
	*stage
	src steps.Source

	mu     sync.Mutex // guards em, rep, next and closed: emit and the ticker
	em     *emitter
	next   int64 // index of the next item
	closed bool
	fresh  bool // items were added since the last tick
	eager  bool // hand on every item at once (a virtual clock: no tick)
}

const sourceTick = 2 * time.Millisecond

func (s *sourceStage) abort(err error) { _ = steps.Built{Source: s.src}.Close() }

func (s *sourceStage) exec() {
	s.begin()
	s.em = newEmitter(s.stage)
	s.eager = !clock.IsReal(s.r.clk)
	done := make(chan struct{})
	var srcErr error
	go func() {
		defer close(done)
		srcErr = s.runSource()
	}()
	var tickC <-chan time.Time
	if !s.eager {
		tick := time.NewTicker(sourceTick)
		defer tick.Stop()
		tickC = tick.C
	}
	stopped := s.ctx.Done()
loop:
	for {
		select {
		case <-done:
			break loop
		case <-tickC:
			s.mu.Lock()
			if !s.fresh && !s.closed {
				s.em.flush()
			}
			s.fresh = false
			s.mu.Unlock()
		case <-stopped:
			// Close the output now rather than when the source returns:
			// one blocked in a read may take its time.
			s.shut()
			stopped = nil
			select {
			case <-done:
			case <-time.After(sourceGrace):
				return
			}
			break loop
		}
	}
	if srcErr != nil && s.ctx.Err() == nil {
		s.r.stopRun(&runStop{status: report.StatusFailed, msg: fmt.Sprintf("source %q: %v", s.name, srcErr)})
	}
	s.shut()
}

// shut flushes (or, once stopped, cancels) what is pending and closes the
// output, once.
func (s *sourceStage) shut() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	s.em.close()
}

func (s *sourceStage) runSource() (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	if bs, ok := s.src.(BulkSource); ok {
		return bs.ItemsBulk(s.ctx, s.emitBulk)
	}
	return s.src.Items(s.ctx, s.emit)
}

// BulkSource is a source that can produce many items at once (a range):
// the engine takes a whole slice under one lock and one check of the
// context, instead of paying both per item, which costs more than making a
// trivial item. emit copies the items out before it returns, so the source
// may reuse the slice; its error says to stop, as Items' emit does.
type BulkSource interface {
	ItemsBulk(ctx context.Context, emit func(items []any) error) error
}

// emitBulk is emit for a slice of items. A stage that filters or limits
// its items, or hands each on at once (a virtual clock), takes them one by
// one: those decide per item.
func (s *sourceStage) emitBulk(items []any) error {
	if s.when != nil || s.lim != nil || s.eager {
		for _, it := range items {
			if err := s.emit(it); err != nil {
				return err
			}
		}
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.ctx.Err() != nil {
		return errStopped
	}
	if s.em.ev {
		for _, it := range items {
			s.add(it)
		}
	} else {
		// Items a stop catches in the slice are accounted as cancelled
		// when their batch cannot be handed on.
		s.em.addItems(s.next, items)
		s.next += int64(len(items))
		s.rep.In += int64(len(items))
	}
	s.fresh = true
	return nil
}

func (s *sourceStage) emit(item any) error {
	if s.ctx.Err() != nil {
		return errStopped
	}
	s.mu.Lock()
	if s.closed {
		// The stage is shut: the item never entered the run.
		s.mu.Unlock()
		return errStopped
	}
	if s.when == nil && s.lim == nil {
		// Nothing to decide per item: numbered and queued under one
		// lock.
		defer s.mu.Unlock()
		s.add(item)
		return nil
	}
	in := steps.Input{Index: s.next, Item: item}
	s.next++
	s.mu.Unlock()
	if s.when != nil || s.lim != nil {
		sc := s.scope(in)
		if s.when != nil {
			keep, err := s.filter(sc)
			if err != nil {
				// The event under the stage's lock: the ticker's flush
				// publishes events of this stage too (its scratch space).
				if s.account(func() { s.rep.Failed++; s.event(report.Failed, in, nil, err, nil) }) {
					s.failure(in, err, 1, report.Failed)
					s.r.stopRun(&runStop{status: report.StatusFailed, msg: fmt.Sprintf("source %q: item %d (%s): %v", s.name, in.Index, short(s.r.red, item), err)})
				}
				return errStopped
			}
			if !keep {
				s.account(func() { s.rep.Filtered++; s.event(report.Filtered, in, nil, nil, nil) })
				return nil
			}
		}
		if s.lim != nil {
			keys, err := s.lim.keysOf(sc)
			if err == nil {
				var h held
				err = s.lim.acquire(s.ctx, keys, &h)
				if err == nil {
					s.lim.done(&h)
				}
			}
			if err != nil {
				if s.ctx.Err() == nil {
					s.account(func() { s.rep.Failed++ })
					s.failure(in, err, 1, report.Failed)
					s.r.stopRun(&runStop{status: report.StatusFailed, msg: fmt.Sprintf("source %q: item %d (%s): %v", s.name, in.Index, short(s.r.red, item), err)})
				} else {
					s.account(func() { s.cancelled(in, nil) })
				}
				return errStopped
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errStopped
	}
	s.rep.In++
	s.fresh = true
	s.em.add(steps.Record{Index: in.Index, Item: item}, in, true, nil)
	if s.eager {
		s.em.flush()
	}
	return nil
}

// add numbers one item and queues it; s.mu held.
func (s *sourceStage) add(item any) {
	in := steps.Input{Index: s.next, Item: item}
	s.next++
	s.rep.In++
	s.fresh = true
	s.em.add(steps.Record{Index: in.Index, Item: item}, in, true, nil)
	if s.eager {
		s.em.flush()
	}
}

// account counts one item that does not go downstream, unless the stage
// is already shut (then the report is final and the item is not counted).
func (s *sourceStage) account(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.rep.In++
	f()
	return true
}

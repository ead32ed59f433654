package engine

import (
	"context"
	"fmt"
	"math/bits"
	"sync"
	"time"

	"github.com/flowrun/flow/steps"
)

// sourceStage runs a source. Items are batched as they are emitted; a
// ticker hands on a partial batch that waited a tick, so a slow source (stdin
// in a terminal) still streams item by item.
type sourceStage struct {
	*stage
	src steps.Source

	mu     sync.Mutex // guards em, rep, next and closed: emit and the ticker
	em     *emitter
	next   int64 // index of the next item
	closed bool
	fresh  bool // items were added since the last tick
}

const sourceTick = 2 * time.Millisecond

func (s *sourceStage) abort(err error) { closeValue(s.src) }

func (s *sourceStage) exec() {
	s.begin()
	s.em = newEmitter(s.stage)
	done := make(chan struct{})
	var srcErr error
	go func() {
		defer close(done)
		srcErr = s.runSource()
	}()
	tick := time.NewTicker(sourceTick)
	defer tick.Stop()
	stopped := s.ctx.Done()
loop:
	for {
		select {
		case <-done:
			break loop
		case <-tick.C:
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
		s.r.stopRun(&runStop{status: "failed", msg: fmt.Sprintf("source %q: %v", s.name, srcErr)})
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
	return s.src.Items(s.ctx, s.emit)
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
	in := steps.Input{Index: s.next, Item: item}
	s.next++
	s.mu.Unlock()
	if s.when != nil || s.lim != nil {
		sc := s.scope(in)
		if s.when != nil {
			keep, err := s.filter(sc)
			if err != nil {
				if s.account(func() { s.rep.Failed++ }) {
					s.failure(in, err, 1, "failed")
					s.event("failed", in, nil, err)
					s.r.stopRun(&runStop{status: "failed", msg: fmt.Sprintf("source %q: item %d (%s): %v", s.name, in.Index, short(item), err)})
				}
				return errStopped
			}
			if !keep {
				if s.account(func() { s.rep.Filtered++ }) {
					s.event("filtered", in, nil, nil)
				}
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
					s.failure(in, err, 1, "failed")
					s.r.stopRun(&runStop{status: "failed", msg: fmt.Sprintf("source %q: item %d (%s): %v", s.name, in.Index, short(item), err)})
				} else {
					s.account(func() { s.cancelled(in) })
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
	s.em.add(steps.Record{Index: in.Index, Item: item}, in, true)
	return nil
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

// admit counts a record into a sink or barrier stage and does what comes
// before its work: a stopping stage cancels the item, a false `when:` filters
// it. ok says whether the stage should handle the item; err is a `when:` that
// could not be evaluated, which the caller fails by its own policy.
func (s *stage) admit(rec steps.Record) (in steps.Input, ok bool, err error) {
	s.rep.In++
	in = steps.Input{Index: rec.Index, Item: rec.Item}
	if s.ctx.Err() != nil {
		s.cancelled(in)
		return in, false, nil
	}
	if s.when != nil {
		keep, err := s.filter(s.scope(in))
		if err != nil {
			return in, false, err
		}
		if !keep {
			s.rep.Filtered++
			s.event("filtered", in, nil, nil)
			return in, false, nil
		}
	}
	return in, true, nil
}

// sinkStage writes records, one at a time, in the order they arrive.
type sinkStage struct {
	*stage
	sink steps.Sink
}

func (s *sinkStage) abort(err error) { s.sink.Close(context.Background(), err) }

func (s *sinkStage) exec() {
	for b := range s.in {
		s.begin()
		for _, rec := range b.recs {
			in, ok, err := s.admit(rec)
			if err != nil {
				s.fail(in, err)
				continue
			}
			if !ok {
				continue
			}
			if s.rep.In%sampleEvery == 1 {
				start := time.Now()
				err = s.sink.Write(s.ctx, rec)
				s.hist.record(time.Since(start))
			} else {
				err = s.sink.Write(s.ctx, rec)
			}
			if err != nil {
				if s.ctx.Err() != nil {
					s.cancelled(in)
					continue
				}
				s.fail(in, err)
				continue
			}
			s.rep.Succeeded++
			s.event("succeeded", in, rec.Item, nil)
		}
		freeBatch(b)
	}
	if err := s.sink.Close(context.WithoutCancel(s.ctx), s.r.runErr()); err != nil && s.r.stopReason() == nil {
		s.r.stopRun(&runStop{status: "failed", msg: fmt.Sprintf("sink %q: %v", s.name, err)})
	}
}

func (s *sinkStage) fail(in steps.Input, err error) {
	s.rep.Failed++
	s.failure(in, err, 1, "failed")
	s.event("failed", in, nil, err)
	s.r.stopRun(&runStop{status: "failed", msg: fmt.Sprintf("sink %q: item %d (%s): %v", s.name, in.Index, short(in.Item), err)})
}

// barrierStage feeds every item to a barrier (sort, top), then emits what
// it flushes. Items it does not emit are filtered.
type barrierStage struct {
	*stage
	bar     steps.Barrier
	onError string
}

func (s *barrierStage) abort(err error) { closeValue(s.bar) }

func (s *barrierStage) exec() {
	em := newEmitter(s.stage)
	defer closeValue(s.bar)
	var added int64
	// held is the indices of the items the barrier took, so that the
	// events of those it does not emit name them.
	var held indexSet
	failed := 0
	for b := range s.in {
		s.begin()
		for _, rec := range b.recs {
			in, ok, err := s.admit(rec)
			if err != nil {
				failed++
				s.fail(in, err, failed, em)
				continue
			}
			if !ok {
				continue
			}
			if err := s.bar.Add(in); err != nil {
				failed++
				s.fail(in, err, failed, em)
				continue
			}
			added++
			held.add(in.Index)
		}
		freeBatch(b)
	}
	if s.ctx.Err() != nil {
		// Stopped before the barrier saw all its input: nothing it holds
		// is a result.
		held.take(added, func(i int64) { s.cancelled(steps.Input{Index: i}) })
		em.close()
		return
	}
	start := time.Now()
	var emitted int64
	err := s.bar.Flush(s.ctx, func(in steps.Input) error {
		if s.ctx.Err() != nil || s.downCtx.Err() != nil {
			return errStopped
		}
		emitted++
		if emitted <= added {
			held.remove(in.Index)
			em.add(steps.Record{Index: in.Index, Item: in.Item}, in, true)
		} else {
			// More out than in (an aggregate): pass it on, without
			// counting it as a separate item of this stage.
			em.add(steps.Record{Index: in.Index, Item: in.Item}, in, false)
		}
		return nil
	})
	em.flush()
	s.hist.record(time.Since(start))
	passed := min(emitted, added)
	rest := added - passed
	switch {
	case err != nil && s.ctx.Err() == nil:
		for ; rest > 0; rest-- {
			s.rep.Failed++
		}
		s.failure(steps.Input{Index: -1}, err, 1, "failed")
		s.r.stopRun(&runStop{status: "failed", msg: fmt.Sprintf("stage %q: %v", s.name, err)})
	case s.ctx.Err() != nil:
		held.take(rest, func(i int64) { s.cancelled(steps.Input{Index: i}) })
	default:
		s.rep.Filtered += rest
		held.take(rest, func(i int64) { s.event("filtered", steps.Input{Index: i}, nil, nil) })
	}
	em.close()
}

func (s *barrierStage) fail(in steps.Input, err error, n int, em *emitter) {
	switch s.onError {
	case "skip":
		s.rep.Skipped++
		s.failure(in, err, 1, "skipped")
		s.event("skipped", in, nil, err)
	case "keep":
		s.rep.Failed++
		s.failure(in, err, 1, "kept")
		s.event("failed", in, nil, err)
		kept := map[string]any{"error": s.r.red.String(err.Error()), "class": steps.ClassOf(err), "input": in.Item}
		em.add(steps.Record{Index: in.Index, Item: kept, Err: err}, in, false)
		return
	default:
		s.rep.Failed++
		s.failure(in, err, 1, "failed")
		s.event("failed", in, nil, err)
		s.r.stopRun(&runStop{status: "failed", msg: fmt.Sprintf("stage %q failed on item %d (%s): %v", s.name, in.Index, short(in.Item), err)})
		return
	}
	if mx := s.spec.MaxErrors; mx > 0 && n == mx+1 {
		s.r.stopRun(&runStop{status: "failed", msg: fmt.Sprintf("stage %q: %d items failed, more than max_errors: %d", s.name, n, mx)})
	}
}

// indexSet is a set of item indices, one bit each: a barrier that keeps few
// items (top) still sees every index, and a bit per index keeps that at an
// eighth of a byte per item, up to maxIndexed.
type indexSet struct{ words []uint64 }

// maxIndexed bounds an indexSet at 16 MiB: past 134 million items, the
// events of a barrier's held-back items carry -1 rather than let a top-N
// over billions of items grow with them.
const maxIndexed = 1 << 27

func (s *indexSet) add(i int64) {
	if i < 0 || i >= maxIndexed {
		return // not an input's index, or past the bound: nothing to name
	}
	w := int(i >> 6)
	if w >= len(s.words) {
		s.words = append(s.words, make([]uint64, w+1-len(s.words))...)
	}
	s.words[w] |= 1 << (i & 63)
}

func (s *indexSet) remove(i int64) {
	if i < 0 || int(i>>6) >= len(s.words) {
		return
	}
	s.words[i>>6] &^= 1 << (i & 63)
}

// take calls f for n indices, the smallest of the set first, and with -1
// for those the set cannot name (an aggregate's output, an index seen
// twice).
func (s *indexSet) take(n int64, f func(int64)) {
	for w := 0; w < len(s.words) && n > 0; w++ {
		for x := s.words[w]; x != 0 && n > 0; x &= x - 1 {
			f(int64(w)<<6 | int64(bits.TrailingZeros64(x)))
			n--
		}
	}
	for ; n > 0; n-- {
		f(-1)
	}
}

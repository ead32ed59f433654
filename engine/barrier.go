package engine

import (
	"fmt"

	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/steps"
)

// barrierStage feeds every item to a barrier (sort, top), then emits what
// it flushes. Items it does not emit are filtered.
type barrierStage struct {
	*stage
	bar    steps.Barrier
	policy errorPolicy
}

func (s *barrierStage) abort(err error) { _ = steps.Built{Barrier: s.bar}.Close() }

func (s *barrierStage) exec() {
	em := newEmitter(s.stage)
	defer steps.Built{Barrier: s.bar}.Close()
	var added int64
	// held is the indices of the items the barrier took, so that the
	// events of those it does not emit name them.
	var held indexSet
	for b := range s.in {
		s.begin()
		for _, rec := range b.recs {
			in, ok, err := s.admit(rec)
			if err != nil {
				s.fail(in, err, em)
				continue
			}
			if !ok {
				continue
			}
			if err := s.bar.Add(in); err != nil {
				s.fail(in, err, em)
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
		held.take(added, func(i int64) { s.cancelled(steps.Input{Index: i}, nil) })
		em.close()
		return
	}
	start := s.r.clk.Now()
	var emitted int64
	err := s.bar.Flush(s.ctx, func(in steps.Input) error {
		if s.ctx.Err() != nil || s.downCtx.Err() != nil {
			return errStopped
		}
		emitted++
		if emitted <= added {
			held.remove(in.Index)
			em.add(steps.Record{Index: in.Index, Item: in.Item}, in, true, nil)
		} else {
			// More out than in (an aggregate): pass it on, without
			// counting it as a separate item of this stage.
			em.add(steps.Record{Index: in.Index, Item: in.Item}, in, false, nil)
		}
		return nil
	})
	em.flush()
	s.hist.record(s.r.clk.Now().Sub(start))
	passed := min(emitted, added)
	rest := added - passed
	switch {
	case err != nil && s.ctx.Err() == nil:
		for ; rest > 0; rest-- {
			s.rep.Failed++
		}
		s.failure(steps.Input{Index: -1}, err, 1, report.Failed)
		s.r.stopRun(&runStop{status: report.StatusFailed, msg: fmt.Sprintf("stage %q: %v", s.name, err)})
	case s.ctx.Err() != nil:
		held.take(rest, func(i int64) { s.cancelled(steps.Input{Index: i}, nil) })
	default:
		s.rep.Filtered += rest
		held.take(rest, func(i int64) { s.event(report.Filtered, steps.Input{Index: i}, nil, nil, nil) })
	}
	em.close()
}

func (s *barrierStage) fail(in steps.Input, err error, em *emitter) {
	s.accountFailure(s.policy.onError, in, err, 1, false, nil, em)
	if stop := s.policy.fail(in, err); stop != nil {
		s.r.stopRun(stop)
	}
}

package engine

import (
	"context"
	"fmt"

	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/steps"
)

// admit counts a record into a sink or barrier stage and does what comes
// before its work: a stopping stage cancels the item, a false `when:` filters
// it. ok says whether the stage should handle the item; err is a `when:` that
// could not be evaluated, which the caller fails by its own policy.
func (s *stage) admit(rec steps.Record) (in steps.Input, ok bool, err error) {
	s.rep.In++
	in = steps.Input{Index: rec.Index, Item: rec.Item}
	if s.ctx.Err() != nil {
		s.cancelled(in, nil)
		return in, false, nil
	}
	if s.when != nil {
		keep, err := s.filter(s.scope(in))
		if err != nil {
			return in, false, err
		}
		if !keep {
			s.rep.Filtered++
			s.event(report.Filtered, in, nil, nil, nil)
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
			if s.rep.In%sampleEvery == 1 || s.r.timeAll {
				start := s.r.clk.Now()
				err = s.sink.Write(s.ctx, rec)
				s.hist.record(s.r.clk.Now().Sub(start))
			} else {
				err = s.sink.Write(s.ctx, rec)
			}
			if err != nil {
				if s.ctx.Err() != nil {
					s.cancelled(in, nil)
					continue
				}
				s.fail(in, err)
				continue
			}
			s.rep.Succeeded++
			s.event(report.Succeeded, in, rec.Item, nil, nil)
		}
		freeBatch(b)
	}
	if err := s.sink.Close(context.WithoutCancel(s.ctx), s.r.runErr()); err != nil && s.r.stopReason() == nil {
		s.r.stopRun(&runStop{status: report.StatusFailed, msg: fmt.Sprintf("sink %q: %v", s.name, err)})
	}
}

func (s *sinkStage) fail(in steps.Input, err error) {
	s.rep.Failed++
	s.failure(in, err, 1, report.Failed)
	s.event(report.Failed, in, nil, err, nil)
	s.r.stopRun(&runStop{status: report.StatusFailed, msg: fmt.Sprintf("sink %q: item %d (%s): %v", s.name, in.Index, short(s.r.red, in.Item), err)})
}

package engine

import (
	"context"
	"fmt"
	"time"

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
	sink    steps.Sink
	batches int // batches written through BatchSink
}

func (s *sinkStage) abort(err error) { s.sink.Close(context.Background(), err) }

// BatchSink is a sink that can write a run of records in one call (print):
// the engine hands it each batch whole instead of paying the sink's lock and
// its own per-item bookkeeping for every record. WriteBatch writes recs in
// order and returns how many it wrote; when that is fewer than len(recs),
// err is the failure of recs[n] (or ctx's error: a sink should stop at the
// next record once ctx is done, which cancels recs[n]), and the engine
// takes the rest one by one.
type BatchSink interface {
	WriteBatch(ctx context.Context, recs []steps.Record) (n int, err error)
}

func (s *sinkStage) exec() {
	bs, _ := s.sink.(BatchSink)
	if s.when != nil || s.r.timeAll {
		// `when:` decides per item; a clock other than Real times every
		// item's write.
		bs = nil
	}
	for b := range s.in {
		s.begin()
		recs := b.recs
		if bs != nil && s.ctx.Err() == nil {
			recs = s.writeBatch(bs, recs)
		}
		for _, rec := range recs {
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

// writeBatch writes recs through a BatchSink and accounts for them, and
// returns those left to take one by one: after a failed record, what
// follows it (cancelled, since the failure stops the run).
func (s *sinkStage) writeBatch(bs BatchSink, recs []steps.Record) []steps.Record {
	// One write in sampleEvery batches is timed, its time spread over its
	// records, for the latency percentiles.
	s.batches++
	timed := s.batches%sampleEvery == 1
	var start time.Time
	if timed {
		start = s.r.clk.Now()
	}
	n, err := bs.WriteBatch(s.ctx, recs)
	if timed && n > 0 {
		s.hist.record(s.r.clk.Now().Sub(start) / time.Duration(n))
	}
	s.rep.In += int64(n)
	s.rep.Succeeded += int64(n)
	if s.r.ev != nil {
		for _, rec := range recs[:n] {
			s.event(report.Succeeded, steps.Input{Index: rec.Index, Item: rec.Item}, rec.Item, nil, nil)
		}
	}
	if n >= len(recs) {
		return nil
	}
	if err == nil {
		// A sink that stopped short without saying why: take the rest
		// one by one.
		return recs[n:]
	}
	rec := recs[n]
	in := steps.Input{Index: rec.Index, Item: rec.Item}
	s.rep.In++
	if s.ctx.Err() != nil {
		s.cancelled(in, nil)
	} else {
		s.fail(in, err)
	}
	return recs[n+1:]
}

func (s *sinkStage) fail(in steps.Input, err error) {
	s.rep.Failed++
	s.failure(in, err, 1, report.Failed)
	s.event(report.Failed, in, nil, err, nil)
	s.r.stopRun(&runStop{status: report.StatusFailed, msg: fmt.Sprintf("sink %q: item %d (%s): %v", s.name, in.Index, short(s.r.red, in.Item), err)})
}

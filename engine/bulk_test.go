package engine

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/flowrun/flow/steps"
)

// A bulk source's items arrive in order, each once, each accounted, with
// an event per item when there is an event consumer, and with a `when:`
// on the source (which decides per item).
func TestBulkSourceOrderAndAccounting(t *testing.T) {
	for _, when := range []string{"", `, when: "${ item % 3 != 1 }"`} {
		for _, withEvents := range []bool{false, true} {
			col := &collector{keep: true}
			p := parse(t, fmt.Sprintf(`
version: 1
stages:
  - {name: src, source: {bulknums: 1000}%s}
  - {name: a, step: pass, workers: 4}
  - {name: out, sink: {collect: %s}}
`, when, fn(col)))
			ev, sink := eventsIf(withEvents)
			rep := runT(t, context.Background(), p, config{}, sink)
			if rep.Status != "succeeded" {
				t.Fatalf("status %s: %s", rep.Status, rep.Reason)
			}
			var want []int64
			for i := int64(0); i < 1000; i++ {
				if when == "" || i%3 != 1 {
					want = append(want, i)
				}
			}
			if len(col.recs) != len(want) {
				t.Fatalf("when %q: sink got %d items, want %d", when, len(col.recs), len(want))
			}
			for i, r := range col.recs {
				if r.Item != want[i] {
					t.Fatalf("when %q: item %d is %v, want %d", when, i, r.Item, want[i])
				}
			}
			src := rep.Stages[0]
			if src.In != 1000 || src.Succeeded != int64(len(want)) || src.Filtered != int64(1000-len(want)) {
				t.Errorf("when %q: source report %+v", when, *src)
			}
			if withEvents && ev.items["src"]["succeeded"] != int64(len(want)) {
				t.Errorf("when %q: %d succeeded events from the source, want %d", when, ev.items["src"]["succeeded"], len(want))
			}
		}
	}
}

// A run that stops (the sink fails an item) stops a bulk source: every
// item that entered the run is accounted, and the source stops emitting.
func TestBulkSourceStops(t *testing.T) {
	col := failingAt(500)
	p := parse(t, fmt.Sprintf(`
version: 1
stages:
  - {name: src, source: {bulknums: 10000000}}
  - {name: a, step: pass}
  - {name: out, sink: {collect: %s}}
`, fn(col)))
	rep := runT(t, context.Background(), p, config{}, nil)
	if rep.Status != "failed" {
		t.Fatalf("status %s, want failed", rep.Status)
	}
	if src := rep.Stages[0]; src.In >= 10000000 {
		t.Errorf("the source did not stop: %+v", *src)
	}
}

// A batch sink gets whole batches, every record once and in order, with
// an event per record; a record it fails fails the run, and what follows
// it is cancelled, every item accounted.
func TestBatchSink(t *testing.T) {
	for _, withEvents := range []bool{false, true} {
		col := &collector{keep: true}
		p := parse(t, fmt.Sprintf(`
version: 1
stages:
  - {name: src, source: {bulknums: 1000}}
  - {name: out, sink: {bcollect: %s}}
`, fn(col)))
		ev, sink := eventsIf(withEvents)
		rep := runT(t, context.Background(), p, config{}, sink)
		if rep.Status != "succeeded" || len(col.recs) != 1000 || col.batches.Load() == 0 {
			t.Fatalf("status %s, %d records in %d batches", rep.Status, len(col.recs), col.batches.Load())
		}
		for i, r := range col.recs {
			if r.Item != int64(i) {
				t.Fatalf("record %d is %v", i, r.Item)
			}
		}
		if out := rep.Stages[1]; out.In != 1000 || out.Succeeded != 1000 {
			t.Errorf("sink report %+v", *out)
		}
		if withEvents && ev.items["out"]["succeeded"] != 1000 {
			t.Errorf("%d succeeded events from the sink, want 1000", ev.items["out"]["succeeded"])
		}
	}

	col := failingAt(300)
	p := parse(t, fmt.Sprintf(`
version: 1
stages:
  - {name: src, source: {bulknums: 100000}}
  - {name: out, sink: {bcollect: %s}}
`, fn(col)))
	rep := runT(t, context.Background(), p, config{}, nil)
	out := rep.Stages[1]
	if rep.Status != "failed" || out.Failed != 1 || out.Succeeded != 300 || col.count.Load() != 300 {
		t.Fatalf("status %s, sink report %+v, %d written", rep.Status, *out, col.count.Load())
	}
	if len(rep.Failures) != 1 || rep.Failures[0].Index != 300 {
		t.Errorf("failures %+v, want item 300", rep.Failures)
	}
}

// A worker publishes its progress through a chunk of fast items every
// publishEvery items (not after each): an item that hangs holds back at
// most publishEvery-1 finished results before it, in input and in
// completion order.
func TestHungItemHoldsBackFewResults(t *testing.T) {
	for _, order := range []string{"input", "completion"} {
		col := &collector{}
		const hung = 3000
		release := make(chan struct{})
		step := steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
			if in.Index == hung {
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
			return in.Item, nil
		})
		p := parse(t, fmt.Sprintf(`
version: 1
stages:
  - {name: src, source: {nums: 4000}}
  - {name: a, step: fn, with: {fn: %s}, workers: 1, order: %s}
  - {name: out, sink: {collect: %s}}
`, fn(step), order, fn(col)))
		done := make(chan struct{})
		go func() {
			defer close(done)
			runT(t, context.Background(), p, config{}, nil)
		}()
		// Generous: only a broken build waits this long.
		guard := time.After(20 * time.Second)
		for col.count.Load() < hung-publishEvery+1 {
			select {
			case <-guard:
				close(release)
				<-done
				t.Fatalf("order %s: the sink got %d results while item %d hung, want at least %d", order, col.count.Load(), hung, hung-publishEvery+1)
			case <-time.After(time.Millisecond):
			}
		}
		close(release)
		<-done
		if col.count.Load() != 4000 {
			t.Fatalf("order %s: the sink got %d of 4000", order, col.count.Load())
		}
	}
}

// failingAt is a sink that fails the record of item index, as a full disk
// would, and takes the others.
func failingAt(index int64) *collector {
	return &collector{writeErr: func(r steps.Record) error {
		if r.Index == index {
			return errors.New("disk full")
		}
		return nil
	}}
}

// eventsIf is a counting event consumer when with is set, and none (a nil
// EventSink, not a nil pointer in one) otherwise.
func eventsIf(with bool) (*countingEvents, EventSink) {
	if !with {
		return nil, nil
	}
	ev := newCountingEvents()
	return ev, ev
}

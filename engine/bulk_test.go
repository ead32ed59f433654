package engine

import (
	"context"
	"errors"
	"fmt"
	"testing"

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
			var ev *countingEvents
			var sink EventSink
			if withEvents {
				ev = newCountingEvents()
				sink = ev
			}
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
	col := &collector{writeErr: func(r steps.Record) error {
		if r.Index == 500 {
			return errors.New("disk full")
		}
		return nil
	}}
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

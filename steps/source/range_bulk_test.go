package source

import (
	"context"
	"errors"
	"testing"

	"github.com/flowrun/flow/engine"
)

// collectBulk gathers what ItemsBulk hands over, copying each slice out as
// the engine does (the source reuses it).
func collectBulk(t *testing.T, src any) []any {
	t.Helper()
	bs, ok := src.(engine.BulkSource)
	if !ok {
		t.Fatalf("%T is not an engine.BulkSource: the engine would take its items one by one", src)
	}
	var out []any
	if err := bs.ItemsBulk(context.Background(), func(items []any) error {
		out = append(out, items...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// The bulk path yields exactly what Items yields, across block boundaries,
// counting down, and at the ends of int64.
func TestRangeBulkMatchesItems(t *testing.T) {
	for _, src := range []string{
		`range: {from: 1, to: 5}`,
		`range: {from: 1, to: 128}`,
		`range: {from: 1, to: 129}`,
		`range: {from: 0, to: 1000, step: 7}`,
		`range: {from: 300, to: -300, step: -3}`,
		`range: {from: 5, to: 1}`,
		`range: {from: 9223372036854775805, to: 9223372036854775807}`,
		`range: {from: -9223372036854775807, to: -9223372036854775808, step: -1}`,
		`range: {from: 0, to: 9223372036854775807, step: 9223372036854775807}`,
	} {
		s := mustBuild(t, src, nil)
		want := mustCollect(t, s)
		got := collectBulk(t, s)
		if len(got) != len(want) {
			t.Fatalf("%s: bulk gave %d items, Items %d", src, len(got), len(want))
		}
		eq(t, got, want)
	}
}

// A consumer's error stops the bulk path at once, and a cancelled context
// stops it before the next block.
func TestRangeBulkStops(t *testing.T) {
	s := mustBuild(t, `range: {from: 1, to: 10000000}`, nil).(engine.BulkSource)
	calls := 0
	err := s.ItemsBulk(context.Background(), func(items []any) error {
		calls++
		return errStop
	})
	if !errors.Is(err, errStop) || calls != 1 {
		t.Fatalf("after the emit error: err %v, %d calls; want errStop after 1", err, calls)
	}
	ctx, cancel := context.WithCancel(context.Background())
	calls = 0
	err = s.ItemsBulk(ctx, func(items []any) error {
		calls++
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) || calls != 1 {
		t.Fatalf("after cancel: err %v, %d calls; want context.Canceled after 1", err, calls)
	}
}

// The numbers of the bulk path are boxed from slabs, not allocated one by
// one (Go boxes only 0 to 255 for free).
func TestRangeBulkBoxesFromSlabs(t *testing.T) {
	s := mustBuild(t, `range: {from: 1000, to: 9191}`, nil).(engine.BulkSource)
	var last any
	allocs := testing.AllocsPerRun(5, func() {
		if err := s.ItemsBulk(context.Background(), func(items []any) error {
			last = items[len(items)-1]
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	})
	// 8,192 numbers: two slabs and the batch slice, not thousands.
	if allocs > 8 {
		t.Errorf("%v allocations for 8,192 numbers", allocs)
	}
	if last != int64(9191) {
		t.Errorf("last number %#v, want int64(9191)", last)
	}
}

package compute

import (
	"context"
	"reflect"
	"runtime"
	"testing"

	"github.com/flowrun/flow/steps"
)

// The mappings and lists a compute value builds are converted as they are
// built, not copied again; what an expression returns may be shared (vars,
// the item), so it is still copied: changing a result never changes vars,
// the item, or another item's result.
func TestComputeResultsShareNothing(t *testing.T) {
	env := &steps.Env{Vars: map[string]any{
		"table": map[string]any{"a": []any{int64(1), map[string]any{"b": int64(2)}}},
		"list":  []any{int64(3), []any{int64(4)}},
	}}
	s, err := build(t, `value: {t: "${ vars.table }", l: "${ vars.list }", it: "${ item }", nest: [{x: "${ vars.list }"}, "${ item.k }"], n: 1}`, env)
	if err != nil {
		t.Fatal(err)
	}
	mkItem := func() map[string]any { return map[string]any{"k": []any{int64(5)}} }
	item := mkItem()
	first, err := s.Do(context.Background(), steps.Input{Item: item})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"t":    map[string]any{"a": []any{int64(1), map[string]any{"b": int64(2)}}},
		"l":    []any{int64(3), []any{int64(4)}},
		"it":   map[string]any{"k": []any{int64(5)}},
		"nest": []any{map[string]any{"x": []any{int64(3), []any{int64(4)}}}, []any{int64(5)}},
		"n":    int64(1),
	}
	if !reflect.DeepEqual(first, want) {
		t.Fatalf("got  %#v\nwant %#v", first, want)
	}
	second, _ := s.Do(context.Background(), steps.Input{Item: mkItem()})

	// Change every container of the first result, at every depth.
	var scribble func(v any)
	scribble = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				scribble(e)
				x[k] = "changed"
			}
			x["added"] = true
		case []any:
			for i, e := range x {
				scribble(e)
				x[i] = "changed"
			}
		}
	}
	scribble(first)

	if !reflect.DeepEqual(env.Vars, map[string]any{
		"table": map[string]any{"a": []any{int64(1), map[string]any{"b": int64(2)}}},
		"list":  []any{int64(3), []any{int64(4)}},
	}) {
		t.Errorf("changing a result changed vars: %#v", env.Vars)
	}
	if !reflect.DeepEqual(item, mkItem()) {
		t.Errorf("changing a result changed the item: %#v", item)
	}
	if !reflect.DeepEqual(second, want) {
		t.Errorf("changing a result changed another item's result: %#v", second)
	}
}

// An int becomes the int64 of the same value (sharing its boxed bytes on
// 64-bit machines), whatever the value, and stays that after collections.
func TestJSONValueInts(t *testing.T) {
	vals := []int{0, 1, -1, 255, 256, 1000, -1000, 1 << 40, -(1 << 40), 1<<62 + 12345}
	var got []any
	for _, n := range vals {
		got = append(got, JSONValue(n))
	}
	runtime.GC()
	for i, n := range vals {
		if x, ok := got[i].(int64); !ok || x != int64(n) {
			t.Errorf("JSONValue(%d) = %#v, want int64(%d)", n, got[i], n)
		}
	}
	s := mustBuild(t, `value: "${ item * 1000 + 7 }"`)
	v, err := do(t, s, int64(12))
	if v != any(int64(12007)) || err != nil {
		t.Fatalf("got %#v, %v", v, err)
	}
}

package tmpl_test

import (
	"reflect"
	"testing"

	"github.com/flowrun/flow/tmpl"
)

// EvalConv applies conv to each expression's and literal's value, once,
// and not to the mappings and lists the template builds around them.
func TestEvalConvLeaves(t *testing.T) {
	tp, err := tmpl.FromNode(node(t, `{a: "${ item }", b: ["x ${ item }", 2, "${ [item] }"], c: {d: null}}`))
	if err != nil {
		t.Fatal(err)
	}
	var seen []any
	got, err := tp.EvalConv(&tmpl.Scope{Item: int64(1)}, func(v any) any {
		seen = append(seen, v)
		return []any{"conv", v}
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"a": []any{"conv", int64(1)},
		"b": []any{[]any{"conv", "x 1"}, []any{"conv", int64(2)}, []any{"conv", []any{int64(1)}}},
		"c": map[string]any{"d": []any{"conv", nil}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %#v\nwant %#v", got, want)
	}
	if len(seen) != 5 {
		t.Fatalf("conv saw %d values, want the 5 leaves: %#v", len(seen), seen)
	}
	// A scalar template is one leaf.
	single, _ := tmpl.Compile("${ item * 2 }")
	if v, _ := single.EvalConv(&tmpl.Scope{Item: int64(2)}, func(v any) any { return []any{v} }); !reflect.DeepEqual(v, []any{4}) {
		t.Fatalf("scalar: got %#v", v)
	}
}

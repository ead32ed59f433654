package barrier

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/steps/steptest"
)

func kind(t *testing.T, name string) *steps.Kind {
	t.Helper()
	return steptest.Kind(t, Register, name)
}

// options parses a 'with:' block; "" means no 'with:' at all.
func options(t *testing.T, with string) *yaml.Node {
	t.Helper()
	if with == "" {
		return nil
	}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(with), &doc); err != nil {
		t.Fatal(err)
	}
	return doc.Content[0]
}

func build(t *testing.T, name, with string) steps.Barrier {
	t.Helper()
	env := &steps.Env{Vars: map[string]any{"w": int64(-1)}}
	v, err := kind(t, name).Build(options(t, with), &conf.Context{Vars: env.Vars}, env)
	if err != nil {
		t.Fatalf("build %s %s: %v", name, with, err)
	}
	return v.Barrier
}

func check(t *testing.T, name, with string) conf.Diags {
	t.Helper()
	return kind(t, name).Check(options(t, with), &conf.Context{})
}

// run adds the items in order and returns the indexes Flush emits.
func run(t *testing.T, b steps.Barrier, items ...any) []int64 {
	t.Helper()
	for i, it := range items {
		if err := b.Add(steps.Input{Index: int64(i), Item: it}); err != nil {
			t.Fatalf("Add %d: %v", i, err)
		}
	}
	var got []int64
	if err := b.Flush(context.Background(), func(in steps.Input) error {
		if fmt.Sprint(in.Item) != fmt.Sprint(items[in.Index]) { // Sprint: NaN is not DeepEqual to itself
			t.Errorf("item %d emitted as %v, added as %v", in.Index, in.Item, items[in.Index])
		}
		got = append(got, in.Index)
		return nil
	}); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	return got
}

func eq(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got  %v\n want %v", what, got, want)
	}
}

func rec(k any, tag string) any { return map[string]any{"k": k, "tag": tag} }

func TestSortStable(t *testing.T) {
	items := []any{rec(int64(2), "a"), rec(int64(1), "b"), rec(int64(2), "c"), rec(int64(3), "d"), rec(int64(1), "e"), rec(2.0, "f")}
	eq(t, "asc", run(t, build(t, "sort", `by: "${ item.k }"`), items...), []int64{1, 4, 0, 2, 5, 3})
	// Descending keeps ties in arrival order too: it is not a reversed ascending sort.
	eq(t, "desc", run(t, build(t, "sort", "by: \"${ item.k }\"\ndesc: true"), items...), []int64{3, 0, 2, 5, 1, 4})
	eq(t, "vars in by", run(t, build(t, "sort", `by: "${ item.k * vars.w }"`), items...), []int64{3, 0, 2, 5, 1, 4})
	eq(t, "item itself", run(t, build(t, "sort", ""), "b", "a", "c", "a"), []int64{1, 3, 0, 2})
	eq(t, "two-level key", run(t, build(t, "sort", `by: "${ [item.k, item.tag] }"`),
		rec(int64(2), "z"), rec(int64(1), "y"), rec(int64(2), "a")), []int64{1, 2, 0})
}

func TestSortMixedTypes(t *testing.T) {
	items := []any{"b", int64(2), nil, true, 1.5, "a", false, []any{int64(1)}, map[string]any{"a": int64(1)}, int64(-3), "", []any{}, math.NaN()}
	got := run(t, build(t, "sort", ""), items...)
	want := []int64{2, 6, 3, 12, 9, 4, 1, 10, 5, 0, 11, 7, 8}
	eq(t, "mixed", got, want)
}

func TestCompareNumbersExactly(t *testing.T) {
	big := int64(1<<53 + 1)
	cases := []struct {
		a, b any
		want int
	}{
		{big, float64(1 << 53), 1},
		{float64(1 << 53), big, -1},
		{int64(3), 3.0, 0},
		{int64(3), 3.5, -1},
		{int64(-3), -3.5, 1},
		{int64(math.MaxInt64), math.Inf(1), -1},
		{int64(math.MinInt64), math.Inf(-1), 1},
		{int64(0), math.NaN(), 1},
		{"a", "b", -1},
		{[]any{int64(1)}, []any{int64(1), nil}, -1},
		{time.Unix(1, 0), time.Unix(2, 0), -1},
		{time.Unix(2, 0), "a", -1},
		{normalizeKey(int(5)), normalizeKey(uint8(5)), 0},
		{normalizeKey(time.Second), int64(1e9), 0},
		{normalizeKey([]string{"a"}), []any{"a"}, 0},
	}
	for _, c := range cases {
		if got := compare(c.a, c.b); got != c.want {
			t.Errorf("compare(%v, %v) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}

// top must give exactly what a stable sort cut at n gives, whatever the
// keys, ties and direction.
func TestTopMatchesSort(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 200; round++ {
		items := make([]any, r.IntN(60))
		for i := range items {
			items[i] = rec(int64(r.IntN(8)), "")
		}
		n := 1 + r.IntN(12)
		for _, desc := range []string{"false", "true"} {
			opts := "by: \"${ item.k }\"\ndesc: " + desc
			sorted := run(t, build(t, "sort", opts), items...)
			want := sorted[:min(n, len(sorted))]
			got := run(t, build(t, "top", opts+"\nn: "+itoa(n)), items...)
			if len(want) == 0 {
				want = nil
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("round %d, n %d, desc %s:\n top  %v\n sort %v", round, n, desc, got, want)
			}
		}
	}
}

func itoa(n int) string {
	b, _ := yaml.Marshal(n)
	return strings.TrimSpace(string(b))
}

func TestTopBoundedMemory(t *testing.T) {
	b := build(t, "top", "n: 3\nby: \"${ item }\"\ndesc: true")
	tp := b.(*topper)
	for i := 0; i < 10000; i++ {
		if err := b.Add(steps.Input{Index: int64(i), Item: int64(i % 97)}); err != nil {
			t.Fatal(err)
		}
		if len(tp.kept.es) > 3 {
			t.Fatalf("holding %d items with n: 3", len(tp.kept.es))
		}
	}
	var got []any
	b.Flush(context.Background(), func(in steps.Input) error { got = append(got, in.Item); return nil })
	eq(t, "top 3 of 10000", got, []any{int64(96), int64(96), int64(96)})
}

func TestTopWithoutBy(t *testing.T) {
	eq(t, "first n", run(t, build(t, "top", "n: 2"), "c", "a", "b"), []int64{0, 1})
	eq(t, "fewer than n", run(t, build(t, "top", "n: 5"), "c", "a"), []int64{0, 1})
	eq(t, "no items", run(t, build(t, "top", "n: 5")), []int64(nil))
}

func TestOptionsChecked(t *testing.T) {
	for _, c := range []struct{ name, with, want string }{
		{"top", "n: 0", "at least 1"},
		{"top", "by: x", `missing required key "n"`},
		{"top", "n: 2\ndesc: yes please", "true or false"},
		{"sort", "order: desc", `unknown key "order"`},
		{"sort", `by: "${ item. }"`, "expression"},
	} {
		ds := check(t, c.name, c.with)
		if !strings.Contains(ds.Error(), c.want) {
			t.Errorf("%s %q: diagnostics %q, want %q", c.name, c.with, ds, c.want)
		}
	}
	if ds := check(t, "sort", ""); len(ds) > 0 {
		t.Errorf("sort without options refused: %v", ds)
	}
}

func TestKeyErrorNamesItem(t *testing.T) {
	b := build(t, "sort", `by: "${ item.a.b }"`)
	err := b.Add(steps.Input{Index: 7, Item: map[string]any{"a": "text"}})
	if err == nil || !strings.Contains(err.Error(), "item 7") {
		t.Fatalf("key error %v does not name the item", err)
	}
}

var errStop = errors.New("downstream stopped")

func TestFlushStops(t *testing.T) {
	for _, name := range []string{"sort", "top"} {
		with := ""
		if name == "top" {
			with = "n: 10"
		}
		b := build(t, name, with)
		for i := 0; i < 5; i++ {
			b.Add(steps.Input{Index: int64(i), Item: int64(i)})
		}
		n := 0
		err := b.Flush(context.Background(), func(steps.Input) error { n++; return errStop })
		if !errors.Is(err, errStop) || n != 1 {
			t.Errorf("%s: Flush gave %v after %d items; want the emit error after 1", name, err, n)
		}
	}
	b := build(t, "sort", "")
	b.Add(steps.Input{Item: int64(1)})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Flush(ctx, func(steps.Input) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("Flush on a cancelled context: %v", err)
	}
}

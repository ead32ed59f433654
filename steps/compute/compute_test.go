package compute

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/steps/steptest"
)

func build(t *testing.T, with string, env *steps.Env) (steps.Step, error) {
	t.Helper()
	if env == nil {
		env = &steps.Env{Workers: 1}
	}
	v, err := steptest.Build(t, Register, "compute", steptest.Node(t, with), env)
	if err != nil {
		return nil, err
	}
	return v.(steps.Step), nil
}

func mustBuild(t *testing.T, with string) steps.Step {
	t.Helper()
	s, err := build(t, with, nil)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	return s
}

func do(t *testing.T, s steps.Step, item any) (any, error) {
	t.Helper()
	return s.Do(context.Background(), steps.Input{Index: 7, Item: item})
}

func TestComputeShapes(t *testing.T) {
	s := mustBuild(t, `
value:
  n: "${ item }"
  double: "${ item * 2 }"
  half: "${ item / 2 }"
  label: "item ${ index }: ${ item }"
  list: ["${ item }", 2, true, null]
  range: "${ 1..3 }"
  primes: "${ count_primes(item) }"
  literal: 1.5
`)
	got, err := do(t, s, int64(100))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"n": int64(100), "double": int64(200), "half": 50.0, "label": "item 7: 100",
		"list": []any{int64(100), int64(2), true, nil}, "range": []any{int64(1), int64(2), int64(3)},
		"primes": int64(25), "literal": 1.5,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %#v\nwant %#v", got, want)
	}
}

// The guide's count_primes over ProcessPoolExecutor.
func TestComputeCountPrimesGuide(t *testing.T) {
	s := mustBuild(t, `value: "${ count_primes(item) }"`)
	for n, want := range map[int64]int64{1_000_000: 78498, 4_000_000: 283146} {
		got, err := do(t, s, n)
		if err != nil || got != want {
			t.Errorf("count_primes(%d) = %v, %v; want %d", n, got, err, want)
		}
	}
}

// The guide's divide example: 10/2 = 5, 5/0 raises "cannot divide by zero",
// 8/4 = 2.
func TestComputeDivideGuide(t *testing.T) {
	s := mustBuild(t, `value: "${ item.b == 0 ? fail('cannot divide by zero') : item.a / item.b }"`)
	cases := []struct {
		a, b int64
		want any
		err  string
	}{{10, 2, 5.0, ""}, {5, 0, nil, "cannot divide by zero"}, {8, 4, 2.0, ""}}
	for _, c := range cases {
		got, err := do(t, s, map[string]any{"a": c.a, "b": c.b})
		if c.err != "" {
			if err == nil || err.Error() != c.err {
				t.Errorf("%d/%d: got %v, %v; want error %q", c.a, c.b, got, err, c.err)
			}
			var se *steps.Error
			if !errors.As(err, &se) || se.Class != "error" || se.Permanent {
				t.Errorf("fail() error should be a retryable steps.Error of class error, got %#v", err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%d/%d = %v, %v; want %v", c.a, c.b, got, err, c.want)
		}
	}
}

func TestComputeErrorsArePermanent(t *testing.T) {
	s := mustBuild(t, `value: "${ item.x + 1 }"`)
	_, err := do(t, s, "not a map")
	var se *steps.Error
	if !errors.As(err, &se) || !se.Permanent || !strings.Contains(err.Error(), "item.x") {
		t.Fatalf("want a permanent error naming the expression, got %#v", err)
	}
	s = mustBuild(t, `value: "${ len(1..1000000000000) }"`)
	_, err = do(t, s, 1)
	if err == nil || !strings.Contains(err.Error(), "too large") {
		t.Fatalf("huge range: got %v", err)
	}
}

func TestComputeSleepCancelled(t *testing.T) {
	s := mustBuild(t, `value: "${ sleep('1h') ?? item }"`)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.Do(ctx, steps.Input{Item: 1})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	got, err := mustBuild(t, `value: "${ sleep(0) ?? item }"`).Do(context.Background(), steps.Input{Item: "x"})
	if err != nil || got != "x" {
		t.Fatalf("sleep(0) ?? item = %v, %v", got, err)
	}
}

func TestComputeVarsEnv(t *testing.T) {
	env := &steps.Env{Vars: map[string]any{"prices": map[string]any{"AAPL": 1.5}}, Env: map[string]string{"HOME": "/h"}}
	s, err := build(t, `value: {symbol: "${ item }", price: "${ vars.prices[item] }", home: "${ env.HOME }"}`, env)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Do(context.Background(), steps.Input{Item: "AAPL"})
	want := map[string]any{"symbol": "AAPL", "price": 1.5, "home": "/h"}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %#v, %v", got, err)
	}
}

func TestComputeOptionErrors(t *testing.T) {
	for _, c := range []struct{ with, want string }{
		{`{}`, `missing required key "value"`},
		{`value: "${ sleep(true) }"`, "sleep"},
		{`value: "${ item + }"`, "expression"},
		{`valeu: 1`, `unknown key "valeu"`},
	} {
		_, err := build(t, c.with, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %q", c.with, err, c.want)
		}
	}
}

// Each item gets its own mapping even when the value is constant, so a
// later stage that modifies one result does not change the others.
func TestComputeConstantCopies(t *testing.T) {
	s := mustBuild(t, `value: {a: 1}`)
	a, _ := do(t, s, 1)
	b, _ := do(t, s, 2)
	a.(map[string]any)["a"] = 2
	if b.(map[string]any)["a"] != int64(1) {
		t.Fatal("results share a map")
	}
}

func TestJSONValue(t *testing.T) {
	type pt struct{ X int }
	big := json.Number("123456789012345678901234567890") // from a JSON body, see steps.JSONNumbers
	got := JSONValue(map[string]any{"ints": []int{1, 2}, "u": uint8(3), "f": float32(0.5), "p": &pt{X: 4}, "m": map[int]string{1: "a"}, "big": big})
	want := map[string]any{"ints": []any{int64(1), int64(2)}, "u": int64(3), "f": 0.5, "p": map[string]any{"X": int64(4)}, "m": map[string]any{"1": "a"}, "big": big}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %#v", got)
	}
}

func BenchmarkComputeSimple(b *testing.B) {
	var doc yaml.Node
	_ = yaml.Unmarshal([]byte(`value: {n: "${ item }", sq: "${ item * item }"}`), &doc)
	r := steps.NewRegistry()
	Register(r)
	k, _ := r.Lookup("compute")
	v, err := k.Build(doc.Content[0], nil, &steps.Env{})
	if err != nil {
		b.Fatal(err)
	}
	s := v.Step
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := s.Do(ctx, steps.Input{Index: int64(i), Item: int64(i)}); err != nil {
			b.Fatal(err)
		}
	}
}

func TestComputeBudgetAndDivisionErrors(t *testing.T) {
	for with, class := range map[string]string{
		`{value: "${ repeat(item.s, item.n) }"}`: "too_large",
		`{value: "${ item.n / item.z }"}`:        "error",
	} {
		_, err := do(t, mustBuild(t, with), map[string]any{"s": strings.Repeat("x", 20000), "n": int64(1000000), "z": int64(0)})
		var se *steps.Error
		if !errors.As(err, &se) || se.Class != class || !se.Permanent {
			t.Errorf("%s: want a permanent %s error, got %#v", with, class, err)
		}
	}
}

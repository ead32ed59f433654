package tmpl

import (
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// fastExprs are expressions the fast path must compile: every operator it
// covers, mixed with index, literals of both kinds, and the guard calls the
// patcher puts in place of + / % when an operand's type is unknown.
var fastExprs = []string{
	"item", "index", "+item", "-item", "-(-item)", "-index", "- -index",
	"item * 2", "item + 1", "item - 1", "2 * item + 1", "item * -3", "-item * 2",
	"item * 0.5", "1.5 * item - index", "(item + 1) * (item - 1)",
	"item + item", "item - item", "item * item", "index * 10", "index + 1", "index - item",
	"item / 2", "item / item", "item / (item - item)", "2 / item", "index / 4", "item / index",
	"item % 3", "item % 3 == 0", "item % -1", "item % item", "index % 7", "index % item",
	"item ** 2", "item ^ 0.5", "item ** item", "index ** -1", "2 ** index",
	"item == item", "item != 1", "item == 2.5", "item < 2", "item <= 2.5", "item > -1", "item >= index",
	"index == 3", "index != 3", "-index == -3", "-index != index", "-index == 3 - 6", "index + 1 == 4", "index * 2 == 6", "item % 3 != 1", "index % 2 == 0",
	"item > 5 && item < 100", "item > 0 || item < -5", "!(item > 3)", "not (item < 0)", "item and true",
	"item > 1 && item", "item < 0 || item", "true && item", "false || item * 2", "!item", "item || false",
	"9223372036854775807 + item", "item * 4611686018427387904", "item + 0.1 == 0.30000000000000004",
}

// zeroDivisors compile for the fast path, which always leaves them to the
// guards' errors.
var zeroDivisors = []string{"item / 0", "item / 0.0", "index / 0", "item % 0", "index % 0"}

// slowExprs stay with the VM: other names, other nodes.
var slowExprs = []string{
	"item.x", "vars.n * 2", "len(item)", "item > 5 ? 1 : 0", "item ?? 0", "\"a\" + item",
	"abs(item)", "let x = item; x * 2", "item in [1, 2]", "[item][0] * 2", "item + \"\"",
	// The VM pushes one constant for 0.0 and -0.0, whichever came first.
	"0.0 * (-0.0 * item)", "-0.0 * item + 0.0",
}

var fastItems = []any{
	0, 1, -1, 2, 3, 7, 100, math.MaxInt, math.MinInt, math.MaxInt/2 + 1, -(1 << 62) - 1,
	int64(0), int64(3), int64(-7), int64(math.MaxInt64), int64(math.MinInt64), int64(1 << 62),
	0.0, math.Copysign(0, -1), 0.5, 2.5, -3.0, 1e300, math.NaN(), math.Inf(1), math.Inf(-1),
	"3", "", nil, true, false, int8(3), int32(-2), uint(3), uint64(math.MaxUint64), float32(1.5),
	map[string]any{"x": 1}, []any{1},
}

var fastIndexes = []int64{0, 3, -1, math.MaxInt64, math.MinInt64}

// viaVM evaluates t the way it was before the fast path existed.
func viaVM(t *T, s *Scope) (any, error) {
	u := *t
	u.fast = nil
	return u.Eval(s)
}

// same reports whether a and b are the same value of the same Go type,
// NaN equal to NaN and -0 different from 0.
func same(a, b any) bool {
	if reflect.TypeOf(a) != reflect.TypeOf(b) {
		return false
	}
	if fa, ok := a.(float64); ok {
		fb := b.(float64)
		return math.IsNaN(fa) && math.IsNaN(fb) || math.Float64bits(fa) == math.Float64bits(fb)
	}
	return reflect.DeepEqual(a, b)
}

// checkFast compares the fast path with the VM on one scope: where the fast
// path answers, the VM must give the same value without an error.
func checkFast(t *testing.T, tp *T, src string, s *Scope) bool {
	t.Helper()
	got, ok := tp.evalFast(s)
	want, err := viaVM(tp, s)
	if !ok {
		return false
	}
	if err != nil {
		t.Errorf("%s with item %#v, index %d: fast path gave %#v, the VM failed: %v", src, s.Item, s.Index, got, err)
	} else if !same(got, want) {
		t.Errorf("%s with item %#v, index %d: fast path gave %#v (%T), the VM %#v (%T)", src, s.Item, s.Index, got, got, want, want)
	}
	return true
}

func TestFastPathMatchesVM(t *testing.T) {
	for _, src := range fastExprs {
		tp, err := Compile("${ " + src + " }")
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		if tp.fast == nil {
			t.Errorf("%s: not compiled for the fast path", src)
			continue
		}
		taken := 0
		for _, item := range fastItems {
			for _, index := range fastIndexes {
				if checkFast(t, tp, src, &Scope{Item: item, Index: index}) {
					taken++
				}
			}
		}
		if taken == 0 {
			t.Errorf("%s: the fast path never answered", src)
		}
	}
	for _, src := range zeroDivisors {
		tp, err := Compile("${ " + src + " }")
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		for _, item := range fastItems {
			if _, ok := tp.evalFast(&Scope{Item: item}); ok {
				t.Errorf("%s with item %#v: the fast path answered a division by zero", src, item)
			}
		}
	}
	for _, src := range slowExprs {
		tp, err := Compile("${ " + src + " }")
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		if tp.fast != nil {
			t.Errorf("%s: compiled for the fast path, which does not cover it", src)
		}
	}
}

// The fast path declines where the VM fails, so errors keep their words.
func TestFastPathLeavesErrorsToVM(t *testing.T) {
	for _, c := range []struct {
		src  string
		item any
		want string
	}{
		{"item / 0", int64(3), "division by zero"},
		{"item % 0", 3, "integer modulo by zero"},
		{"item % 2", 2.5, "%"},
		{"item * 2", "x", "invalid operation"},
		{"!item", int64(1), "bool"},
		{"item && item > 1", 1.5, "bool"},
		{"-item", true, "invalid operation"},
	} {
		tp, err := Compile("${ " + c.src + " }")
		if err != nil {
			t.Fatal(err)
		}
		_, err = tp.Eval(&Scope{Item: c.item})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s with %#v: error %v, want one saying %q", c.src, c.item, err, c.want)
		}
	}
}

// The process-mode benchmark's template must keep taking the fast path,
// through the way compute compiles it (a YAML node) and EvalConv, and as a
// leaf of a mapping.
func TestFastPathTaken(t *testing.T) {
	hits := 0
	onFast = func() { hits++ }
	defer func() { onFast = nil }()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(`[ "${ item * 2 }", {n: "${ item * 2 }", s: "${ item }!"} ]`), &doc); err != nil {
		t.Fatal(err)
	}
	seq := doc.Content[0]
	one, err := FromNode(seq.Content[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, item := range []any{21, int64(21)} {
		hits = 0
		v, err := one.EvalConv(&Scope{Item: item}, func(v any) any { return fmt.Sprintf("%T %v", v, v) })
		if err != nil || v != "int 42" || hits != 1 {
			t.Errorf("item %#v: got %v, %v with %d fast evaluations, want \"int 42\" with 1", item, v, err, hits)
		}
	}
	hits = 0
	if v, err := one.Eval(&Scope{Item: "21"}); err == nil || hits != 0 {
		t.Errorf("a string item: got %v, %v with %d fast evaluations, want the VM's error", v, err, hits)
	}
	m, err := FromNode(seq.Content[1])
	if err != nil {
		t.Fatal(err)
	}
	hits = 0
	v, err := m.Eval(&Scope{Item: int64(4)})
	if err != nil || !reflect.DeepEqual(v, map[string]any{"n": 8, "s": "4!"}) || hits != 1 {
		t.Errorf("a mapping: got %#v, %v with %d fast evaluations, want n: 8 from the fast path", v, err, hits)
	}
}

// FuzzFastPath builds an expression from the bytes of prog with a small
// grammar over the fast path's operators and compares the fast path with
// the VM on items made of the other arguments.
func FuzzFastPath(f *testing.F) {
	f.Add([]byte{2, 2, 0, 0, 0, 5}, int64(3), 2.5, int64(1))                                    // item * 2
	f.Add([]byte{2, 10, 2, 4, 0, 0, 0, 6, 0, 3}, int64(math.MinInt64), math.NaN(), int64(-1))   // item % 3 == 0
	f.Add([]byte{2, 3, 1, 0, 0, 1, 0, 0}, int64(0), math.Copysign(0, -1), int64(math.MaxInt64)) // -index / item
	f.Add([]byte{2, 12, 2, 7, 0, 0, 0, 6, 2, 8, 0, 0, 0, 10}, int64(5), math.Inf(1), int64(7))  // item > 3 && item <= 2.5
	f.Add([]byte{2, 5, 0, 0, 0, 9}, int64(-1), math.Inf(-1), int64(0))                          // item ** 0.5
	f.Add([]byte{2, 0, 0, 7, 0, 0}, int64(math.MaxInt64), 1e308, int64(1))                      // MaxInt64 + item
	f.Fuzz(func(t *testing.T, prog []byte, i int64, x float64, index int64) {
		src, _ := genExpr(prog, 0)
		tp, err := Compile("${ " + src + " }")
		if err != nil || tp.fast == nil {
			return // the checker refused it, or an int8 literal or the like
		}
		for _, item := range []any{i, int(i), x, i%2 == 0, "s", nil} {
			checkFast(t, tp, src, &Scope{Item: item, Index: index})
		}
	})
}

var (
	genLeaves = []string{"item", "index", "item", "0", "1", "2", "3", "9223372036854775807", "4294967296", "0.5", "2.5", "1e308", "0.0", "true", "false", "-1"}
	genBinary = []string{"+", "-", "*", "/", "%", "**", "<", ">", "<=", ">=", "==", "!=", "&&", "||"}
	genUnary  = []string{"-", "!", "+"}
)

// genExpr reads an expression from b: a byte chooses leaf, unary or binary
// operator, the next one which; depth is bounded.
func genExpr(b []byte, depth int) (string, []byte) {
	next := func() int {
		if len(b) == 0 {
			return 0
		}
		c := int(b[0])
		b = b[1:]
		return c
	}
	choice := next()
	if depth >= 4 || len(b) == 0 || choice%4 == 0 {
		return genLeaves[next()%len(genLeaves)], b
	}
	if choice%4 == 1 {
		op := genUnary[next()%len(genUnary)]
		x, rest := genExpr(b, depth+1)
		return op + "(" + x + ")", rest
	}
	op := genBinary[next()%len(genBinary)]
	l, rest := genExpr(b, depth+1)
	r, rest := genExpr(rest, depth+1)
	return "(" + l + ") " + op + " (" + r + ")", rest
}

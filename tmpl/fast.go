package tmpl

import (
	"math"
	"reflect"
	"strconv"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/vm"
)

// Fast path. The commonest templates of all are a little arithmetic on the
// item ("${ item * 2 }", "${ index % 3 == 0 }"), and through expr-lang's VM
// each one pays for a stack machine, a field fetched by reflection from
// Scope and every operand boxed in an interface: more than half of what a
// compute step costs per item (BenchmarkComputeDouble). So a single
// expression whose checked tree holds only item, index, number and boolean
// literals, the arithmetic and comparison operators and && || ! (with the
// guard calls __add, __div and __mod standing for + / %) is also compiled
// into a tree of closures over plain ints and floats. It gives exactly what
// the VM gives, result type included (int, int64 or float64 by expr-lang's
// rules, integers wrapping on overflow), or declines, and then the VM runs
// as before: whenever an operand is anything else (a string, null, int8, a
// mapping), a divisor is zero, or the VM would fail. So every error and its
// wording still comes from the VM and the guards alone. fast_test.go checks
// the two against each other, by table and by fuzzing.

// numKind is the Go type a value has on the VM's stack.
type numKind uint8

const (
	kInt   numKind = iota // int: what integer literals and integer arithmetic give
	kInt64                // int64: index, items, and the negation of one
	kFloat                // float64
	kBool                 // bool, in i as 0 or 1
)

// num is one value of the fast path: an int, int64, float64 or bool that
// is not boxed.
type num struct {
	i int64
	f float64
	k numKind
}

func (n num) isInt() bool { return n.k == kInt || n.k == kInt64 }

// float is the value as expr-lang's runtime converts a number to float64.
func (n num) float() float64 {
	if n.k == kFloat {
		return n.f
	}
	return float64(n.i)
}

// box is the value the VM would have returned.
func (n num) box() any {
	switch n.k {
	case kInt:
		return int(n.i)
	case kInt64:
		return n.i
	case kFloat:
		return n.f
	}
	return n.i != 0
}

// fastFn evaluates a compiled tree; false means "let the VM do it".
type fastFn func(item any, index int64) (num, bool)

// onFast, when set (by tests), is called each time the fast path answers.
var onFast func()

// evalFast is the fast path's value of t in s, if it has one.
func (t *T) evalFast(s *Scope) (any, bool) {
	if t.fast == nil {
		return nil, false
	}
	v, ok := t.fast(s.Item, s.Index)
	if ok && onFast != nil {
		onFast()
	}
	return v, ok
}

// compileFast compiles p's tree, or returns nil when the tree holds
// anything the fast path does not cover. expr-lang converts integers with
// int(x), which the fast path's int64 arithmetic matches only where int has
// 64 bits. It takes the scope's fields, not the scope: a pointer passed to
// a function value escapes, and the scope would be allocated per item.
func compileFast(p *vm.Program) func(item any, index int64) (any, bool) {
	if strconv.IntSize != 64 || p.Node() == nil {
		return nil
	}
	if isIdent(p.Node(), "item") {
		// The VM returns the item itself: boxing it again would cost
		// an allocation the VM does not make.
		return func(item any, _ int64) (any, bool) {
			_, ok := loadItem(item, 0)
			return item, ok
		}
	}
	if bothZeros(p.Node()) {
		return nil
	}
	f := fastNode(p.Node())
	if f == nil {
		return nil
	}
	return func(item any, index int64) (any, bool) {
		n, ok := f(item, index)
		if !ok {
			return nil, false
		}
		return n.box(), true
	}
}

func fastNode(n ast.Node) fastFn {
	switch n := n.(type) {
	case *ast.IdentifierNode:
		switch n.Value {
		case "item":
			return loadItem
		case "index":
			return func(_ any, index int64) (num, bool) { return num{i: index, k: kInt64}, true }
		}
	case *ast.IntegerNode:
		// What the compiler pushes depends on the type the checker gave
		// the literal (see compiler.IntegerNode).
		switch kindOf(n.Type()) {
		case reflect.Int, reflect.Interface, reflect.Invalid:
			return constant(num{i: int64(n.Value), k: kInt})
		case reflect.Int64:
			return constant(num{i: int64(n.Value), k: kInt64})
		case reflect.Float64:
			return constant(num{f: float64(n.Value), k: kFloat})
		}
	case *ast.FloatNode:
		if kindOf(n.Type()) != reflect.Float32 {
			return constant(num{f: n.Value, k: kFloat})
		}
	case *ast.BoolNode:
		return constant(boolNum(n.Value))
	case *ast.UnaryNode:
		return fastUnary(n)
	case *ast.BinaryNode:
		l, r := fastNode(n.Left), fastNode(n.Right)
		if l == nil || r == nil {
			return nil
		}
		return fastBinary(n.Operator, l, r, equalsInt(n))
	case *ast.CallNode:
		// The guards of guard.go, on numbers, are the VM's operators.
		id, ok := n.Callee.(*ast.IdentifierNode)
		if !ok {
			return nil
		}
		var op string
		args := n.Arguments
		switch {
		case id.Value == addName && len(args) == 3 && isIdent(args[0], "ctx"):
			op, args = "+", args[1:]
		case id.Value == divName && len(args) == 2:
			op = "/"
		case id.Value == modName && len(args) == 2:
			op = "%"
		default:
			return nil
		}
		l, r := fastNode(args[0]), fastNode(args[1])
		if l == nil || r == nil {
			return nil
		}
		return fastBinary(op, l, r, false)
	}
	return nil
}

// bothZeros reports whether the tree holds the float literals 0 and -0
// (the optimizer folds -0.0 to a literal). The compiler keys its constant
// pool by value, where -0 == 0, so the VM pushes whichever came first for
// both; declining is simpler than mirroring the compile order.
func bothZeros(n ast.Node) bool {
	var z zeroSigns
	ast.Walk(&n, &z)
	return z.pos && z.neg
}

type zeroSigns struct{ pos, neg bool }

func (z *zeroSigns) Visit(n *ast.Node) {
	var f float64
	switch n := (*n).(type) {
	case *ast.FloatNode:
		f = n.Value
	case *ast.IntegerNode:
		if n.Value != 0 || kindOf(n.Type()) != reflect.Float64 {
			return
		}
	default:
		return
	}
	if f != 0 {
		return
	}
	if math.Signbit(f) {
		z.neg = true
	} else {
		z.pos = true
	}
}

func kindOf(t reflect.Type) reflect.Kind {
	if t == nil {
		return reflect.Invalid
	}
	return t.Kind()
}

// equalsInt reports whether the compiler emits OpEqualInt for n, which
// asserts that both operands are ints (not int64s) rather than comparing.
func equalsInt(n *ast.BinaryNode) bool {
	simpleInt := func(x ast.Node) bool {
		t := x.Type()
		return t != nil && t.Kind() == reflect.Int && t.PkgPath() == ""
	}
	return (n.Operator == "==" || n.Operator == "!=") && simpleInt(n.Left) && simpleInt(n.Right)
}

func loadItem(item any, _ int64) (num, bool) {
	switch x := item.(type) {
	case int64:
		return num{i: x, k: kInt64}, true
	case int:
		return num{i: int64(x), k: kInt}, true
	case float64:
		return num{f: x, k: kFloat}, true
	case bool:
		return boolNum(x), true
	}
	return num{}, false
}

func constant(v num) fastFn {
	return func(any, int64) (num, bool) { return v, true }
}

func boolNum(b bool) num {
	if b {
		return num{i: 1, k: kBool}
	}
	return num{k: kBool}
}

// fastUnary mirrors runtime.Negate (which keeps the operand's type) and
// OpNot (a bool only); unary + compiles to nothing.
func fastUnary(n *ast.UnaryNode) fastFn {
	x := fastNode(n.Node)
	if x == nil {
		return nil
	}
	switch n.Operator {
	case "+":
		return x
	case "-":
		return func(item any, index int64) (num, bool) {
			v, ok := x(item, index)
			switch {
			case !ok || v.k == kBool:
				return num{}, false
			case v.k == kFloat:
				v.f = -v.f
			default:
				v.i = -v.i
			}
			return v, true
		}
	case "!", "not":
		return func(item any, index int64) (num, bool) {
			v, ok := x(item, index)
			if !ok || v.k != kBool {
				return num{}, false
			}
			v.i ^= 1
			return v, true
		}
	}
	return nil
}

// fastBinary mirrors the VM's binary operators as expr-lang's runtime
// implements them for int, int64 and float64 (vm/runtime/helpers): two
// integers combine as int, anything with a float as float64.
func fastBinary(op string, l, r fastFn, eqInt bool) fastFn {
	switch op {
	case "&&", "and", "||", "or":
		// The VM jumps on the left operand, which must be a bool, and
		// otherwise yields the right one whatever its type.
		or := op == "||" || op == "or"
		return func(item any, index int64) (num, bool) {
			a, ok := l(item, index)
			if !ok || a.k != kBool {
				return num{}, false
			}
			if (a.i != 0) == or {
				return a, true
			}
			return r(item, index)
		}
	}
	var f func(a, b num) (num, bool)
	switch op {
	case "+":
		f = arith(func(x, y int64) int64 { return x + y }, func(x, y float64) float64 { return x + y })
	case "-":
		f = arith(func(x, y int64) int64 { return x - y }, func(x, y float64) float64 { return x - y })
	case "*":
		f = arith(func(x, y int64) int64 { return x * y }, func(x, y float64) float64 { return x * y })
	case "/":
		// Always a float; a zero divisor is the guard's error.
		f = func(a, b num) (num, bool) {
			if b.float() == 0 {
				return num{}, false
			}
			return num{f: a.float() / b.float(), k: kFloat}, true
		}
	case "%":
		// Integers only; a zero divisor is the guard's error.
		f = func(a, b num) (num, bool) {
			if !a.isInt() || !b.isInt() || b.i == 0 {
				return num{}, false
			}
			return num{i: a.i % b.i, k: kInt}, true
		}
	case "**", "^":
		f = func(a, b num) (num, bool) { return num{f: math.Pow(a.float(), b.float()), k: kFloat}, true }
	case "<":
		f = compare(func(x, y int64) bool { return x < y }, func(x, y float64) bool { return x < y })
	case ">":
		f = compare(func(x, y int64) bool { return x > y }, func(x, y float64) bool { return x > y })
	case "<=":
		f = compare(func(x, y int64) bool { return x <= y }, func(x, y float64) bool { return x <= y })
	case ">=":
		f = compare(func(x, y int64) bool { return x >= y }, func(x, y float64) bool { return x >= y })
	case "==", "!=":
		eq := compare(func(x, y int64) bool { return x == y }, func(x, y float64) bool { return x == y })
		ne := op == "!="
		f = func(a, b num) (num, bool) {
			if eqInt && (a.k != kInt || b.k != kInt) {
				return num{}, false // OpEqualInt would fail its type assertion
			}
			v, ok := eq(a, b)
			v.i ^= b2i(ne)
			return v, ok
		}
	default:
		return nil
	}
	return func(item any, index int64) (num, bool) {
		a, ok := l(item, index)
		if !ok || a.k == kBool {
			return num{}, false
		}
		b, ok := r(item, index)
		if !ok || b.k == kBool {
			return num{}, false
		}
		return f(a, b)
	}
}

func arith(i func(x, y int64) int64, fl func(x, y float64) float64) func(a, b num) (num, bool) {
	return func(a, b num) (num, bool) {
		if a.k == kFloat || b.k == kFloat {
			return num{f: fl(a.float(), b.float()), k: kFloat}, true
		}
		return num{i: i(a.i, b.i), k: kInt}, true
	}
}

func compare(i func(x, y int64) bool, fl func(x, y float64) bool) func(a, b num) (num, bool) {
	return func(a, b num) (num, bool) {
		if a.k == kFloat || b.k == kFloat {
			return boolNum(fl(a.float(), b.float())), true
		}
		return boolNum(i(a.i, b.i)), true
	}
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

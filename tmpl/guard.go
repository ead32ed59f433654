package tmpl

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/builtin"
	"github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/vm/runtime"
)

// Evaluation guards. expr-lang's VM has no notion of a context and counts
// memory in elements, after the fact; an expression written against data
// (`repeat(item.s, item.n)`, `reduce(item.list, ...)`) must still stop at a
// stage timeout and must not take the process down. So every evaluation gets
// an evalCtx carrying the run's context and a byte budget, and templates are
// compiled so that:
//
//   - every closure body (map, filter, reduce, all...) first calls __live,
//     which returns the context's error once it is done: a loop ends at the
//     next element after a timeout or cancel;
//   - every expr-lang builtin is replaced by a wrapper that checks its
//     arguments' types (an error in the format's words, not Go's), the
//     context, and charges the size of its result to the budget BEFORE the
//     builtin allocates it;
//   - `+` that may join strings, `/` and `%` go through functions that do the
//     same (and refuse division by zero, like Python).

// MaxEvalBytes is the memory budget of one evaluation: the bytes that
// builtins, functions and `+` may produce, counted as they are produced
// (intermediate values included, as expr-lang's own budget counts elements).
// 256 MiB leaves room for any sensible value while keeping a stage of eight
// workers far from exhausting a machine.
const MaxEvalBytes = 256 << 20

// maxEvalBytes is MaxEvalBytes, lowered by tests.
var maxEvalBytes int64 = MaxEvalBytes

// evalCtx is the ctx an expression sees during one evaluation.
type evalCtx struct {
	context.Context
	used int64
}

// BudgetError is returned when an evaluation would go past MaxEvalBytes.
type BudgetError struct {
	Fn    string // the builtin, function or operator that asked
	Bytes int64  // what it asked for
	Used  int64  // what the evaluation had used before
}

func (e *BudgetError) Error() string {
	return fmt.Sprintf("%s would build too large a value (%s, past the memory budget of %s for one evaluation, %s used so far): work on smaller values, and join() pieces rather than adding strings with + in a loop",
		e.Fn, byteSize(e.Bytes), byteSize(maxEvalBytes), byteSize(e.Used))
}

// ZeroDivisionError is a division or modulo by zero.
type ZeroDivisionError struct{ Op string }

func (e *ZeroDivisionError) Error() string {
	if e.Op == "%" {
		return "integer modulo by zero"
	}
	return "division by zero"
}

func byteSize(n int64) string {
	switch {
	case n == math.MaxInt64:
		return "more than 8 EiB"
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

// live returns the context's error, with what was interrupted, once the
// context is done.
func live(c any, what string) error {
	ctx, ok := c.(context.Context)
	if !ok || ctx == nil {
		return nil
	}
	select {
	case <-ctx.Done():
		return fmt.Errorf("%s interrupted: %w", what, context.Cause(ctx))
	default:
		return nil
	}
}

// charge checks the context, then counts n more bytes against the budget of
// the evaluation, refusing them if they do not fit.
func charge(c any, fn string, n int64) error {
	if err := live(c, fn); err != nil {
		return err
	}
	ec, ok := c.(*evalCtx)
	if !ok {
		return nil
	}
	if n < 0 { // a sum of estimates that overflowed
		n = math.MaxInt64
	}
	if n > maxEvalBytes-ec.used {
		return &BudgetError{Fn: fn, Bytes: n, Used: ec.used}
	}
	ec.used += n
	return nil
}

// mulSize is a*b, saturated so that an overflow is still refused.
func mulSize(a, b int64) int64 {
	if a <= 0 || b <= 0 {
		return 0
	}
	if a > math.MaxInt64/b {
		return math.MaxInt64
	}
	return a * b
}

// Internal function names the patcher calls; a pipeline never needs them.
const (
	liveName = "__live"
	addName  = "__add"
	addSName = "__add_str"
	divName  = "__div"
	modName  = "__mod"
)

var (
	ctxType      = reflect.TypeOf((*context.Context)(nil)).Elem()
	durationType = reflect.TypeOf(time.Duration(0))
)

// guardOptions are the options that install the guards; they go after
// expr.WithContext, as the patcher adds the ctx argument itself.
func guardOptions() []expr.Option {
	opts := []expr.Option{
		expr.Function(liveName, func(p ...any) (any, error) {
			if err := live(p[0], "the expression"); err != nil {
				return nil, word(err)
			}
			return true, nil
		}, new(func(context.Context) bool)),
		expr.Function(addName, func(p ...any) (any, error) { v, err := add(p[0], p[1], p[2]); return v, word(err) },
			new(func(context.Context, any, any) any)),
		expr.Function(addSName, func(p ...any) (any, error) { v, err := add(p[0], p[1], p[2]); return v, word(err) },
			new(func(context.Context, string, string) string)),
		expr.Function(divName, func(p ...any) (any, error) { v, err := divide(p[0], p[1]); return v, word(err) },
			new(func(any, any) float64)),
		expr.Function(modName, func(p ...any) (any, error) { v, err := modulo(p[0], p[1]); return v, word(err) },
			new(func(any, any) int)),
	}
	for _, b := range builtin.Builtins {
		if o, ok := wrapBuiltin(b); ok {
			opts = append(opts, o)
		}
	}
	return append(opts, expr.Patch(guardPatcher{}))
}

func add(c, a, b any) (any, error) {
	if sa, ok := a.(string); ok {
		if sb, ok := b.(string); ok {
			if err := charge(c, "+", int64(len(sa))+int64(len(sb))); err != nil {
				return nil, err
			}
			return sa + sb, nil
		}
	}
	return operate("+", a, b, func() any { return runtime.Add(a, b) })
}

func divide(a, b any) (any, error) {
	if isNumber(b) && runtime.ToFloat64(b) == 0 && isNumber(a) {
		return nil, &ZeroDivisionError{Op: "/"}
	}
	return operate("/", a, b, func() any { return runtime.Divide(a, b) })
}

func modulo(a, b any) (any, error) {
	if isNumber(b) && isNumber(a) && runtime.ToInt(b) == 0 {
		return nil, &ZeroDivisionError{Op: "%"}
	}
	return operate("%", a, b, func() any { return runtime.Modulo(a, b) })
}

// operate runs an expr-lang operator, turning its Go-worded panic for
// operands it does not support into an error in the format's words.
func operate(op string, a, b any, fn func() any) (v any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s cannot combine %s and %s", op, describe(a), describe(b))
			if isNumber(a) && isNumber(b) {
				err = fmt.Errorf("%s: %v", op, r)
			}
		}
	}()
	return fn(), nil
}

func isNumber(v any) bool {
	switch v.(type) {
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64:
		return true
	}
	return false
}

// guardPatcher rewrites a checked tree (see the package comment above).
type guardPatcher struct{}

func (guardPatcher) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.BuiltinNode:
		// let __ctxN = ctx; BUILTIN(xs, __live(__ctxN); BODY): the scope's
		// ctx is read once per loop, not once per element.
		name := ""
		for _, a := range n.Arguments {
			p, ok := a.(*ast.PredicateNode)
			if !ok {
				continue
			}
			if seq, ok := p.Node.(*ast.SequenceNode); ok && len(seq.Nodes) == 2 && isLive(seq.Nodes[0]) {
				return // already guarded
			}
			if name == "" {
				name = fmt.Sprintf("__ctx%d", loopVars.Add(1))
			}
			live := &ast.CallNode{Callee: &ast.IdentifierNode{Value: liveName}, Arguments: []ast.Node{&ast.IdentifierNode{Value: name}}}
			p.Node = &ast.SequenceNode{Nodes: []ast.Node{live, p.Node}}
		}
		if name != "" {
			ast.Patch(node, &ast.VariableDeclaratorNode{Name: name, Value: &ast.IdentifierNode{Value: "ctx"}, Expr: n})
		}
	case *ast.BinaryNode:
		l, r := n.Left.Type(), n.Right.Type()
		switch n.Operator {
		case "+":
			if !stringOrUnknown(l) || !stringOrUnknown(r) {
				return // numbers, dates, or a type error the checker reports
			}
			name := addName
			if isKind(l, reflect.String) && isKind(r, reflect.String) {
				name = addSName
			}
			ast.Patch(node, call(name, true, n.Left, n.Right))
		case "/", "%":
			if !numberOrUnknown(l) || !numberOrUnknown(r) || (!unknown(l) && !unknown(r) && nonZeroLiteral(n.Right)) {
				return
			}
			name := divName
			if n.Operator == "%" {
				name = modName
			}
			ast.Patch(node, call(name, false, n.Left, n.Right))
		}
	}
}

func call(name string, withCtx bool, args ...ast.Node) *ast.CallNode {
	if withCtx {
		args = append([]ast.Node{&ast.IdentifierNode{Value: "ctx"}}, args...)
	}
	return &ast.CallNode{Callee: &ast.IdentifierNode{Value: name}, Arguments: args}
}

// loopVars numbers the variables that hold ctx for a loop: each name is
// declared once in a program.
var loopVars atomic.Int64

func isLive(n ast.Node) bool {
	c, ok := n.(*ast.CallNode)
	return ok && isIdent(c.Callee, liveName)
}

func isIdent(n ast.Node, name string) bool {
	id, ok := n.(*ast.IdentifierNode)
	return ok && id.Value == name
}

func unknown(t reflect.Type) bool { return t == nil || t.Kind() == reflect.Interface }

func isKind(t reflect.Type, k reflect.Kind) bool { return t != nil && t.Kind() == k }

func stringOrUnknown(t reflect.Type) bool { return unknown(t) || isKind(t, reflect.String) }

func numberOrUnknown(t reflect.Type) bool {
	if unknown(t) {
		return true
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return t != durationType
	}
	return false
}

func nonZeroLiteral(n ast.Node) bool {
	switch x := n.(type) {
	case *ast.IntegerNode:
		return x.Value != 0
	case *ast.FloatNode:
		return x.Value != 0
	}
	return false
}

// Builtins left as they are, besides the closures (guarded by the
// patcher): now() and type() take anything, build nothing, and cannot fail.
var unwrapped = map[string]bool{"now": true, "type": true}

// wrapBuiltin replaces builtin b by a function of the same name that takes
// ctx first (expr.WithContext passes it), checks the arguments' types, the
// context and the budget, then calls b.
func wrapBuiltin(b *builtin.Function) (expr.Option, bool) {
	if b.Predicate || unwrapped[b.Name] {
		return nil, false
	}
	f := &builtin.Function{Name: b.Name}
	if len(b.Types) == 0 && b.Validate == nil {
		// get: checked by name in expr-lang; any arguments, any result.
		f.Types = []reflect.Type{reflect.TypeOf(new(func(context.Context, any, any) any)).Elem()}
	}
	for _, t := range b.Types {
		f.Types = append(f.Types, withCtx(t))
	}
	if b.Validate != nil {
		// Types[0] only tells expr.WithContext that ctx goes first;
		// Validate is what the checker uses.
		f.Types = []reflect.Type{reflect.TypeOf(new(func(context.Context, ...any) any)).Elem()}
		validate := b.Validate
		f.Validate = func(args []reflect.Type) (reflect.Type, error) {
			if len(args) > 0 && args[0] == ctxType {
				args = args[1:]
			}
			return validate(args)
		}
	}
	call := func(args ...any) (any, error) {
		switch {
		case b.Fast != nil:
			return b.Fast(args[0]), nil
		case b.Safe != nil:
			v, _, err := b.Safe(args...)
			return v, err
		}
		return b.Func(args...)
	}
	f.Func = guard(b, call, false, false)
	return func(c *conf.Config) { c.Functions[b.Name] = f }, true
}

// guard returns fn, called with ctx first, checking the arguments' types
// against sig's, the context, and the budget before calling fn (with ctx
// if passCtx), and putting its panics and errors in the format's words.
func guard(sig *builtin.Function, fn func(...any) (any, error), passCtx, ours bool) func(...any) (any, error) {
	size := sizers[sig.Name]
	label := sig.Name + "()"
	return func(p ...any) (out any, err error) {
		c, args := p[0], p[1:]
		if err := checkArgs(sig, args); err != nil {
			return nil, word(err)
		}
		n := int64(0)
		if size != nil {
			n = size(args)
		}
		if err := charge(c, label, n); err != nil {
			return nil, word(err)
		}
		defer func() {
			if r := recover(); r != nil {
				out, err = nil, word(builtinPanic(sig.Name, args, r))
			}
		}()
		if passCtx {
			out, err = fn(p...)
		} else {
			out, err = fn(args...)
		}
		if err != nil && !ours {
			err = builtinError(sig.Name, args, err)
		}
		return out, word(err)
	}
}

// worded marks an error whose message is already in the format's words, so
// that newRunError leaves it (and the data it may quote) as it is.
type worded struct{ err error }

func (w *worded) Error() string { return w.err.Error() }
func (w *worded) Unwrap() error { return w.err }

func word(err error) error {
	if err == nil {
		return nil
	}
	return &worded{err}
}

func withCtx(t reflect.Type) reflect.Type {
	in := []reflect.Type{ctxType}
	for i := 0; i < t.NumIn(); i++ {
		in = append(in, t.In(i))
	}
	var out []reflect.Type
	for i := 0; i < t.NumOut(); i++ {
		out = append(out, t.Out(i))
	}
	return reflect.FuncOf(in, out, t.IsVariadic())
}

// checkArgs finds an overload of b that the arguments fit, and otherwise
// says what the overloads wanted at the first argument that fits none, in
// the format's words.
func checkArgs(b *builtin.Function, args []any) error {
	if len(b.Types) == 0 {
		return nil
	}
	bad, var_ := -1, []string{}
	for _, t := range b.Types {
		if !arity(t, len(args)) {
			continue
		}
		i := 0
		for ; i < len(args) && fits(param(t, i), args[i]); i++ {
		}
		if i == len(args) {
			return nil
		}
		if bad < 0 || i == bad {
			bad = i
			w := typeWord(param(t, i))
			if !slices.Contains(var_, w) {
				var_ = append(var_, w)
			}
		}
	}
	if bad < 0 {
		return nil // no overload of this arity: the checker said so already
	}
	if slices.Contains(var_, "a number") {
		var_ = slices.DeleteFunc(var_, func(w string) bool { return w == "an integer" })
	}
	return fmt.Errorf("%s() wants %s, got %s", b.Name, strings.Join(var_, " or "), describe(args[bad]))
}

func arity(t reflect.Type, n int) bool {
	if t.IsVariadic() {
		return n >= t.NumIn()-1
	}
	return n == t.NumIn()
}

func param(t reflect.Type, i int) reflect.Type {
	if t.IsVariadic() && i >= t.NumIn()-1 {
		return t.In(t.NumIn() - 1).Elem()
	}
	return t.In(i)
}

// fits reports whether v is acceptable where t is declared, as expr-lang's
// builtins convert them: any number where a number is wanted, any list
// where a list is.
func fits(t reflect.Type, v any) bool {
	k := t.Kind()
	switch v.(type) { // the shapes items hold, without reflection
	case string:
		return k == reflect.String || k == reflect.Interface
	case int, int64, float64:
		return k == reflect.Interface || (k >= reflect.Int && k <= reflect.Float64 && t != durationType)
	case bool:
		return k == reflect.Bool || k == reflect.Interface
	case []any:
		return k == reflect.Slice || k == reflect.Interface
	case map[string]any:
		return k == reflect.Map || k == reflect.Interface
	}
	if k == reflect.Interface {
		return true
	}
	if v == nil {
		switch t.Kind() {
		case reflect.Slice, reflect.Map, reflect.Pointer:
			return true
		}
		return false
	}
	vt := reflect.TypeOf(v)
	if vt.AssignableTo(t) {
		return true
	}
	switch {
	case numberOrUnknown(t) && !unknown(t):
		return isNumber(v)
	case t.Kind() == reflect.Slice:
		return vt.Kind() == reflect.Slice || vt.Kind() == reflect.Array
	case t.Kind() == reflect.Map:
		return vt.Kind() == reflect.Map
	}
	return false
}

// typeWord names a Go type as the pipeline format does.
func typeWord(t reflect.Type) string {
	if t == nil {
		return "null"
	}
	switch t {
	case reflect.TypeOf(time.Time{}):
		return "a date"
	case reflect.TypeOf(time.Duration(0)):
		return "a duration"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping"
	case reflect.Func:
		return "a function"
	}
	return "a value"
}

// goTypeWords are the Go type names expr-lang's messages hold.
var goTypeWords = map[string]string{
	"string": "a string", "bool": "a boolean", "int": "an integer", "int64": "an integer",
	"int32": "an integer", "uint": "an integer", "uint64": "an integer", "float64": "a number",
	"float32": "a number", "[]interface {}": "a list", "map[string]interface {}": "a mapping",
	"time.Time": "a date", "time.Duration": "a duration", "<nil>": "null", "nil": "null",
	"[]string": "a list", "[]int": "a list", "[]float64": "a list", "interface {}": "a value",
	"uint8": "an integer", "uint32": "an integer", "json.Number": "a number beyond 64 bits",
}

// builtinPanic turns what a builtin panicked with into an error that names
// the function and the types in the format's words.
func builtinPanic(fn string, args []any, r any) error {
	if err, ok := r.(error); ok {
		var re interface{ RuntimeError() }
		if !errors.As(err, &re) {
			return builtinError(fn, args, err)
		}
	}
	return errors.New(inWords(fn, args, fmt.Sprint(r)))
}

// builtinError rewords the errors expr-lang's builtins return; errors of
// this package (budget, division, cancellation, fail()) pass unchanged.
func builtinError(fn string, args []any, err error) error {
	var be *BudgetError
	var fe *FailError
	if errors.As(err, &be) || errors.As(err, &fe) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	msg := inWords(fn, args, err.Error())
	if msg == err.Error() {
		return err
	}
	return errors.New(msg)
}

// wants says what the expr-lang builtins that declare no signature take.
var wants = map[string]string{
	"len": "a string, list or mapping", "max": "numbers or lists of numbers",
	"min": "numbers or lists of numbers", "mean": "numbers or lists of numbers",
	"median": "numbers or lists of numbers", "sum": "a list of numbers",
	"abs": "a number", "ceil": "a number", "floor": "a number", "round": "a number",
	"int": "a number or a string", "float": "a number or a string",
	"concat": "lists", "flatten": "a list", "reverse": "a list", "uniq": "a list",
	"first": "a list", "last": "a list", "take": "a list and an integer",
	"keys": "a mapping", "values": "a mapping", "toPairs": "a mapping",
	"fromPairs": "a list of [key, value] pairs", "date": "a date string (and a layout, a time zone)",
	"get":    "a list and an integer, or a mapping and a string key",
	"bitand": "integers", "bitor": "integers", "bitxor": "integers", "bitnand": "integers",
	"bitshl": "integers", "bitshr": "integers", "bitushr": "integers", "bitnot": "an integer",
	// Functions of the library with several signatures.
	"sleep": "a duration string or a number of seconds", "hex": "a string or an integer",
	"thousands": "a number", "count_primes": "an integer",
}

// inWords rewrites the Go-worded messages of expr-lang's runtime:
// "interface conversion: interface {} is int64, not string" and "invalid
// argument for abs (type string)" become "upper() wants a string, got the
// number 3"; other Go type names become words.
func inWords(fn string, args []any, msg string) string {
	const conv = "interface conversion: interface {} is "
	if strings.HasPrefix(msg, conv) {
		rest := msg[len(conv):]
		got, want, ok := strings.Cut(rest, ", not ")
		if ok {
			w, known := goTypeWords[want]
			if !known {
				w = "another type"
			}
			return fmt.Sprintf("%s() wants %s, got %s", fn, w, findArg(args, got))
		}
	}
	const inv = "invalid argument for "
	if strings.HasPrefix(msg, inv) {
		name, typ, ok := strings.Cut(msg[len(inv):], " (type ")
		if ok {
			typ = strings.TrimSuffix(typ, ")")
			w, known := wants[name]
			if !known {
				w = "a number"
			}
			return fmt.Sprintf("%s() wants %s, got %s", name, w, findArg(args, typ))
		}
	}
	// Other messages naming the Go type of an argument ("cannot concat
	// int64", "cannot use float64 as argument"): say which argument, and
	// what the function wants when it is known.
	for _, a := range args {
		if goType := fmt.Sprintf("%T", a); hasToken(msg, goType) {
			if w, ok := wants[fn]; ok {
				return fmt.Sprintf("%s() wants %s, got %s", fn, w, describe(a))
			}
			return fmt.Sprintf("%s() cannot take %s", fn, describe(a))
		}
	}
	msg = goWords(msg)
	if fn != "" && !strings.HasPrefix(msg, fn+"()") {
		msg = fn + "(): " + msg
	}
	return msg
}

// hasToken reports whether tok appears in msg on its own, not as part of a
// longer name.
func hasToken(msg, tok string) bool {
	ident := func(c byte) bool {
		return c == '_' || c == '.' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
	}
	for i := 0; ; {
		j := strings.Index(msg[i:], tok)
		if j < 0 {
			return false
		}
		j += i
		end := j + len(tok)
		if (j == 0 || !ident(msg[j-1])) && (end == len(msg) || !ident(msg[end])) {
			return true
		}
		i = j + 1
	}
}

// goWords replaces the Go type names in an expr-lang message ("invalid
// operation: string + int", "cannot fetch x from float64") by words.
func goWords(msg string) string {
	if rest, ok := strings.CutPrefix(msg, "invalid operation: "); ok {
		f := strings.Fields(rest)
		for i, w := range f {
			if g, ok := goTypeWords[strings.Trim(w, "()")]; ok {
				f[i] = g
			}
		}
		return "invalid operation: " + strings.Join(f, " ")
	}
	for _, goName := range []string{"map[string]interface {}", "[]interface {}", "interface {}", "float64", "int64", "float32", "int32", "uint64"} {
		if hasToken(msg, goName) {
			msg = strings.ReplaceAll(msg, goName, goTypeWords[goName])
		}
	}
	for _, pre := range []string{"(type ", " from ", " on ", " of type "} {
		i := strings.Index(msg, pre)
		if i < 0 {
			continue
		}
		rest := msg[i+len(pre):]
		end := strings.IndexAny(rest, ") ")
		if end < 0 {
			end = len(rest)
		}
		if w, ok := goTypeWords[rest[:end]]; ok {
			msg = msg[:i+len(pre)] + w + rest[end:]
		}
	}
	return msg
}

// findArg describes the first argument, or element of a list argument,
// whose Go type is goType; failing that, the type in words.
func findArg(args []any, goType string) string {
	for _, a := range args {
		if fmt.Sprintf("%T", a) == goType {
			return describe(a)
		}
	}
	for _, a := range args {
		if l, ok := a.([]any); ok {
			for _, e := range l {
				if fmt.Sprintf("%T", e) == goType {
					return describe(e)
				}
			}
		}
	}
	if w, ok := goTypeWords[goType]; ok {
		return w
	}
	return "a value of another type"
}

// sizers estimate, from the arguments, the bytes a builtin's result takes,
// before it is built. Builtins not listed return a small value or a part of
// an argument (a substring, an element).
var sizers = map[string]func(args []any) int64{
	"repeat": func(a []any) int64 {
		s, _ := a[0].(string)
		n, _ := toInt64(a[1])
		return mulSize(int64(len(s)), n)
	},
	"replace": func(a []any) int64 {
		s, _ := a[0].(string)
		old, _ := a[1].(string)
		nw, _ := a[2].(string)
		if len(nw) <= len(old) {
			return int64(len(s))
		}
		n := int64(strings.Count(s, old))
		return int64(len(s)) + mulSize(n, int64(len(nw)-len(old)))
	},
	"join": func(a []any) int64 {
		glue := ""
		if len(a) > 1 {
			glue, _ = a[1].(string)
		}
		n := listLen(a[0])
		return valueSize(a[0]) + mulSize(n, int64(len(glue)))
	},
	"upper":      func(a []any) int64 { return strSize(a[0]) * 3 / 2 },
	"lower":      func(a []any) int64 { return strSize(a[0]) * 3 / 2 },
	"split":      splitSize,
	"splitAfter": splitSize,
	"string":     func(a []any) int64 { return jsonSize(a[0]) },
	"toJSON":     func(a []any) int64 { return jsonSize(a[0]) },
	"fromJSON":   func(a []any) int64 { return strSize(a[0]) * 4 },
	"toBase64":   func(a []any) int64 { return (strSize(a[0]) + 2) / 3 * 4 },
	"fromBase64": func(a []any) int64 { return strSize(a[0]) },
	"concat": func(a []any) int64 {
		var n int64
		for _, l := range a {
			n += listLen(l)
		}
		return n * 16
	},
	"flatten":   func(a []any) int64 { return deepLen(a[0]) * 16 },
	"sort":      func(a []any) int64 { return listLen(a[0]) * 16 },
	"reverse":   func(a []any) int64 { return listLen(a[0]) * 16 },
	"uniq":      func(a []any) int64 { return listLen(a[0]) * 16 },
	"keys":      func(a []any) int64 { return listLen(a[0]) * 16 },
	"values":    func(a []any) int64 { return listLen(a[0]) * 16 },
	"toPairs":   func(a []any) int64 { return listLen(a[0]) * 64 },
	"fromPairs": func(a []any) int64 { return listLen(a[0]) * 48 },
	"median":    func(a []any) int64 { return listLen(a[0]) * 16 },
	// The function library of funcs.go.
	"hex":           func(a []any) int64 { return 2*strSize(a[0]) + 16 },
	"base64_encode": func(a []any) int64 { return (valueSize(a[0])+2)/3*4 + 4 },
	"base64_decode": func(a []any) int64 { return strSize(a[0]) },
	"hex_decode":    func(a []any) int64 { return strSize(a[0]) },
	"sprintf":       sprintfSize,
	"take": func(a []any) int64 {
		n, _ := toInt64(a[1])
		return min(listLen(a[0]), max(n, 0)) * 16
	},
}

func strSize(v any) int64 {
	s, _ := v.(string)
	return int64(len(s))
}

func splitSize(a []any) int64 {
	s, _ := a[0].(string)
	sep, _ := a[1].(string)
	var n int64
	if sep == "" {
		n = int64(utf8.RuneCountInString(s))
	} else {
		n = int64(strings.Count(s, sep)) + 1
	}
	if len(a) > 2 {
		if lim, ok := toInt64(a[2]); ok && lim >= 0 {
			n = min(n, lim)
		}
	}
	return n * 16
}

func listLen(v any) int64 {
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Slice, reflect.Array, reflect.Map, reflect.String:
		return int64(rv.Len())
	}
	return 0
}

func deepLen(v any) int64 {
	l, ok := v.([]any)
	if !ok {
		return 1
	}
	var n int64
	for _, e := range l {
		n += deepLen(e)
	}
	return n
}

// valueSize is the bytes of the strings in v plus a word per other leaf.
func valueSize(v any) int64 {
	switch x := v.(type) {
	case string:
		return int64(len(x))
	case []any:
		var n int64
		for _, e := range x {
			n += valueSize(e)
		}
		return n
	case []string:
		var n int64
		for _, e := range x {
			n += int64(len(e))
		}
		return n
	}
	return 8
}

// jsonSize bounds the length of v written as (indented) JSON: a string
// costs at most six bytes per byte (\u00XX escapes) plus its quotes; the
// bound is computed in one pass, without encoding.
func jsonSize(v any) int64 { return jsonSizeAt(v, 1) }

func jsonSizeAt(v any, depth int64) int64 {
	switch x := v.(type) {
	case string:
		n := int64(2)
		for i := 0; i < len(x); i++ {
			c := x[i]
			switch {
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				n += 6
			case c == '"' || c == '\\':
				n += 2
			default:
				n++
			}
		}
		return n
	case []any:
		n := int64(2)
		for _, e := range x {
			n += jsonSizeAt(e, depth+1) + 2*depth + 2
		}
		return n
	case map[string]any:
		n := int64(2)
		for k, e := range x {
			n += jsonSizeAt(k, depth) + jsonSizeAt(e, depth+1) + 2*depth + 4
		}
		return n
	}
	return 32
}

// sprintfSize bounds what sprintf writes: the format, each argument, and
// each width and precision written in the format or passed with '*'.
func sprintfSize(a []any) int64 {
	f, _ := a[0].(string)
	n := int64(len(f))
	for _, v := range a[1:] {
		n += jsonSize(v)
		if x, ok := toInt64(v); ok && x > 0 {
			n += x // a '*' width or precision
		}
	}
	for i := 0; i < len(f); i++ {
		if f[i] < '0' || f[i] > '9' {
			continue
		}
		j := i
		var w int64
		for ; j < len(f) && f[j] >= '0' && f[j] <= '9'; j++ {
			w = min(w*10+int64(f[j]-'0'), math.MaxInt64/20)
		}
		n += w
		i = j
	}
	return n
}

// checkWords rewords the type errors the checker finds when a pipeline is
// validated: "cannot use int as argument (type string) to call upper"
// becomes "upper() wants a string, got an integer", and "invalid operation:
// + (mismatched types string and int)" "+ cannot combine a string and an
// integer".
func checkWords(msg string) string {
	var got, want, fn string
	if _, err := fmt.Sscanf(msg, "cannot use %s as argument (type %s to call %s", &got, &want, &fn); err == nil {
		w, ok := wants[fn] // the checker names only the last signature it tried
		if !ok {
			w = goWordOr(strings.TrimSuffix(want, ")"))
		}
		return fmt.Sprintf("%s() wants %s, got %s", fn, w, goWordOr(got))
	}
	if rest, ok := strings.CutPrefix(msg, "invalid operation: "); ok {
		op, types, ok := strings.Cut(rest, " (mismatched types ")
		a, b, ok2 := strings.Cut(strings.TrimSuffix(types, ")"), " and ")
		if ok && ok2 {
			return fmt.Sprintf("%s cannot combine %s and %s", op, goWordOr(a), goWordOr(b))
		}
	}
	if rest, ok := strings.CutPrefix(msg, "invalid argument for "); ok {
		fn, typ, ok := strings.Cut(rest, " (type ")
		if w, known := wants[fn]; ok && known {
			return fmt.Sprintf("%s() wants %s, got %s", fn, w, goWordOr(strings.TrimSuffix(typ, ")")))
		}
	}
	return msg
}

// goWordOr names a Go type in words, or leaves a name it does not know.
func goWordOr(goType string) string {
	if w, ok := goTypeWords[goType]; ok {
		return w
	}
	return goType
}

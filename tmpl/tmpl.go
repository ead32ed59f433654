// Package tmpl compiles the `${ expr }` templates found in pipeline files.
//
// A string holding exactly one expression evaluates to the expression's value
// with its type ("${ item * 2 }" is a number); any other string evaluates to a
// string with each expression's value spliced in. Non-string YAML values and
// mappings or lists of them are templates too, evaluated leaf by leaf.
// Templates are compiled once, when the file is validated.
//
// Expressions run on expr-lang's VM, except a single expression that is
// plain arithmetic or a comparison on item and index ("${ item * 2 }"):
// that one is also compiled to Go closures (fast.go), because it is the
// commonest template of all and the VM's reflection and boxing cost more
// than the arithmetic. The closures give what the VM gives or step aside.
package tmpl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/builtin"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"
	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
)

// Scope is what an expression sees: item, index, vars, env (and ctx, passed
// to functions that take a context, such as sleep).
type Scope struct {
	Item  any               `expr:"item"`
	Index int64             `expr:"index"`
	Vars  map[string]any    `expr:"vars"`
	Env   map[string]string `expr:"env"`
	Ctx   context.Context   `expr:"ctx"`
}

// T is a compiled template.
type T struct {
	src  string
	node *yaml.Node
	// exactly one of the following shapes
	literal any                                     // no expressions at all
	parts   []part                                  // a string with expressions
	single  *vm.Program                             // a string that is exactly one expression
	loops   bool                                    // single iterates (map, filter...): see run
	fast    func(item any, index int64) (any, bool) // single compiled for plain numbers, or nil (fast.go)
	list    []*T                                    // a sequence
	keys    []string                                // a mapping: keys, with vals
	vals    []*T
	kind    yaml.Kind
	// progs are the compiled expressions of a scalar with the byte offset of
	// each one's code in src, so later checks can point inside the string.
	progs []located
}

type part struct {
	text  string
	prog  *vm.Program
	loops bool
}

type located struct {
	prog *vm.Program
	off  int
}

// Compile compiles a template string. Errors carry the byte offset in src in
// an *OffsetError, so callers that know where the string sits in a file can
// point at the exact column.
func Compile(src string) (*T, error) {
	t := &T{src: src, kind: yaml.ScalarNode}
	if !strings.Contains(src, "${") {
		t.literal = src
		return t, nil
	}
	rest, off := src, 0
	for {
		i := strings.Index(rest, "${")
		if i < 0 {
			if rest != "" {
				t.parts = append(t.parts, part{text: rest})
			}
			break
		}
		if i > 0 {
			t.parts = append(t.parts, part{text: rest[:i]})
		}
		j := closing(rest[i+2:])
		if j < 0 {
			return nil, &OffsetError{Offset: off + i, Msg: "unclosed \"${\": add the closing \"}\""}
		}
		code := rest[i+2 : i+2+j]
		if strings.TrimSpace(code) == "" {
			return nil, &OffsetError{Offset: off + i, Msg: "empty expression \"${ }\""}
		}
		prog, err := expr.Compile(code, Options()...)
		if err != nil {
			return nil, exprError(err, code, off+i+2)
		}
		t.parts = append(t.parts, part{prog: prog, loops: iterates(prog)})
		t.progs = append(t.progs, located{prog: prog, off: off + i + 2})
		off += i + 2 + j + 1
		rest = rest[i+2+j+1:]
	}
	if len(t.parts) == 1 && t.parts[0].prog != nil {
		t.single, t.loops = t.parts[0].prog, t.parts[0].loops
		t.fast = compileFast(t.single)
		t.parts = nil
	}
	return t, nil
}

// closing finds the "}" that ends an expression, skipping braces and quotes
// inside it (map literals, strings).
func closing(s string) int {
	depth := 0
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == '\\' {
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'' || c == '`':
			quote = c
		case c == '{':
			depth++
		case c == '}':
			if depth == 0 {
				return i
			}
			depth--
		}
	}
	return -1
}

// OffsetError is a compile error at a byte offset within the template source.
type OffsetError struct {
	Offset int
	Msg    string
}

func (e *OffsetError) Error() string { return e.Msg }

func exprError(err error, code string, base int) error {
	var fe *file.Error
	if errors.As(err, &fe) {
		return &OffsetError{Offset: base + runeOffset(code, fe.From), Msg: fmt.Sprintf("expression %q: %s", strings.TrimSpace(code), checkWords(strings.TrimSpace(fe.Message)))}
	}
	msg := err.Error()
	if i := strings.Index(msg, "\n"); i >= 0 {
		msg = msg[:i]
	}
	return &OffsetError{Offset: base, Msg: fmt.Sprintf("expression %q: %s", strings.TrimSpace(code), msg)}
}

// runeOffset turns expr's rune offset into a byte offset in code.
func runeOffset(code string, runes int) int {
	n := 0
	for i := range code {
		if n == runes {
			return i
		}
		n++
	}
	return len(code)
}

// FromNode compiles a YAML node: strings as templates, other scalars as
// literals, mappings and lists leaf by leaf. Errors carry file positions.
func FromNode(n *yaml.Node) (*T, error) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag != "!!str" {
			var v any
			if err := n.Decode(&v); err != nil {
				return nil, conf.Errorf(conf.NodePos(n), "%v", err)
			}
			return &T{literal: conf.Normalize(v), node: n, kind: yaml.ScalarNode, src: n.Value}, nil
		}
		t, err := Compile(n.Value)
		if err != nil {
			return nil, PlaceError(n, err)
		}
		t.node = n
		return t, nil
	case yaml.SequenceNode:
		t := &T{node: n, kind: yaml.SequenceNode}
		var ds conf.Diags
		for _, c := range n.Content {
			ct, err := FromNode(c)
			ds.AddErr(conf.NodePos(c), err)
			t.list = append(t.list, ct)
		}
		return t, ds.Err()
	case yaml.MappingNode:
		t := &T{node: n, kind: yaml.MappingNode}
		var ds conf.Diags
		for i := 0; i+1 < len(n.Content); i += 2 {
			ct, err := FromNode(n.Content[i+1])
			ds.AddErr(conf.NodePos(n.Content[i+1]), err)
			t.keys = append(t.keys, n.Content[i].Value)
			t.vals = append(t.vals, ct)
		}
		return t, ds.Err()
	}
	return nil, conf.Errorf(conf.NodePos(n), "unsupported YAML value")
}

// PlaceError turns an *OffsetError from compiling n.Value into a positioned
// error, counting the opening quote of quoted styles.
func PlaceError(n *yaml.Node, err error) error {
	oe, ok := err.(*OffsetError)
	if !ok {
		return conf.Errorf(conf.NodePos(n), "%v", err)
	}
	p := conf.NodePos(n)
	if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 {
		p.Col++
	}
	if before := n.Value[:min(max(oe.Offset, 0), len(n.Value))]; n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) == 0 && !strings.Contains(before, "\n") {
		// yaml.v3 counts columns in characters, not bytes.
		p.Col += utf8.RuneCountInString(before)
	}
	return &conf.PosError{Pos: p, Msg: oe.Msg}
}

// UnmarshalNode lets option structs hold *T or T fields directly. With a
// context that lists the pipeline's variables, references to undeclared ones
// are errors too.
func (t *T) UnmarshalNode(n *yaml.Node, c *conf.Context) error {
	ct, err := FromNode(n)
	if err != nil {
		return err
	}
	*t = *ct
	if c == nil {
		return nil
	}
	var ds conf.Diags
	if c.Vars != nil {
		ds.AddErr(conf.NodePos(n), t.CheckVars(c.Vars))
	}
	if c.NoItem {
		ds.AddErr(conf.NodePos(n), t.checkNoItem())
	}
	return ds.Err()
}

// checkNoItem reports uses of item and index where no item exists yet.
func (t *T) checkNoItem() error {
	var ds conf.Diags
	t.walk(func(s *T) {
		for _, lp := range s.progs {
			root := lp.prog.Node()
			if root == nil {
				continue
			}
			v := &identVisitor{names: map[string]bool{"item": true, "index": true}}
			ast.Walk(&root, v)
			for _, ref := range v.refs {
				oe := &OffsetError{Offset: lp.off + runeOffset(lp.prog.Source().String(), ref.at),
					Msg: fmt.Sprintf("%s is not available here: these options are evaluated once, before there are items; use vars or env", ref.name)}
				if s.node != nil {
					ds.AddErr(conf.NodePos(s.node), PlaceError(s.node, oe))
				} else {
					ds.AddErr(conf.Pos{}, oe)
				}
			}
		}
	})
	return ds.Err()
}

type identVisitor struct {
	names map[string]bool
	refs  []varRef
}

func (v *identVisitor) Visit(n *ast.Node) {
	if id, ok := (*n).(*ast.IdentifierNode); ok && v.names[id.Value] {
		v.refs = append(v.refs, varRef{name: id.Value, at: id.Location().From})
	}
}

// CheckVars reports every 'vars.NAME' (or vars["NAME"]) whose NAME is not a
// key of vars, at the position of NAME, with a suggestion. expr cannot do
// this itself: vars is a map whose keys are only known per file.
func (t *T) CheckVars(vars map[string]any) error {
	var ds conf.Diags
	t.walk(func(s *T) {
		for _, lp := range s.progs {
			for _, ref := range varRefs(lp.prog) {
				if _, ok := vars[ref.name]; ok {
					continue
				}
				declared := make([]string, 0, len(vars))
				for k := range vars {
					declared = append(declared, k)
				}
				sort.Strings(declared)
				hint := "; declare it under vars:"
				if len(declared) > 0 {
					hint = "; declared: " + strings.Join(declared, ", ")
				}
				msg := fmt.Sprintf("unknown variable %q%s%s", ref.name, conf.Suggest(ref.name, declared), hint)
				oe := &OffsetError{Offset: lp.off + runeOffset(lp.prog.Source().String(), ref.at), Msg: msg}
				if s.node != nil {
					ds.AddErr(conf.NodePos(s.node), PlaceError(s.node, oe))
				} else {
					ds.AddErr(conf.Pos{}, oe)
				}
			}
		}
	})
	return ds.Err()
}

func (t *T) walk(fn func(*T)) {
	if t == nil {
		return
	}
	fn(t)
	for _, c := range t.list {
		c.walk(fn)
	}
	for _, c := range t.vals {
		c.walk(fn)
	}
}

type varRef struct {
	name string
	at   int // rune offset in the expression
}

type refVisitor struct{ refs []varRef }

func (v *refVisitor) Visit(n *ast.Node) {
	m, ok := (*n).(*ast.MemberNode)
	if !ok {
		return
	}
	id, ok := m.Node.(*ast.IdentifierNode)
	if !ok || id.Value != "vars" {
		return
	}
	if prop, ok := m.Property.(*ast.StringNode); ok {
		v.refs = append(v.refs, varRef{name: prop.Value, at: prop.Location().From})
	}
}

func varRefs(p *vm.Program) []varRef {
	root := p.Node()
	if root == nil {
		return nil
	}
	v := &refVisitor{}
	ast.Walk(&root, v)
	return v.refs
}

// Type is the type the template evaluates to when it is known before running:
// the literal's type, string for text with expressions, the expression's type
// for a single expression (nil when expr cannot tell, e.g. 'item.x').
func (t *T) Type() reflect.Type {
	switch {
	case t == nil:
		return nil
	case t.single != nil:
		if root := t.single.Node(); root != nil {
			if rt := root.Type(); rt != nil && rt.Kind() != reflect.Interface {
				return rt
			}
		}
		return nil
	case t.parts != nil:
		return reflect.TypeFor[string]()
	case t.kind == yaml.SequenceNode:
		return reflect.TypeFor[[]any]()
	case t.kind == yaml.MappingNode:
		return reflect.TypeFor[map[string]any]()
	case t.literal == nil:
		return nil
	}
	return reflect.TypeOf(t.literal)
}

// JSONSchema: a template accepts any YAML value.
func (t *T) JSONSchema() map[string]any { return map[string]any{} }

// IsConst reports whether the template holds no expression.
func (t *T) IsConst() bool {
	switch {
	case t.single != nil || t.parts != nil:
		return false
	case t.list != nil:
		for _, c := range t.list {
			if !c.IsConst() {
				return false
			}
		}
	case t.vals != nil:
		for _, c := range t.vals {
			if !c.IsConst() {
				return false
			}
		}
	}
	return true
}

// UsesItem reports whether the template refers to item or index: without,
// it can be evaluated once, before there are items, from vars and env.
func (t *T) UsesItem() bool { return t.checkNoItem() != nil }

// Source is the text the template was compiled from (scalars only).
func (t *T) Source() string { return t.src }

// Node is the YAML node the template came from, if any.
func (t *T) Node() *yaml.Node { return t.node }

// Eval evaluates the template in scope s.
func (t *T) Eval(s *Scope) (any, error) { return t.EvalConv(s, nil) }

// EvalConv is Eval with conv (if not nil) applied to the value of each
// expression and literal as it is placed in the mappings and lists the
// template builds. A caller that converts what it evaluates (compute makes
// it JSON-shaped) then copies only the values expressions returned, which
// may be shared (vars), not also the containers built for this evaluation.
func (t *T) EvalConv(s *Scope, conv func(any) any) (any, error) {
	if t == nil {
		return nil, nil
	}
	if v, ok := t.evalFast(s); ok {
		if conv != nil {
			v = conv(v)
		}
		return v, nil
	}
	st := evalStates.Get().(*evalState)
	v, err := st.eval(t, s, conv)
	evalStates.Put(st)
	return v, err
}

func (st *evalState) eval(t *T, s *Scope, conv func(any) any) (any, error) {
	// Each evaluation gets its own memory budget and a ctx that is never
	// nil (see guard.go); the caller's scope is left as it was.
	st.scope = *s
	st.ctx = evalCtx{Context: s.Ctx}
	if st.ctx.Context == nil {
		st.ctx.Context = context.Background()
	}
	st.scope.Ctx = &st.ctx
	v, err := t.eval(&st.scope, &st.vm, conv)
	// Nothing keeps the state past the evaluation (results are values, and
	// no function holds the context after it returns): reuse it, since an
	// allocation per evaluation is a good part of a trivial step's cost.
	// The VM stays, emptied by run, with its stack.
	st.scope, st.ctx = Scope{}, evalCtx{}
	return v, err
}

var evalStates = sync.Pool{New: func() any { return new(evalState) }}

// evalState is what one evaluation allocates: a copy of the caller's scope
// whose ctx is the evaluation's evalCtx, and the VM that runs its programs
// (expr.Run makes a VM and its stack per call).
type evalState struct {
	scope Scope
	ctx   evalCtx
	vm    vm.VM
}

// run runs p on m and leaves m holding nothing of the evaluation, so a
// pooled VM neither leaks one item's values into the next evaluation nor
// keeps them alive. vm.VM.Run resets what it reads before reading it; what
// it leaves behind is values: in the stack past its length (pop does not
// clear), in variables ('let'), and in the scopes of loops, which it keeps
// in a pool of its own that only a new VM empties.
func run(m *vm.VM, p *vm.Program, loops bool, s *Scope) (any, error) {
	v, err := m.Run(p, s)
	if loops {
		*m = vm.VM{Stack: m.Stack}
	}
	clear(m.Stack[:cap(m.Stack)])
	m.Stack = m.Stack[:0]
	clear(m.Variables)
	return v, err
}

// iterates reports whether p opens scopes (map, filter, all...): see run.
func iterates(p *vm.Program) bool {
	return slices.Contains(p.Bytecode, vm.OpBegin)
}

func (t *T) eval(s *Scope, m *vm.VM, conv func(any) any) (any, error) {
	v, err := t.evalShape(s, m, conv)
	if err != nil || conv == nil || t.kind == yaml.SequenceNode || t.kind == yaml.MappingNode {
		return v, err
	}
	return conv(v), nil
}

// evalShape is eval before conv is applied to a scalar's value.
func (t *T) evalShape(s *Scope, m *vm.VM, conv func(any) any) (any, error) {
	switch {
	case t.single != nil:
		if v, ok := t.evalFast(s); ok {
			return v, nil
		}
		v, err := run(m, t.single, t.loops, s)
		if err != nil {
			return nil, runError(t.src, err)
		}
		return v, nil
	case t.parts != nil:
		var b strings.Builder
		for _, p := range t.parts {
			if p.prog == nil {
				b.WriteString(p.text)
				continue
			}
			v, err := run(m, p.prog, p.loops, s)
			if err != nil {
				return nil, runError(t.src, err)
			}
			switch v.(type) {
			case map[string]any, []any:
				// Spliced as JSON, which may be larger than the value
				// (escapes): count it like any other string built.
				if err := charge(s.Ctx, "the template", jsonSize(v)); err != nil {
					return nil, runError(t.src, err)
				}
			}
			b.WriteString(Stringify(v))
		}
		return b.String(), nil
	case t.kind == yaml.SequenceNode:
		out := make([]any, len(t.list))
		for i, c := range t.list {
			v, err := c.eval(s, m, conv)
			if err != nil {
				return nil, err
			}
			out[i] = v
		}
		return out, nil
	case t.kind == yaml.MappingNode:
		out := make(map[string]any, len(t.keys))
		for i, k := range t.keys {
			v, err := t.vals[i].eval(s, m, conv)
			if err != nil {
				return nil, err
			}
			out[k] = v
		}
		return out, nil
	}
	return t.literal, nil
}

// EvalString evaluates and renders the result as text.
func (t *T) EvalString(s *Scope) (string, error) {
	v, err := t.Eval(s)
	if err != nil {
		return "", err
	}
	return Stringify(v), nil
}

// EvalBool evaluates a condition; the result must be a boolean.
func (t *T) EvalBool(s *Scope) (bool, error) {
	v, err := t.Eval(s)
	if err != nil {
		return false, err
	}
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("expression %q gave %s, want true or false", t.src, Stringify(v))
	}
	return b, nil
}

func runError(src string, err error) error { return newRunError(src, err) }

// Stringify renders a value the way it is spliced into a string: strings as
// they are, whole floats without a fraction, composite values as JSON.
func Stringify(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case fmt.Stringer:
		return x.String()
	case map[string]any, []any:
		b, err := json.Marshal(x)
		if err == nil {
			return string(b)
		}
	}
	return fmt.Sprint(v)
}

// Options are the expr options every template compiles with: the Scope as
// environment and the function library.
func Options() []expr.Option {
	opts := []expr.Option{expr.Env(Scope{}), expr.WithContext("ctx")}
	opts = append(opts, funcOptions()...)
	return append(opts, guards()...)
}

// library is the functions added with Func. Their expr options are made on
// the first compile, not at init: building signatures by reflection is
// start-up time that a process compiling no template (flow --help, a
// worker of a stage without one) should not pay.
var library struct {
	mu    sync.Mutex
	funcs []libFunc
	opts  []expr.Option // for funcs[:len(opts)]
}

type libFunc struct {
	name  string
	fn    func(params ...any) (any, error)
	types []any
}

// funcOptions are the expr options of the library's functions.
func funcOptions() []expr.Option {
	library.mu.Lock()
	defer library.mu.Unlock()
	for _, f := range library.funcs[len(library.opts):] {
		library.opts = append(library.opts, f.option())
	}
	return library.opts[:len(library.opts):len(library.opts)]
}

// guards are built on the first compile, not at init: wrapping expr-lang's
// builtins costs ~0.7 ms, which a process that compiles no template should
// not pay either.
var guards = sync.OnceValue(guardOptions)

// Func adds a function to the library available in every expression. Call
// it from an init function; types are expr's function signatures, all with
// or all without a context.Context first (the evaluation's ctx is then
// passed). Every function is guarded like expr-lang's builtins (guard.go):
// it takes the evaluation's ctx, checks it, and charges the size its sizer
// estimates to the evaluation's budget before it runs; its panics are
// turned into errors. Its arguments it checks itself, with messages that
// know what they mean ("a duration string").
func Func(name string, fn func(params ...any) (any, error), types ...any) {
	library.mu.Lock()
	defer library.mu.Unlock()
	library.funcs = append(library.funcs, libFunc{name: name, fn: fn, types: types})
}

func (f libFunc) option() expr.Option {
	sigs := make([]any, len(f.types))
	wantsCtx := false
	for i, t := range f.types {
		ft := reflect.TypeOf(t).Elem()
		if ft.NumIn() > 0 && ft.In(0) == ctxType {
			wantsCtx = true
		} else {
			ft = withCtx(ft)
		}
		sigs[i] = reflect.New(ft).Interface()
	}
	guarded := guard(&builtin.Function{Name: f.name}, f.fn, wantsCtx, true)
	return expr.Function(f.name, guarded, sigs...)
}

package tmpl_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/tmpl"
)

// node parses one YAML document `v: <src>` and returns the value node.
func node(t *testing.T, src string) *yaml.Node {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte("v: "+src), &doc); err != nil {
		t.Fatal(err)
	}
	return doc.Content[0].Content[1]
}

func TestCompileErrorColumns(t *testing.T) {
	cases := []struct {
		src  string // after "v: " (so column 4 is the first character)
		col  int
		want string
	}{
		{`"${ item +* 2 }"`, 14, `unexpected token Operator("*")`},
		{`${ item +* 2 }`, 13, `unexpected token Operator("*")`},
		{`'x ${ nope }'`, 10, `unknown name nope`},
		{`"é ${ nope }"`, 10, `unknown name nope`}, // columns count characters
		{`"a ${ item"`, 7, `unclosed "${"`},
		{`"${  }"`, 5, `empty expression`},
	}
	for _, c := range cases {
		_, err := tmpl.FromNode(node(t, c.src))
		var pe *conf.PosError
		if !errors.As(err, &pe) {
			t.Errorf("%s: err = %v, want a positioned error", c.src, err)
			continue
		}
		if pe.Line != 1 || pe.Col != c.col || !strings.Contains(pe.Msg, c.want) {
			t.Errorf("%s: got %d:%d %q, want 1:%d ...%s...", c.src, pe.Line, pe.Col, pe.Msg, c.col, c.want)
		}
	}
}

func TestUndeclaredVars(t *testing.T) {
	ctx := &conf.Context{Vars: map[string]any{"count": 1, "base_url": "x"}}
	var tt tmpl.T
	err := tt.UnmarshalNode(node(t, `{a: "${ vars.count + 1 }", b: "${ vars.cout }/${ vars['base_ur'] }", c: "${ vars?.base_url }"}`), ctx)
	var ds conf.Diags
	if !errors.As(err, &ds) || len(ds) != 2 {
		t.Fatalf("want 2 diagnostics, got %v", err)
	}
	if ds[0].Col != 43 || !strings.Contains(ds[0].Msg, `unknown variable "cout" (did you mean "count"?)`) {
		t.Errorf("first: %v", ds[0])
	}
	if ds[1].Col != 58 || !strings.Contains(ds[1].Msg, `"base_ur" (did you mean "base_url"?)`) {
		t.Errorf("second: %v", ds[1])
	}
	// Without a context (no pipeline known) nothing is checked.
	if err := tt.UnmarshalNode(node(t, `"${ vars.anything }"`), nil); err != nil {
		t.Errorf("no context: %v", err)
	}
}

func TestNoItem(t *testing.T) {
	var tt tmpl.T
	err := tt.UnmarshalNode(node(t, `"${ item } ${ vars.n } ${ index }"`), &conf.Context{Vars: map[string]any{"n": 1}, NoItem: true})
	var ds conf.Diags
	if !errors.As(err, &ds) || len(ds) != 2 || !strings.HasPrefix(ds[0].Msg, "item is not available") || !strings.HasPrefix(ds[1].Msg, "index is not available") {
		t.Fatalf("got %v", err)
	}
}

func TestType(t *testing.T) {
	cases := []struct {
		src  string
		want reflect.Type
	}{
		{`"${ index > 1 }"`, reflect.TypeFor[bool]()},
		{`"${ index * 2 }"`, reflect.TypeFor[int]()},
		{`"n=${ index }"`, reflect.TypeFor[string]()},
		{`"${ item.x }"`, nil}, // unknown until run
		{`true`, reflect.TypeFor[bool]()},
		{`plain`, reflect.TypeFor[string]()},
		{`[1, 2]`, reflect.TypeFor[[]any]()},
	}
	for _, c := range cases {
		tt, err := tmpl.FromNode(node(t, c.src))
		if err != nil {
			t.Fatalf("%s: %v", c.src, err)
		}
		if got := tt.Type(); got != c.want {
			t.Errorf("Type(%s) = %v, want %v", c.src, got, c.want)
		}
	}
}

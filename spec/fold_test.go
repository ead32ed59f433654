package spec_test

import (
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/tmpl"
)

// wholeNumbers is a catalog with one source whose 'to' must be a whole
// number and one sink with a free-form template: enough to see what
// validation does with options evaluated once.
type wholeNumbers struct{}

type countTo struct {
	To *tmpl.T `yaml:"to"`
}

// Validate checks what is known before the run, as the real sources do.
func (c *countTo) Validate() error {
	if c.To == nil || !c.To.IsConst() {
		return nil
	}
	v, _ := c.To.Eval(&tmpl.Scope{})
	if _, ok := v.(int64); !ok {
		return conf.Errorf(conf.NodePos(c.To.Node()), "to must be a whole number, got %s", tmpl.Stringify(v))
	}
	return nil
}

type anySink struct {
	Line string `yaml:"line"`
}

func (wholeNumbers) CheckKind(role steps.Role, name string, n *yaml.Node, c *conf.Context) (conf.Diags, bool) {
	switch {
	case role == steps.RoleSource && name == "count":
		return conf.Decode(n, new(countTo), c), true
	case role == steps.RoleSink && name == "show":
		return conf.Decode(n, new(anySink), c), true
	}
	return nil, false
}

func (wholeNumbers) KindNames(role steps.Role) []string { return []string{"count", "show"} }

// TestSetIsValidated: a source's options are evaluated once, before items
// exist, so validation computes them with the overrides and reports a bad
// value at the expression, naming the override it came from.
func TestSetIsValidated(t *testing.T) {
	const src = `version: 1
vars:
  count: 5
  token: {default: "7", secret: true}
stages:
  - name: numbers
    source: {count: {to: "${ vars.count }"}}
  - name: out
    sink: {show: {line: "${ item } of ${ vars.count }"}}
`
	const twice = `version: 1
vars: {count: 5}
stages:
  - name: numbers
    source: {count: {to: "${ vars.count * 2 }"}}
`
	cases := []struct {
		name, src string
		opts      spec.Options
		want      string // "" for valid
	}{
		{"default is fine", src, spec.Options{Resolve: true}, ""},
		{"--set with a number", src, spec.Options{Set: map[string]string{"count": "9"}, Resolve: true}, ""},
		{"--set with text", src, spec.Options{Set: map[string]string{"count": "abc"}, Resolve: true},
			`p.yaml:7:26: to must be a whole number, got abc (from --set count=abc)`},
		{"from the environment", src, spec.Options{Environ: []string{"FLOW_VAR_count=abc"}, Resolve: true},
			`(from FLOW_VAR_count=abc)`},
		{"an expression that cannot be computed", twice, spec.Options{Set: map[string]string{"count": "abc"}, Resolve: true},
			`p.yaml:5:26: expression "${ vars.count * 2 }": `},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := spec.Parse("p.yaml", []byte(c.src), c.opts, wholeNumbers{})
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case c.want == "":
				return
			case err == nil:
				t.Fatalf("no error, want %q", c.want)
			}
			got := err.Error()
			if !strings.Contains(got, c.want) || strings.Count(got, "\n") > 0 {
				t.Errorf("got  %s\nwant one problem holding %s", got, c.want)
			}
			if origin := "(from --set count=abc)"; c.opts.Set["count"] == "abc" && !strings.HasSuffix(got, origin) {
				t.Errorf("got %s\nwant it to end with %s", got, origin)
			}
		})
	}
}

// TestResolveIsOptIn: a reader without the run's variables (a worker
// re-reading its parent's file, with the defaults) checks no values.
func TestResolveIsOptIn(t *testing.T) {
	const src = `version: 1
vars: {count: "set me"}
stages:
  - name: numbers
    source: {count: {to: "${ vars.count }"}}
`
	if _, err := spec.Parse("p.yaml", []byte(src), spec.Options{}, wholeNumbers{}); err != nil {
		t.Fatalf("without Resolve: %v", err)
	}
	if _, err := spec.Parse("p.yaml", []byte(src), spec.Options{Resolve: true}, wholeNumbers{}); err == nil {
		t.Fatal("with Resolve: no error for to: \"set me\"")
	}
	if _, err := spec.Parse("p.yaml", []byte(src), spec.Options{Resolve: true, Set: map[string]string{"count": "3"}}, wholeNumbers{}); err != nil {
		t.Fatalf("with Resolve and --set count=3: %v", err)
	}
}

// TestSetOfASecretIsNotShown: the origin of a secret's value names the
// override, never the value.
func TestSetOfASecretIsNotShown(t *testing.T) {
	const src = `version: 1
vars:
  token: {default: "7", secret: true}
stages:
  - name: numbers
    source: {count: {to: "${ vars.token }"}}
`
	_, err := spec.Parse("p.yaml", []byte(src), spec.Options{Set: map[string]string{"token": "hunter2"}, Resolve: true}, wholeNumbers{})
	if err == nil || !strings.HasSuffix(err.Error(), "(from --set token)") || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("err = %v; want the origin without the secret", err)
	}
	want := "p.yaml:6:26: to must be a whole number, got *** (from --set token)"
	if err.Error() != want {
		t.Errorf("err = %v\nwant %s", err, want)
	}
}

package spec

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/tmpl"
)

// Sources and sinks evaluate their options once, before any item exists,
// from vars and env only: a "${ vars.count }" there has one value for the
// whole run, known as soon as the overrides are. Validation computes those
// values and checks the options as if they had been written out, so that
// "--set count=abc" is refused by flow validate, at the line and column of
// the expression and naming the override, rather than when the run builds
// its source.

// folder evaluates the run-wide templates of options.
type folder struct {
	off   bool // Options.Resolve is not set
	scope *tmpl.Scope
	// origins names where an overridden variable's value came from, e.g.
	// "--set count=abc" or "FLOW_VAR_count=abc".
	origins map[string]string
	// from holds the origin of the value placed at each position ("" when
	// the value came from the file's defaults alone).
	from map[conf.Pos]string
	// hide replaces the values of secret variables in messages.
	hide *strings.Replacer
	ds   conf.Diags
}

// slowCalls are functions that take time on purpose or by nature: a
// template calling them is left to the run.
var slowCalls = []string{"sleep", "count_primes"}

// fold returns a copy of n in which every template that reads neither item
// nor index holds its value, positioned where the template was. A template
// that fails to evaluate is reported and left as it was.
func (f *folder) fold(n *yaml.Node) *yaml.Node {
	if n == nil || f.off {
		return n
	}
	switch n.Kind {
	case yaml.SequenceNode:
		c := *n
		c.Content = make([]*yaml.Node, len(n.Content))
		for i, e := range n.Content {
			c.Content[i] = f.fold(e)
		}
		return &c
	case yaml.MappingNode:
		c := *n
		c.Content = make([]*yaml.Node, len(n.Content))
		for i, e := range n.Content {
			if i%2 == 0 {
				c.Content[i] = e // keys are never templates
			} else {
				c.Content[i] = f.fold(e)
			}
		}
		return &c
	case yaml.ScalarNode:
		if n.Tag != "!!str" || !strings.Contains(n.Value, "${") {
			return n
		}
	default:
		return n
	}
	t, err := tmpl.FromNode(n)
	if err != nil {
		return n // compile errors are the decoder's to report
	}
	if t.UsesItem() {
		return n
	}
	vars := t.VarNames()
	for _, name := range slowCalls {
		if t.Calls(name) {
			return n
		}
	}
	var from []string
	for _, v := range vars {
		if _, declared := f.scope.Vars[v]; !declared {
			return n // reported as an unknown variable
		}
		if o, ok := f.origins[v]; ok {
			from = append(from, o)
		}
	}
	origin := ""
	if len(from) > 0 {
		origin = " (from " + strings.Join(from, ", ") + ")"
	}
	v, err := t.Eval(f.scope)
	if err != nil {
		f.ds.Add(conf.NodePos(n), "%s%s", f.hide.Replace(err.Error()), origin)
		return n
	}
	var out yaml.Node
	if err := out.Encode(v); err != nil || holdsTemplate(&out) {
		// A value that is not YAML, or text that would read as a template
		// again: leave it to the run, which uses it as data.
		return n
	}
	place(&out, n.Line, n.Column)
	f.from[conf.NodePos(n)] = origin
	return &out
}

func holdsTemplate(n *yaml.Node) bool {
	if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, "${") {
		return true
	}
	for _, c := range n.Content {
		if holdsTemplate(c) {
			return true
		}
	}
	return false
}

// place puts a computed value, and everything in it, at the position of the
// template it replaces, so that problems found in it point there.
func place(n *yaml.Node, line, col int) {
	n.Line, n.Column = line, col
	for _, c := range n.Content {
		place(c, line, col)
	}
}

// attribute adds to each problem found in a computed value the override
// it came from, and hides the values of secrets in it.
func (f *folder) attribute(ds conf.Diags) conf.Diags {
	for i, d := range ds {
		if o, ok := f.from[d.Pos]; ok {
			ds[i].Msg = f.hide.Replace(d.Msg)
			if !strings.HasSuffix(d.Msg, o) {
				ds[i].Msg += o
			}
		}
	}
	return ds
}

// newFolder prepares the evaluation of run-wide templates with the
// effective variables and the environment of the run.
func newFolder(vars Vars, opts Options, origins map[string]string) *folder {
	env := map[string]string{}
	for _, kv := range opts.Environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	var pairs []string
	secrets := vars.Secrets()
	// Longest first, so that a secret holding another is hidden whole.
	sort.Slice(secrets, func(i, j int) bool { return len(secrets[i]) > len(secrets[j]) })
	for _, s := range secrets {
		pairs = append(pairs, s, "***")
	}
	return &folder{
		off:     !opts.Resolve,
		scope:   &tmpl.Scope{Vars: vars.Map(), Env: env, Ctx: context.Background()},
		origins: origins,
		from:    map[conf.Pos]string{},
		hide:    strings.NewReplacer(pairs...),
	}
}

// overrideOrigin says where an override came from, without the value of a
// secret.
func overrideOrigin(how, name, value string, secret bool) string {
	if secret {
		return fmt.Sprintf("%s%s", how, name)
	}
	return fmt.Sprintf("%s%s=%s", how, name, value)
}

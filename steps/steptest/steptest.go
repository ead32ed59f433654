// Package steptest helps the tests of step kinds build a kind from options
// written as in a pipeline file.
package steptest

import (
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/steps"
)

// Node parses YAML text and returns its root node (nil for an empty text);
// the test fails on text that is not YAML.
func Node(t testing.TB, src string) *yaml.Node {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatalf("bad test YAML %q: %v", src, err)
	}
	if len(doc.Content) == 0 {
		return nil
	}
	return doc.Content[0]
}

// Ref reads a source or sink written as under `source:` or `sink:`
// ("range: {...}" or a bare kind name) and returns the kind and its options.
func Ref(t testing.TB, src string) (string, *yaml.Node) {
	t.Helper()
	n := Node(t, src)
	if n == nil {
		t.Fatalf("empty test YAML")
	}
	if n.Kind == yaml.ScalarNode {
		return n.Value, nil
	}
	return n.Content[0].Value, n.Content[1]
}

// Build registers kinds with register and builds kind from its options, as
// the engine would, with env's variables in scope. The value is the built
// Source, Step, Barrier or Sink.
func Build(t testing.TB, register func(*steps.Registry), kind string, options *yaml.Node, env *steps.Env) (any, error) {
	t.Helper()
	b, err := Kind(t, register, kind).Build(options, &conf.Context{Vars: env.Vars}, env)
	if err != nil {
		return nil, err
	}
	return b.Value(), nil
}

// Kind registers kinds with register and returns the one called name.
func Kind(t testing.TB, register func(*steps.Registry), name string) *steps.Kind {
	t.Helper()
	r := steps.NewRegistry()
	register(r)
	k, ok := r.Lookup(name)
	if !ok {
		t.Fatalf("kind %q not registered", name)
	}
	return k
}

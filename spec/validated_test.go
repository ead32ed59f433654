package spec_test

import (
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/steps/all"
)

// countingCatalog counts the kinds' option checks.
type countingCatalog struct {
	spec.Catalog
	checks int
}

func (c *countingCatalog) CheckKind(role steps.Role, name string, options *yaml.Node, ctx *conf.Context) (conf.Diags, bool) {
	c.checks++
	return c.Catalog.CheckKind(role, name, options, ctx)
}

// A worker process re-reads the text its parent validated (Validated):
// it decodes no kind's options there, as it builds, and so checks, its own
// stage's step afterwards, but still knows every stage's role, kind and
// options.
func TestValidatedSkipsTheKindsChecks(t *testing.T) {
	src := []byte(`version: 1
vars: {n: 3}
stages:
  - {name: src, source: {range: {from: 1, to: "${ vars.n }"}}}
  - {name: calc, step: compute, mode: process, with: {value: "${ item * 2 }"}}
  - {name: out, sink: {print: jsonl}}
`)
	for _, validated := range []bool{false, true} {
		cat := &countingCatalog{Catalog: all.Registry()}
		p, err := spec.Parse("p.yaml", src, spec.Options{Validated: validated}, cat)
		if err != nil {
			t.Fatalf("validated %v: %v", validated, err)
		}
		if want := map[bool]int{false: 3, true: 0}[validated]; cat.checks != want {
			t.Errorf("validated %v: %d kind checks, want %d", validated, cat.checks, want)
		}
		calc := p.Stages[1]
		if calc.Role != steps.RoleStep || calc.Kind != "compute" || calc.Options == nil || p.Stages[0].Kind != "range" {
			t.Errorf("validated %v: stages not resolved: %+v", validated, calc)
		}
	}
}

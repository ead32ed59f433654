// Package spectest provides a registry of stand-in step kinds shaped like the
// real ones (same names, same kinds of options) for tests of spec, schema and
// the editor integration, so that those tests do not depend on, or break
// with, the real step implementations.
package spectest

import (
	"fmt"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/tmpl"
)

// Items is a source whose options are a list of values.
type Items struct{ Values []any }

func (it *Items) UnmarshalNode(n *yaml.Node, _ *conf.Context) error {
	if n.Kind != yaml.SequenceNode {
		return conf.Errorf(conf.NodePos(n), "items must be a list of values, e.g. [a, b, c]")
	}
	return n.Decode(&it.Values)
}

func (*Items) JSONSchema() map[string]any { return map[string]any{"type": "array"} }

type Range struct {
	From *tmpl.T `yaml:"from" required:"true" desc:"First number, included."`
	To   *tmpl.T `yaml:"to" required:"true" desc:"Last number, included."`
	Step int     `yaml:"step" desc:"Increment." default:"1"`
}

type Stdin struct {
	Format string `yaml:"format" enum:"lines,jsonl" default:"lines" desc:"How to split standard input into items."`
}

func (*Stdin) Shorthand() string { return "format" }

type Glob struct {
	Patterns []string `yaml:"patterns" required:"true" desc:"Glob patterns; '**' matches any depth."`
}

func (*Glob) Shorthand() string { return "patterns" }

type Fetch struct {
	URL      *tmpl.T            `yaml:"url" required:"true" desc:"URL to request." example:"https://example.com/${ item }"`
	Method   string             `yaml:"method" enum:"GET,POST,PUT,DELETE" default:"GET" desc:"HTTP method."`
	Decode   string             `yaml:"decode" enum:"json,text,bytes,none" desc:"How to read the body."`
	Headers  map[string]*tmpl.T `yaml:"headers" desc:"Request headers."`
	MaxBytes spec.ByteSize      `yaml:"max_bytes" default:"10MiB" desc:"Largest body read."`
}

type Compute struct {
	Value *tmpl.T `yaml:"value" required:"true" desc:"The result: any value whose strings may hold expressions."`
}

type Sort struct {
	By   *tmpl.T `yaml:"by" desc:"Expression to order by."`
	Desc bool    `yaml:"desc" desc:"Largest first."`
}

func (s *Sort) Validate() error {
	if s.By == nil {
		return fmt.Errorf("sort needs by: ${ expr }")
	}
	return nil
}

type Print struct {
	Format  string   `yaml:"format" enum:"table,json,jsonl,csv" default:"jsonl" desc:"Output format."`
	Columns []string `yaml:"columns" desc:"Columns of a table or CSV."`
}

func (*Print) Shorthand() string { return "format" }

// Registry returns a registry with the stand-in kinds: sources items, range,
// glob and stdin; steps fetch, compute and sort; sink print.
func Registry() *steps.Registry {
	r := steps.NewRegistry()
	steps.RegisterSource(r, steps.Kind{Name: "items", Summary: "A list of values."}, build[Items, steps.Source])
	steps.RegisterSource(r, steps.Kind{Name: "range", Summary: "Numbers from..to."}, build[Range, steps.Source])
	steps.RegisterSource(r, steps.Kind{Name: "glob", Summary: "Files matching patterns."}, build[Glob, steps.Source])
	steps.RegisterSource(r, steps.Kind{Name: "stdin", Summary: "Lines of standard input."}, build[Stdin, steps.Source])
	steps.RegisterStep(r, steps.Kind{Name: "fetch", Summary: "HTTP request per item."}, build[Fetch, steps.Step])
	steps.RegisterStep(r, steps.Kind{Name: "compute", Summary: "Evaluate a value per item."}, build[Compute, steps.Step])
	steps.RegisterBarrier(r, steps.Kind{Name: "sort", Summary: "Sort all items."}, build[Sort, steps.Barrier])
	steps.RegisterSink(r, steps.Kind{Name: "print", Summary: "Print results."}, build[Print, steps.Sink])
	return r
}

func build[C, T any](*C, *steps.Env) (T, error) {
	var none T
	return none, fmt.Errorf("spectest kinds only validate; they cannot run")
}

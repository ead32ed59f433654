package spec

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/steps"
)

// Catalog is what validation needs to know of step kinds. *steps.Registry
// satisfies it; spec uses only the steps vocabulary (Role), no kind.
type Catalog interface {
	// CheckKind validates the options of kind name in role. known is false
	// when no such kind exists in that role.
	CheckKind(role steps.Role, name string, options *yaml.Node, c *conf.Context) (ds conf.Diags, known bool)
	// KindNames lists the kinds of a role, for suggestions.
	KindNames(role steps.Role) []string
}

// Options are the run-time inputs to parsing.
type Options struct {
	// Set holds --set NAME=VALUE overrides; values are read as YAML scalars.
	Set map[string]string
	// Environ is the process environment ("K=V"); FLOW_VAR_<NAME> overrides
	// variable NAME (the name matched exactly or upper-cased).
	Environ []string
	// Resolve computes the options evaluated once, before items exist (a
	// source's, a sink's path), with the effective variables and Environ,
	// and checks their values, as flow validate and flow run do. It is off
	// for a reader that has not the run's variables and environment yet
	// (a worker process re-reading the file its parent validated).
	Resolve bool
	// Validated skips checking the options of every stage's kind: the
	// text was validated whole by the process that sent it (a worker
	// process re-reading its parent's file), and the one stage the reader
	// builds decodes and checks its options then. A worker would otherwise
	// decode every stage's options, compiling their templates, and its own
	// twice.
	Validated bool
}

// Load reads and parses a pipeline file.
func Load(file string, opts Options, cat Catalog) (*Pipeline, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, conf.Diags{{File: file, Msg: fmt.Sprintf("cannot read pipeline: %v", err)}}
	}
	return Parse(file, data, opts, cat)
}

// Parse parses and validates a pipeline. The error, if any, is a conf.Diags
// holding every problem found, sorted, each with FILE:LINE:COL.
func Parse(file string, data []byte, opts Options, cat Catalog) (*Pipeline, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, conf.Diags{yamlError(file, data, err)}
	}
	if len(doc.Content) == 0 {
		return nil, conf.Diags{{File: file, Pos: conf.Pos{Line: 1, Col: 1}, Msg: "the file is empty: a pipeline needs at least 'version: 1' and 'stages:'"}}
	}
	root := doc.Content[0]
	if err := conf.CheckAliases(root); err != nil {
		var ds conf.Diags
		ds.AddErr(conf.NodePos(root), err)
		return nil, ds.WithFile(file)
	}
	p := &Pipeline{File: file, Dir: pipelineDir(file), Source: data}
	var ds conf.Diags
	// Variables first: expressions elsewhere are checked against them.
	if vn := conf.Lookup(root, "vars"); vn != nil {
		ds.AddErr(conf.NodePos(vn), p.Vars.UnmarshalNode(vn, nil))
	}
	ods, origins := applyOverrides(&p.Vars, opts)
	ds = append(ds, ods...)
	ctx := &conf.Context{Vars: p.Vars.Map()}
	vars := p.Vars
	ds = append(ds, conf.Decode(root, p, ctx)...)
	p.Vars = vars // keep the overridden values, not the re-decoded defaults
	p.File, p.Dir, p.Source = file, pipelineDir(file), data
	if len(ds) == 0 || p.Stages != nil {
		kinds := cat
		if opts.Validated {
			kinds = nil
		}
		ds = append(ds, check(p, kinds, ctx, newFolder(p.Vars, opts, origins))...)
	}
	if len(ds) > 0 {
		ds = explainFlatWith(root, ds)
		return p, ds.WithFile(file).Sort()
	}
	return p, nil
}

// pipelineDir is the absolute directory of the pipeline file. Relative paths
// in the file resolve against it, and exec runs in it: resolved once here, it
// makes every path in results absolute and the same whatever the working
// directory of the run ("cd /; flow run a/b/p.yaml" or "cd a/b; flow run
// p.yaml").
func pipelineDir(file string) string {
	dir := filepath.Dir(file)
	if abs, err := filepath.Abs(dir); err == nil {
		return abs
	}
	return dir // no working directory: relative paths stay relative to it
}

// applyOverrides sets the variables overridden by the environment and by
// --set, and says where each overridden value came from.
func applyOverrides(vars *Vars, opts Options) (conf.Diags, map[string]string) {
	var ds conf.Diags
	origins := map[string]string{}
	env := map[string]string{}
	for _, kv := range opts.Environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "FLOW_VAR_") {
			env[strings.TrimPrefix(k, "FLOW_VAR_")] = v
		}
	}
	for _, x := range vars.List {
		for _, name := range []string{x.Name, strings.ToUpper(x.Name)} {
			if v, ok := env[name]; ok {
				x.Value = override(x, v)
				origins[x.Name] = overrideOrigin("FLOW_VAR_", name, v, x.Secret)
				break
			}
		}
	}
	names := make([]string, 0, len(opts.Set))
	for k := range opts.Set {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		x := vars.Lookup(k)
		if x == nil {
			declared := make([]string, len(vars.List))
			for i, v := range vars.List {
				declared[i] = v.Name
			}
			ds = append(ds, conf.Diag{Msg: fmt.Sprintf("--set %s: the pipeline declares no variable %q%s; declare it under vars:", k, k, conf.Suggest(k, declared))})
			continue
		}
		x.Value = override(x, opts.Set[k])
		origins[k] = overrideOrigin("--set ", k, opts.Set[k], x.Secret)
	}
	return ds, origins
}

// override is the value an override gives x: a secret keeps the text as
// given (see secretText), any other variable reads it as YAML would.
func override(x *Var, s string) any {
	if x.Secret {
		return s
	}
	return scalar(s)
}

// scalar reads an override the way YAML would read it as a plain scalar, so
// that --set count=5 is a number and --set name=abc a string. A value written
// as a YAML flow list or mapping ("[a, b]", "{k: v}") is read as one, so a
// list variable can be overridden too; any other text stays a string, even
// when it holds ": ".
func scalar(s string) any {
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(s), &n); err != nil || len(n.Content) == 0 {
		return s
	}
	switch c := n.Content[0]; {
	case c.Kind == yaml.ScalarNode:
	case c.Kind == yaml.SequenceNode && c.Style&yaml.FlowStyle != 0:
	case c.Kind == yaml.MappingNode && c.Style&yaml.FlowStyle != 0:
	default:
		return s
	}
	var v any
	if err := n.Content[0].Decode(&v); err != nil {
		return s
	}
	return conf.Normalize(v)
}

// DefaultSink is the sink a pipeline without one writes to: its results as
// JSON Lines on standard output, like a shell pipeline's last command.
const DefaultSink = "print: jsonl"

// RunStages is the stages a run executes: the file's, followed by the
// default sink (DefaultSink) when the last stage is not a sink. It is named
// "print", or "output" when a stage of the file has that name.
func (p *Pipeline) RunStages() []*Stage {
	if n := len(p.Stages); n == 0 || p.Stages[n-1].Role == steps.RoleSink {
		return p.Stages
	}
	name := "print"
	for _, s := range p.Stages {
		if s.Name == name {
			name = "output"
		}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte("{name: "+name+", sink: {"+DefaultSink+"}}"), &doc); err != nil {
		panic(err)
	}
	s := &Stage{}
	if ds := conf.Decode(doc.Content[0], s, nil); len(ds) > 0 {
		panic(fmt.Sprintf("spec: the default sink does not decode: %v", ds))
	}
	s.Role, s.Kind, s.Options, s.Index = steps.RoleSink, s.Sink.Kind, s.Sink.Options, len(p.Stages)
	return append(p.Stages[:len(p.Stages):len(p.Stages)], s)
}

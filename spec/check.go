package spec

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/steps"
)

// lockOutside says how a lock path leaves the pipeline's folder on its face;
// the lock package refuses symbolic links that lead out when it opens it.
func lockOutside(p string) string {
	if filepath.IsAbs(p) {
		return "is absolute"
	}
	if c := filepath.Clean(p); c == ".." || strings.HasPrefix(c, ".."+string(filepath.Separator)) {
		return "leaves the pipeline's folder"
	}
	return ""
}

// check validates what a struct decode cannot: roles, names, references and
// each kind's own options.
func check(p *Pipeline, cat Catalog, ctx *conf.Context, f *folder) conf.Diags {
	var ds conf.Diags
	if len(p.Stages) == 0 {
		// A missing or mistyped stages: is already reported by the decoder.
		if sn := conf.Lookup(p.Node, "stages"); sn != nil && sn.Kind == yaml.SequenceNode {
			ds.Add(conf.NodePos(sn), "a pipeline needs at least one stage, and the first must be a source")
		}
		return ds
	}
	// A negative timeout is already refused by the duration decoder.
	if l := p.Lock; l != nil && l.Node != nil && l.Timeout > 0 && l.Mode != "wait" {
		ds.Add(conf.ValuePos(l.Node, "timeout"), "lock timeout only applies with mode: wait; add mode: wait or remove the timeout")
	}
	if l := p.Lock; l != nil && l.File != "" && !l.AllowOutside {
		if why := lockOutside(l.File); why != "" {
			// A --lock path is relative to the working directory.
			flag := l.File
			if !filepath.IsAbs(flag) {
				flag = filepath.Join(p.Dir, flag)
				// p.Dir is absolute; the flag reads best as the user would
				// type it from where they are.
				if wd, err := os.Getwd(); err == nil {
					if rel, err := filepath.Rel(wd, flag); err == nil {
						flag = rel
					}
				}
			}
			// The short form (lock: FILE) has no node of its own.
			ds.Add(conf.ValuePos(conf.Lookup(p.Node, "lock"), "file"), "lock file %q %s, and a pipeline's lock stays inside the pipeline's folder, as write: does, so that a pipeline from elsewhere cannot create or lock files outside it; name a file in the folder, such as run.lock, or give this path on the command line: --lock %s", l.File, why, flag)
		}
	}
	names := map[string]int{}
	for i, s := range p.Stages {
		if s == nil || s.Node == nil {
			continue // not a mapping: already reported
		}
		s.Index = i
		if s.Name != "" {
			if j, dup := names[s.Name]; dup {
				ds.Add(conf.ValuePos(s.Node, "name"), "duplicate stage name %q (stage %d is also called that); stage names must be unique", s.Name, j+1)
			}
			names[s.Name] = i
		}
		set := []string{}
		for _, k := range []string{"source", "step", "sink"} {
			if conf.Lookup(s.Node, k) != nil {
				set = append(set, k)
			}
		}
		switch len(set) {
		case 0:
			ds.Add(conf.NodePos(s.Node), "%s needs one of source:, step: or sink:", stageLabel(s))
			continue
		case 1:
		default:
			ds.Add(conf.KeyPos(s.Node, set[1]), "%s has both %s: and %s:; a stage is either a source, a step or a sink", stageLabel(s), set[0], set[1])
			continue
		}
		ref := map[string]*KindRef{"source": s.Source, "sink": s.Sink}[set[0]]
		if set[0] != "step" && ref == nil {
			// "source:" with nothing after it decodes to no value at all.
			ds.Add(conf.KeyPos(s.Node, set[0]), "%s: needs a kind, e.g. %s", set[0], map[string]string{
				"source": "source: {items: [a, b]} or source: stdin", "sink": "sink: {print: table}"}[set[0]])
			continue
		}
		switch set[0] {
		case "source":
			s.Role, s.Kind, s.Options = steps.RoleSource, s.Source.Kind, s.Source.Options
			if i != 0 {
				ds.Add(conf.KeyPos(s.Node, "source"), "%s is a source but is not the first stage; only the first stage may be a source", stageLabel(s))
			}
		case "sink":
			s.Role, s.Kind, s.Options = steps.RoleSink, s.Sink.Kind, s.Sink.Options
			if i != len(p.Stages)-1 {
				ds.Add(conf.KeyPos(s.Node, "sink"), "%s is a sink but is not the last stage; only the last stage may be a sink", stageLabel(s))
			}
		case "step":
			s.Role, s.Kind, s.Options = steps.RoleStep, s.Step, s.With
		}
		if i == 0 && s.Role != steps.RoleSource {
			ds.Add(conf.KeyPos(s.Node, string(s.Role)), "the first stage must be a source (items, range, glob, lines, jsonl, stdin); %s is a %s", stageLabel(s), s.Role)
		}
		if s.With != nil && s.Role != steps.RoleStep {
			ds.Add(conf.KeyPos(s.Node, "with"), "with: holds the options of a step:; for a %s, put the options under the kind, e.g. %s: {%s: {...}}", s.Role, s.Role, s.Kind)
		}
		if cat != nil && s.Kind != "" {
			opts := s.Options
			if opts == nil {
				// No options written: check an empty mapping, placed at the
				// kind so that "missing required key" points somewhere useful.
				at := conf.Lookup(s.Node, string(s.Role))
				opts = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: at.Line, Column: at.Column}
			}
			kctx := ctx
			if s.Role == steps.RoleSource {
				c := *ctx
				c.NoItem = true
				kctx = &c
			}
			if s.Role != steps.RoleStep {
				// Options evaluated once: check them with their values.
				opts = f.fold(opts)
			}
			kd, known := cat.CheckKind(s.Role, s.Kind, opts, kctx)
			kd = f.attribute(kd)
			if !known {
				names := cat.KindNames(s.Role)
				pos := conf.ValuePos(s.Node, string(s.Role))
				if kn := conf.Lookup(s.Node, string(s.Role)); kn != nil && kn.Kind == yaml.MappingNode && len(kn.Content) > 0 {
					pos = conf.NodePos(kn.Content[0]) // the kind's name, not the brace before it
				}
				ds.Add(pos, "unknown %s kind %q%s; known: %s", s.Role, s.Kind, conf.Suggest(s.Kind, names), strings.Join(names, ", "))
			} else {
				kd = append(kd, checkCacheOnBarrier(s, cat)...)
			}
			ds = append(ds, kd...)
		}
		ds = append(ds, checkPolicies(p, s)...)
	}
	return append(ds, f.ds...)
}

func stageLabel(s *Stage) string {
	if s.Name != "" {
		return fmt.Sprintf("stage %q", s.Name)
	}
	return fmt.Sprintf("stage %d", s.Index+1)
}

func checkPolicies(p *Pipeline, s *Stage) conf.Diags {
	var ds conf.Diags
	if s.When != nil {
		// Only what expr can tell before running: item fields are untyped.
		if t := s.When.Type(); t != nil && t.Kind() != reflect.Bool {
			ds.Add(conf.ValuePos(s.Node, "when"), "when: must give true or false, but this gives a %s; compare, e.g. \"${ item.size > 0 }\"", typeWord(t))
		}
	}
	if s.Order == "key" && s.Key == nil {
		ds.Add(conf.ValuePos(s.Node, "order"), "order: key needs key: ${ expr } on %s", stageLabel(s))
	}
	if s.Key != nil && s.Order != "key" {
		ds.Add(conf.KeyPos(s.Node, "key"), "key: is used only with order: key")
	}
	if s.Burst != 0 && s.Rate == nil {
		ds.Add(conf.KeyPos(s.Node, "burst"), "burst: needs rate: on the same stage")
	}
	if s.Burst < 0 {
		ds.Add(conf.ValuePos(s.Node, "burst"), "burst must not be negative")
	}
	if s.MaxErrors < 0 {
		ds.Add(conf.ValuePos(s.Node, "max_errors"), "max_errors must not be negative")
	}
	if s.MaxErrors > 0 && s.OnError != OnErrorSkip && s.OnError != OnErrorKeep {
		ds.Add(conf.KeyPos(s.Node, "max_errors"), "max_errors applies with on_error: skip or keep; with on_error: fail the first failure stops the run")
	}
	if max := MaxWorkers[s.Mode]; max > 0 && s.Workers.N > max {
		ds.Add(conf.ValuePos(s.Node, "workers"), "workers: %d is more than mode: %s allows (%d): %s", s.Workers.N, s.Mode, max, map[Mode]string{
			ModeProcess: "each worker is a process of its own; for many items in flight, use mode: thread (I/O) or split the work over stages",
			ModeThread:  "each is a goroutine with an item in flight; for more, use mode: cluster",
			ModeCluster: "it bounds the stage's items in flight across the cluster",
		}[s.Mode])
	}
	if s.Mode != ModeProcess {
		for _, k := range []string{"max_tasks_per_child", "memory"} {
			if conf.Lookup(s.Node, k) != nil {
				ds.Add(conf.KeyPos(s.Node, k), "%s applies only with mode: process", k)
			}
		}
	}
	ds = append(ds, checkClusterFields(s)...)
	if s.Role != steps.RoleStep {
		for _, k := range []string{"mode", "workers", "rate", "burst", "limit", "timeout", "retry", "order", "key", "complete", "on_error", "max_errors", "cache"} {
			if s.Role == steps.RoleSource && (k == "rate" || k == "burst" || k == "limit") {
				continue
			}
			if conf.Lookup(s.Node, k) != nil {
				ds.Add(conf.KeyPos(s.Node, k), "%s: applies to step stages; %s is a %s", k, stageLabel(s), s.Role)
			}
		}
	}
	for i, name := range s.Limit {
		if _, ok := p.Limits[name]; !ok {
			var known []string
			for k := range p.Limits {
				known = append(known, k)
			}
			pos := conf.ValuePos(s.Node, "limit")
			if ln := conf.Lookup(s.Node, "limit"); ln != nil && len(ln.Content) > i {
				pos = conf.NodePos(ln.Content[i])
			}
			ds.Add(pos, "%s names limit %q, which is not declared under limits:%s", stageLabel(s), name, conf.Suggest(name, known))
		}
	}
	if s.Retry != nil && s.Retry.Attempts < 0 {
		ds.Add(conf.ValuePos(s.Retry.Node, "attempts"), "retry.attempts must be at least 1")
	}

	return ds
}

// MaxWorkers bounds workers: per mode, so that a typo (workers: 3000 for
// 30) or a hostile file cannot fork thousands of processes or start
// millions of goroutines.
var MaxWorkers = map[Mode]int{ModeProcess: 256, ModeThread: 10000, ModeCluster: 100000}

func typeWord(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice, reflect.Array:
		return "list"
	case reflect.Map, reflect.Struct:
		return "mapping"
	}
	return t.String()
}

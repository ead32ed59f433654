package spec

import (
	"time"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/steps"
)

// CacheSpec is a stage's `cache:`: `off`, `on`, `resume`, or a mapping
// (which means on) with a TTL, a salt and the environment variables the
// stage depends on. A stage without one gets its kind's default
// (docs/state.md).
type CacheSpec struct {
	On bool
	// ResumeOnly: results are stored on every run but reused by
	// `flow run --resume` only.
	ResumeOnly bool
	TTL        time.Duration
	Salt       string
	Env        []string
}

// cacheOptions is the mapping form of `cache:`.
type cacheOptions struct {
	Reuse string        `yaml:"reuse" enum:"always,resume" default:"always" desc:"When stored results are reused: 'always', or only by 'flow run --resume' ('resume')."`
	TTL   time.Duration `yaml:"ttl" desc:"How long a stored result may be reused, as a Go duration (24h). 0 keeps it until 'flow cache rm' or 'flow cache gc'." example:"24h"`
	Salt  string        `yaml:"salt" desc:"Any text; changing it makes every stored result of the stage a miss." example:"v2"`
	Env   []string      `yaml:"env" desc:"Environment variables the results depend on; a change in their values is a miss. Other variables never are." example:"[LANG]"`
}

// UnmarshalNode reads `off`, `on` or {ttl, salt, env}.
func (c *CacheSpec) UnmarshalNode(n *yaml.Node, ctx *conf.Context) error {
	switch {
	case n.Kind == yaml.ScalarNode && (n.Value == "on" || n.Value == "true"):
		*c = CacheSpec{On: true}
		return nil
	case n.Kind == yaml.ScalarNode && n.Value == "resume":
		*c = CacheSpec{On: true, ResumeOnly: true}
		return nil
	case n.Kind == yaml.ScalarNode && (n.Value == "off" || n.Value == "false"):
		*c = CacheSpec{}
		return nil
	case n.Kind == yaml.MappingNode:
		var o cacheOptions
		if ds := conf.Decode(n, &o, ctx); len(ds) > 0 {
			return ds
		}
		if o.TTL < 0 {
			return conf.Errorf(conf.NodePos(n), "cache.ttl must not be negative, got %s", o.TTL)
		}
		*c = CacheSpec{On: true, ResumeOnly: o.Reuse == "resume", TTL: o.TTL, Salt: o.Salt, Env: o.Env}
		return nil
	}
	return conf.Errorf(conf.NodePos(n), "cache must be \"on\", \"off\", \"resume\" or {ttl: 24h, salt: x, env: [VAR], reuse: resume}, got %q%s", n.Value, conf.Suggest(n.Value, []string{"on", "off", "resume"}))
}

// JSONSchema describes the three forms.
func (*CacheSpec) JSONSchema() map[string]any {
	return map[string]any{"anyOf": []any{
		map[string]any{"type": "string", "enum": []any{"on", "off", "resume"}},
		map[string]any{"type": "boolean"},
		map[string]any{
			"type": "object",
			"properties": map[string]any{
				"reuse": map[string]any{"type": "string", "enum": []any{"always", "resume"}, "description": "When stored results are reused: 'always' (the default), or only by 'flow run --resume'."},
				"ttl":   map[string]any{"type": "string", "description": "How long a stored result may be reused, as a Go duration (24h). Without it, until 'flow cache rm' or 'flow cache gc'."},
				"salt":  map[string]any{"type": "string", "description": "Any text; changing it makes every stored result of the stage a miss."},
				"env":   map[string]any{"type": "array", "items": map[string]any{"type": "string"}, "description": "Environment variables the results depend on; a change in their values is a miss. Other variables never are."},
			},
			"additionalProperties": false,
		},
	}}
}

// kindLookup is the part of a catalog (steps.Registry) that tells a
// barrier from a step; a catalog without it checks no barriers.
type kindLookup interface {
	Lookup(name string) (*steps.Kind, bool)
}

// checkCacheOnBarrier refuses `cache:` on a barrier kind (sort, top): a
// barrier's output depends on all its items at once, so there is no one
// item whose result could be stored and reused, and a cache there would
// only be a promise not kept.
func checkCacheOnBarrier(s *Stage, cat Catalog) conf.Diags {
	if s.Role != steps.RoleStep || conf.Lookup(s.Node, "cache") == nil {
		return nil
	}
	kl, ok := cat.(kindLookup)
	if !ok {
		return nil
	}
	if k, ok := kl.Lookup(s.Kind); ok && k.Barrier {
		var ds conf.Diags
		ds.Add(conf.KeyPos(s.Node, "cache"), "cache: does not apply to %s, a %s: a barrier's output depends on all its items at once, so no one item's result can be stored and reused; cache the stages before it", stageLabel(s), s.Kind)
		return ds
	}
	return nil
}

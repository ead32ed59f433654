// Package cache puts the result cache of the state database (package store)
// between the engine and the runner of a step stage: Wrap decorates an
// engine.RunnerFactory so that each item's key is computed before it runs,
// a stored success answers in its place (Attempt.Cached), and a fresh
// success is stored for later runs. The engine knows nothing of it.
//
// What a key covers is in package store/cachekey; this package decides what
// goes into it for one stage and one item (Keyer), and when a stage reads
// and writes the cache (Policy).
package cache

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/store/cachekey"
	"github.com/flowrun/flow/tmpl"
)

// FileOptions names, per kind, the options whose value (after evaluation
// for the item) is the path of a file the item reads: the content of that
// file is part of the key, so that changing it re-runs the items that read
// it, and touching it re-runs nothing. A kind not listed reads no files as
// far as the cache knows: a kind that reads files must be listed here
// before it is cached by default (resumeKinds) or a stage says cache: on.
var FileOptions = map[string][]string{
	"analyze-logs": {"path"},
	"resize":       {"src"},
}

// Keyer builds the cache keys of one stage's items.
type Keyer struct {
	kind    string
	options map[string]any
	encoded *cachekey.EncodedOptions // options, written once for all items
	files   []*tmpl.T                // FileOptions' templates, in FileOptions order
	envVals map[string]string
	salt    string
	index   bool // a template reads index: the item alone does not decide the result
	secrets []string
	env     *steps.Env
	digest  cachekey.FileDigester
	// Pure: no template calls now(); the kind's default may cache it.
	pure bool
}

// NewKeyer decodes the stage's options with their defaults, as the kind
// itself does, and keeps what every item's key shares.
func NewKeyer(s *spec.Stage, reg *steps.Registry, env *steps.Env, secrets []string, digest cachekey.FileDigester) (*Keyer, error) {
	k, ok := reg.Lookup(s.Kind)
	if !ok {
		return nil, fmt.Errorf("unknown step kind %q", s.Kind)
	}
	if k.Config == nil {
		return nil, fmt.Errorf("step kind %q has no options type", s.Kind)
	}
	cfg := reflect.New(k.Config)
	if ds := conf.Decode(s.Options, cfg.Interface(), &conf.Context{Vars: env.Vars}); len(ds) > 0 {
		return nil, ds
	}
	kr := &Keyer{kind: s.Kind, secrets: secrets, env: env, digest: digest, pure: true, envVals: map[string]string{}}
	w := &walker{vars: map[string]bool{}, envs: map[string]bool{}}
	opts, _ := w.value(cfg.Elem()).(map[string]any)
	if opts == nil {
		opts = map[string]any{}
	}
	for _, t := range w.templates {
		if t.Calls("now") {
			kr.pure = false
		}
	}
	// A template's result also depends on the variables and environment
	// variables it reads: they are part of the options, by value.
	for name := range w.vars {
		opts["vars."+name] = env.Vars[name]
	}
	for name := range w.envs {
		kr.envVals[name] = env.Env[name]
	}
	kr.index = w.index
	// Made canonical once: every item of the stage shares them.
	prepared, err := cachekey.PrepareOptions(opts, secrets)
	if err != nil {
		return nil, err
	}
	kr.options = prepared
	if kr.encoded, err = cachekey.EncodeOptions(prepared); err != nil {
		return nil, err
	}
	for _, key := range FileOptions[s.Kind] {
		if t := w.byKey[key]; t != nil {
			kr.files = append(kr.files, t)
		} else {
			// The kind's default for that option is the item itself.
			kr.files = append(kr.files, nil)
		}
	}
	if s.Cache != nil {
		kr.salt = s.Cache.Salt
		for _, name := range s.Cache.Env {
			kr.envVals[name] = env.Env[name]
		}
	}
	return kr, nil
}

// ReadsIndex reports whether a template of the stage reads index: the
// key then covers {item, index}, not the item alone.
func (k *Keyer) ReadsIndex() bool { return k.index }

// Key is the key of one item.
func (k *Keyer) Key(ctx context.Context, in steps.Input) (cachekey.Key, error) {
	item := in.Item
	if k.index {
		item = map[string]any{"item": in.Item, "index": in.Index}
	}
	ki := cachekey.Input{Kind: k.kind, Options: k.options, Prepared: true, Encoded: k.encoded, Item: item, Env: k.envVals, Salt: k.salt, Secrets: k.secrets}
	for _, t := range k.files {
		var v any = in.Item
		if t != nil {
			var err error
			if v, err = t.Eval(k.env.Scope(ctx, in)); err != nil {
				return cachekey.Key{}, err
			}
		}
		p, ok := v.(string)
		if !ok || p == "" {
			return cachekey.Key{}, fmt.Errorf("no file path for the key (got %T)", v)
		}
		if !filepath.IsAbs(p) && k.env.Dir != "" {
			p = filepath.Join(k.env.Dir, p)
		}
		ki.Files = append(ki.Files, p)
	}
	return cachekey.Build(ki, k.digest)
}

// The template references a key depends on, compiled on the first key
// rather than at init, which every flow process (and worker) would pay.
var (
	envRef = sync.OnceValue(func() *regexp.Regexp {
		return regexp.MustCompile(`\benv\.([A-Za-z_][A-Za-z0-9_]*)|\benv\[\s*["']([^"']+)["']\s*\]`)
	})
	indexRef = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`\bindex\b`) })
	durType  = reflect.TypeFor[time.Duration]()
	tmplType = reflect.TypeFor[*tmpl.T]()
)

// walker turns a decoded options struct into plain values: struct fields
// by their yaml key, templates as the YAML they were written as (their
// compiled form is not comparable), durations as text.
type walker struct {
	templates []*tmpl.T
	byKey     map[string]*tmpl.T // top-level template options by key
	vars      map[string]bool
	envs      map[string]bool
	index     bool
	depth     int
}

func (w *walker) value(v reflect.Value) any {
	if !v.IsValid() {
		return nil
	}
	if v.Type() == tmplType {
		if v.IsNil() {
			return nil
		}
		return w.template(v.Interface().(*tmpl.T))
	}
	if v.Type() == durType {
		return time.Duration(v.Int()).String()
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return w.value(v.Elem())
	case reflect.Struct:
		if v.CanAddr() {
			if n, ok := v.Addr().Interface().(interface{ Node() *yaml.Node }); ok && n.Node() != nil {
				return nodeValue(n.Node())
			}
		}
		out := map[string]any{}
		t := v.Type()
		top := w.depth == 0
		w.depth++
		defer func() { w.depth-- }()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			key := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if key == "-" {
				continue
			}
			if key == "" {
				key = strings.ToLower(f.Name)
			}
			fv := v.Field(i)
			out[key] = w.value(fv)
			if top && fv.Type() == tmplType && !fv.IsNil() {
				if w.byKey == nil {
					w.byKey = map[string]*tmpl.T{}
				}
				w.byKey[key] = fv.Interface().(*tmpl.T)
			}
		}
		if len(out) == 0 {
			// A type that decodes itself and keeps its state to itself:
			// its text is what it was given.
			if s, ok := v.Interface().(fmt.Stringer); ok {
				return s.String()
			}
			if v.CanAddr() {
				if s, ok := v.Addr().Interface().(fmt.Stringer); ok {
					return s.String()
				}
			}
		}
		return out
	case reflect.Map:
		if v.IsNil() {
			return nil
		}
		out := map[string]any{}
		keys := v.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
		w.depth++
		for _, mk := range keys {
			out[fmt.Sprint(mk.Interface())] = w.value(v.MapIndex(mk))
		}
		w.depth--
		return out
	case reflect.Slice, reflect.Array:
		if v.Kind() == reflect.Slice && v.IsNil() {
			return nil
		}
		out := make([]any, v.Len())
		w.depth++
		for i := range out {
			out[i] = w.value(v.Index(i))
		}
		w.depth--
		return out
	case reflect.Bool:
		return v.Bool()
	case reflect.String:
		return v.String()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return v.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return v.Uint()
	case reflect.Float32, reflect.Float64:
		return v.Float()
	}
	return fmt.Sprint(v.Interface())
}

func (w *walker) template(t *tmpl.T) any {
	w.templates = append(w.templates, t)
	for _, name := range t.VarNames() {
		w.vars[name] = true
	}
	var text string
	var val any
	if n := t.Node(); n != nil {
		val = nodeValue(n)
		b, _ := yaml.Marshal(n)
		text = string(b)
	} else {
		val, text = t.Source(), t.Source()
	}
	for _, m := range envRef().FindAllStringSubmatch(text, -1) {
		name := m[1]
		if name == "" {
			name = m[2]
		}
		w.envs[name] = true
	}
	if indexRef().MatchString(text) {
		w.index = true
	}
	return val
}

// nodeValue is the YAML as plain values; a node that does not decode (it
// was checked when the pipeline was validated) is kept as its text.
func nodeValue(n *yaml.Node) any {
	var v any
	if err := n.Decode(&v); err != nil {
		b, _ := yaml.Marshal(n)
		return string(b)
	}
	return plain(v)
}

// plain turns yaml's map[any]any (never produced by yaml.v3 for string
// keys, but possible for others) into map[string]any.
func plain(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = plain(e)
		}
		return x
	case map[any]any:
		out := map[string]any{}
		for k, e := range x {
			out[fmt.Sprint(k)] = plain(e)
		}
		return out
	case []any:
		for i, e := range x {
			x[i] = plain(e)
		}
		return x
	case time.Time:
		return x.Format(time.RFC3339Nano)
	}
	return v
}

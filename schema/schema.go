// Package schema generates schema.json, the JSON Schema (draft-07) of pipeline
// files, from the same struct tags and registered kinds that drive
// validation, so that what an editor flags and what 'flow validate' rejects
// cannot drift apart. yaml-language-server reads it through the modeline
// '# yaml-language-server: $schema=../schema.json'.
package schema

//go:generate go run ./gen -o ../schema.json

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/flowtest"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
)

// RefreshCommand is the command that rewrites schema.json at the repository
// root; tests print it when the file is stale.
const RefreshCommand = "go generate ./schema"

// DurationPattern matches what conf.ParseDuration accepts.
const DurationPattern = `^(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)$`

// Generate returns schema.json for pipelines whose kinds are those of reg:
// indented, keys sorted, ending in a newline, identical for identical input.
func Generate(reg *steps.Registry) ([]byte, error) {
	g := &gen{defs: map[string]any{}}
	root, err := g.build(reg)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(root); err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	return buf.Bytes(), nil
}

type gen struct {
	defs map[string]any
}

var (
	schemaerType    = reflect.TypeFor[conf.Schemaer]()
	unmarshalerType = reflect.TypeFor[conf.Unmarshaler]()
	shorthanderType = reflect.TypeFor[conf.Shorthander]()
	durationType    = reflect.TypeFor[time.Duration]()
	nodePtrType     = reflect.TypeFor[*yaml.Node]()
	stageType       = reflect.TypeFor[spec.Stage]()
	pipelineType    = reflect.TypeFor[spec.Pipeline]()
	testCaseType    = reflect.TypeFor[flowtest.Case]()
	// compiled on first use, not at every flow process's start
	codeSpan         = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`'([^']*)'`) })
	stageRoleFields  = []string{"source", "step", "sink"}
	draft07          = "http://json-schema.org/draft-07/schema#"
	pipelineDocument = "A flow pipeline: a source, then steps, then optionally a sink. Run it with 'flow run FILE'; check it with 'flow validate FILE'."
)

func (g *gen) build(reg *steps.Registry) (map[string]any, error) {
	kinds := map[steps.Role][]*steps.Kind{}
	for _, k := range reg.Kinds() {
		kinds[k.Role] = append(kinds[k.Role], k)
	}
	stage, err := g.object(stageType, func(f conf.Field) (map[string]any, bool) {
		switch f.Key {
		case "source":
			return g.kindRef(steps.RoleSource, kinds[steps.RoleSource]), true
		case "sink":
			return g.kindRef(steps.RoleSink, kinds[steps.RoleSink]), true
		case "step":
			s := map[string]any{"type": "string"}
			if ks := kinds[steps.RoleStep]; len(ks) > 0 {
				enumDocs(s, ks)
			}
			return s, true
		}
		return nil, false
	})
	if err != nil {
		return nil, err
	}
	// A stage is exactly one of source, step or sink.
	var oneOf []any
	for _, k := range stageRoleFields {
		oneOf = append(oneOf, map[string]any{"required": []any{k}})
	}
	stage["oneOf"] = oneOf
	var conds []any
	for _, k := range kinds[steps.RoleStep] {
		opts, err := g.options(k)
		if err != nil {
			return nil, err
		}
		g.defs["step-"+k.Name] = opts
		then := map[string]any{"properties": map[string]any{"with": withDocs(map[string]any{"$ref": "#/definitions/step-" + k.Name}, k)}}
		if !emptyOK(k) {
			then["required"] = []any{"with"} // the kind has required options
		}
		conds = append(conds, map[string]any{
			"if":   map[string]any{"properties": map[string]any{"step": map[string]any{"const": k.Name}}, "required": []any{"step"}},
			"then": then,
		})
	}
	if len(conds) > 0 {
		stage["allOf"] = conds
	}
	stage["title"] = "stage"
	g.defs["stage"] = stage

	if err := g.testCase(); err != nil {
		return nil, err
	}
	root, err := g.object(pipelineType, func(f conf.Field) (map[string]any, bool) {
		switch f.Key {
		case "stages":
			return map[string]any{"type": "array", "minItems": 1, "items": map[string]any{"$ref": "#/definitions/stage"}}, true
		case "tests":
			return map[string]any{"type": "array", "minItems": 1, "items": map[string]any{"$ref": "#/definitions/test-case"}}, true
		}
		return nil, false
	})
	if err != nil {
		return nil, err
	}
	// One schema for pipelines and their test files (NAME_test.yaml, a
	// pipeline's tests: section alone), so that one modeline serves both:
	// a file with version or stages is a pipeline and needs both; any
	// other file is a test file and needs tests.
	delete(root, "required")
	root["if"] = map[string]any{"anyOf": []any{
		map[string]any{"required": []any{"version"}},
		map[string]any{"required": []any{"stages"}},
	}}
	root["then"] = map[string]any{"required": []any{"version", "stages"}}
	root["else"] = map[string]any{"required": []any{"tests"}}
	root["$schema"] = draft07
	root["$id"] = "https://github.com/flowrun/flow/schema.json"
	root["title"] = "flow pipeline"
	describe(root, pipelineDocument)
	root["definitions"] = g.defs
	return root, nil
}

// testCase defines a test case of flow test (package flowtest).
func (g *gen) testCase() error {
	tc, err := g.object(testCaseType, nil)
	if err != nil {
		return err
	}
	// Items are any YAML value; the lists that hold them are lists.
	props := tc["properties"].(map[string]any)
	props["input"].(map[string]any)["type"] = "array"
	expect := props["expect"].(map[string]any)["properties"].(map[string]any)
	for _, k := range []string{"output", "contains"} {
		expect[k].(map[string]any)["type"] = "array"
	}
	tc["title"] = "test case"
	g.defs["test-case"] = tc
	return nil
}

// withDocs adds the kind's documentation to the schema of its options, so
// that hovering 'with:' or a source or sink kind explains the kind.
func withDocs(s map[string]any, k *steps.Kind) map[string]any {
	text := k.Summary
	if k.Doc != "" {
		text = strings.TrimSpace(text + "\n\n" + k.Doc)
	}
	if k.Result != "" {
		text += "\n\nResult: " + k.Result
	}
	if text != "" {
		describe(s, text)
	}
	if k.Example != "" {
		var ex any
		if yaml.Unmarshal([]byte(k.Example), &ex) == nil && ex != nil {
			s["examples"] = []any{conf.Normalize(ex)}
		}
	}
	return s
}

// emptyOK reports whether the kind accepts having no options at all.
func emptyOK(k *steps.Kind) bool {
	return len(k.Check(&yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}, nil)) == 0
}

// kindRef is the schema of a source or sink: {KIND: OPTIONS}, or just KIND
// for kinds that need no options.
func (g *gen) kindRef(role steps.Role, kinds []*steps.Kind) map[string]any {
	if len(kinds) == 0 {
		return (*spec.KindRef)(nil).JSONSchema()
	}
	props := map[string]any{}
	var bare []string
	for _, k := range kinds {
		opts, err := g.options(k)
		if err != nil {
			opts = map[string]any{}
		}
		name := string(role) + "-" + k.Name
		g.defs[name] = opts
		props[k.Name] = withDocs(map[string]any{"$ref": "#/definitions/" + name}, k)
		if emptyOK(k) {
			bare = append(bare, k.Name)
		}
	}
	obj := map[string]any{"type": "object", "properties": props, "additionalProperties": false, "minProperties": 1, "maxProperties": 1}
	if len(bare) == 0 {
		return obj
	}
	names := map[string]bool{}
	for _, n := range bare {
		names[n] = true
	}
	var bareKinds []*steps.Kind
	for _, k := range kinds {
		if names[k.Name] {
			bareKinds = append(bareKinds, k)
		}
	}
	// The mapping first: editors report the first alternative's problems
	// when none matches, and a mapping is the usual form.
	return map[string]any{"anyOf": []any{obj, enumDocs(map[string]any{"type": "string"}, bareKinds)}}
}

// enumDocs sets an enum of kind names with their summaries, which editors
// show beside each name in completion lists.
func enumDocs(s map[string]any, kinds []*steps.Kind) map[string]any {
	var names, docs, md []any
	for _, k := range kinds { // Registry.Kinds is sorted by name within a role
		names = append(names, k.Name)
		docs = append(docs, k.Summary)
		md = append(md, codeSpan().ReplaceAllString(k.Summary, "`$1`"))
	}
	s["enum"] = names
	s["enumDescriptions"] = docs
	s["markdownEnumDescriptions"] = md
	return s
}

func (g *gen) options(k *steps.Kind) (map[string]any, error) {
	if k.Config == nil {
		return map[string]any{}, nil
	}
	s, err := g.typ(k.Config, conf.Field{})
	if err != nil {
		return nil, fmt.Errorf("schema: options of kind %q: %w", k.Name, err)
	}
	return s, nil
}

// object describes a struct; override may supply the schema of some fields.
func (g *gen) object(t reflect.Type, override func(conf.Field) (map[string]any, bool)) (map[string]any, error) {
	props := map[string]any{}
	var required []any
	for _, f := range conf.Fields(t) {
		var s map[string]any
		var ok bool
		if override != nil {
			s, ok = override(f)
		}
		if !ok {
			var err error
			if s, err = g.typ(f.Type, f); err != nil {
				return nil, fmt.Errorf("field %q: %w", f.Key, err)
			}
		}
		annotate(s, f)
		props[f.Key] = s
		if f.Required {
			required = append(required, f.Key)
		}
	}
	out := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
	if len(required) > 0 {
		out["required"] = required
	}
	return out, nil
}

// typ is the schema of a Go type as conf.Decode reads it.
func (g *gen) typ(t reflect.Type, f conf.Field) (map[string]any, error) {
	pt := reflect.PointerTo(t)
	if t.Kind() == reflect.Pointer {
		pt, t = t, t.Elem()
	}
	switch {
	case pt == nodePtrType || t == nodePtrType:
		return map[string]any{}, nil
	case pt.Implements(schemaerType):
		return clone(reflect.New(t).Interface().(conf.Schemaer).JSONSchema()), nil
	case pt.Implements(unmarshalerType):
		// It reads YAML its own way and says nothing of it: accept anything
		// rather than reject what 'flow validate' accepts.
		return map[string]any{}, nil
	case t == durationType:
		return map[string]any{"type": []any{"string", "integer"}, "pattern": DurationPattern, "minimum": 0, "maximum": 0,
			"patternErrorMessage": `invalid duration: use a Go duration such as "250ms", "5s" or "1m30s"`}, nil
	}
	switch t.Kind() {
	case reflect.String:
		if len(f.Enum) > 0 {
			return map[string]any{"type": "string", "enum": toAny(f.Enum)}, nil
		}
		// conf reads any scalar as a string ("name: 2024").
		return map[string]any{"type": []any{"string", "number", "boolean"}}, nil
	case reflect.Bool:
		return map[string]any{"type": "boolean"}, nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		s := map[string]any{"type": "integer"}
		if len(f.Enum) > 0 {
			s["enum"] = typedList(f.Enum, s)
		}
		return s, nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer", "minimum": 0}, nil
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}, nil
	case reflect.Interface:
		return map[string]any{}, nil
	case reflect.Slice:
		item, err := g.typ(t.Elem(), conf.Field{Enum: f.Enum})
		if err != nil {
			return nil, err
		}
		arr := map[string]any{"type": "array", "items": item}
		// conf reads a single scalar where a list is expected as a list of one.
		if len(item) == 0 {
			return map[string]any{"anyOf": []any{scalarOnly(item), arr}}, nil
		}
		if isScalar(item) {
			return map[string]any{"anyOf": []any{clone(item), arr}}, nil
		}
		return arr, nil
	case reflect.Map:
		if t.Key().Kind() != reflect.String {
			return nil, fmt.Errorf("map keys must be strings, not %s", t.Key())
		}
		val, err := g.typ(t.Elem(), conf.Field{})
		if err != nil {
			return nil, err
		}
		return map[string]any{"type": "object", "additionalProperties": val}, nil
	case reflect.Struct:
		obj, err := g.object(t, nil)
		if err != nil {
			return nil, err
		}
		if pt.Implements(shorthanderType) {
			key := reflect.New(t).Interface().(conf.Shorthander).Shorthand()
			props := obj["properties"].(map[string]any)
			short, ok := props[key].(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%s: shorthand names %q, which is not a field", t, key)
			}
			// The scalar form: what the shorthand field accepts, minus
			// mappings (a mapping is the long form).
			if alts, ok := short["anyOf"].([]any); ok && len(alts) == 2 && isScalar(alts[0].(map[string]any)) {
				short = alts[0].(map[string]any)
			}
			return map[string]any{"anyOf": []any{scalarOnly(short), obj}}, nil
		}
		return obj, nil
	}
	return nil, fmt.Errorf("unsupported type %s", t)
}

// annotate adds a field's documentation: description and its Markdown form,
// default and examples typed like the field's values.
func annotate(s map[string]any, f conf.Field) {
	if alts, ok := s["anyOf"]; ok && f.Desc != "" {
		// yaml-language-server's hover shows the plain description of a
		// schema with anyOf (joined with its branches' titles) and ignores
		// markdownDescription; one level of allOf keeps the Markdown.
		delete(s, "anyOf")
		all, _ := s["allOf"].([]any)
		s["allOf"] = append(all, map[string]any{"anyOf": alts})
	}
	if f.Desc != "" {
		describe(s, f.Desc)
	}
	if f.Default != "" {
		s["default"] = typed(f.Default, s)
	}
	if f.Example != "" {
		s["examples"] = []any{typed(f.Example, s)}
	}
}

func describe(s map[string]any, text string) {
	s["description"] = text
	s["markdownDescription"] = codeSpan().ReplaceAllString(text, "`$1`")
}

// typed reads a tag value as YAML when the schema wants a non-string, so
// that 'default:"3"' on an int is the number 3.
func typed(v string, s map[string]any) any {
	if st, ok := s["type"].(string); ok && st == "string" {
		return v
	}
	if st, ok := s["type"].([]any); ok && len(st) > 0 && st[0] == "string" {
		return v
	}
	var x any
	if err := yaml.Unmarshal([]byte(v), &x); err != nil || x == nil {
		return v
	}
	return conf.Normalize(x)
}

func typedList(vs []string, s map[string]any) []any {
	out := make([]any, len(vs))
	for i, v := range vs {
		out[i] = typed(v, s)
	}
	return out
}

func isScalar(s map[string]any) bool {
	switch t := s["type"].(type) {
	case string:
		return t != "object" && t != "array"
	case []any:
		for _, x := range t {
			if x == "object" || x == "array" {
				return false
			}
		}
		return true
	}
	return false
}

func scalarOnly(s map[string]any) map[string]any {
	if _, ok := s["type"]; ok {
		return s
	}
	s = clone(s)
	s["type"] = []any{"string", "number", "boolean"}
	return s
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// clone deep-copies a schema so that annotating it never changes the map a
// JSONSchema method may return to every caller.
func clone(s map[string]any) map[string]any {
	var c func(any) any
	c = func(x any) any {
		switch t := x.(type) {
		case map[string]any:
			m := make(map[string]any, len(t))
			for k, v := range t {
				m[k] = c(v)
			}
			return m
		case []any:
			l := make([]any, len(t))
			for i, v := range t {
				l[i] = c(v)
			}
			return l
		}
		return x
	}
	return c(s).(map[string]any)
}

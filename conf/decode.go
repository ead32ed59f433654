package conf

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"
)

// Context travels with a decode so that fields which compile expressions can
// type-check them against what the pipeline declares.
type Context struct {
	// Vars holds the pipeline's variables with their effective values.
	Vars map[string]any
	// NoItem is set while decoding options evaluated once, before any item
	// exists (a source's): expressions there may not use item or index.
	NoItem bool
}

// Unmarshaler is implemented by types that decode themselves from a node
// (durations, rates, `${ }` templates). A returned Diags or *PosError keeps its
// own positions; any other error is placed at the node.
type Unmarshaler interface {
	UnmarshalNode(n *yaml.Node, c *Context) error
}

// Shorthander is implemented by option structs that accept a scalar in place
// of a mapping: the scalar sets the field named by Shorthand (its yaml key),
// e.g. `sink: {print: jsonl}` sets print's `format`.
type Shorthander interface {
	Shorthand() string
}

// Schemaer is implemented by types that decode themselves (Unmarshaler) and
// so cannot be described from their Go fields: it returns the JSON Schema of
// the YAML they accept (without description, which comes from the field's
// desc tag). The map must be JSON-marshalable and is not modified by callers.
type Schemaer interface {
	JSONSchema() map[string]any
}

// Validator is implemented by option structs with checks across fields. It
// runs only when the struct decoded without errors.
type Validator interface {
	Validate() error
}

var (
	unmarshalerType = reflect.TypeFor[Unmarshaler]()
	durationType    = reflect.TypeFor[time.Duration]()
	nodePtrType     = reflect.TypeFor[*yaml.Node]()
)

// Decode decodes n into v, which must be a non-nil pointer. Every problem is
// reported, each at its own position: unknown keys (with a suggestion), wrong
// types, values outside an `enum`, missing `required` fields.
func Decode(n *yaml.Node, v any, c *Context) Diags {
	if c == nil {
		c = &Context{}
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		panic("conf.Decode: need a non-nil pointer")
	}
	d := &decoder{ctx: c}
	if n != nil && n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	if n == nil {
		n = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	}
	d.value(n, rv.Elem(), fieldInfo{})
	return d.diags
}

type decoder struct {
	ctx   *Context
	diags Diags
}

func (d *decoder) errf(n *yaml.Node, format string, args ...any) {
	d.diags.Add(NodePos(n), format, args...)
}

// Field is one decoded struct field, as described by its tags.
type Field struct {
	Key      string // yaml key
	Index    int
	Desc     string // `desc`
	Enum     []string
	Default  string
	Example  string
	Required bool
	Type     reflect.Type
}

type fieldInfo struct {
	key  string
	enum []string
}

// Fields lists the keys a struct type accepts, in declaration order. Embedded
// structs without a yaml name are flattened. The caller may modify the
// slice it gets.
func Fields(t reflect.Type) []Field { return slices.Clone(fields(t)) }

// fieldCache holds fields' answers by type: reading the tags (a desc: tag
// is a paragraph, scanned byte by byte for every key) was most of decoding
// a pipeline when done for every struct decoded.
var fieldCache sync.Map // reflect.Type -> []Field

// fields is Fields shared: its slice must not be modified.
func fields(t reflect.Type) []Field {
	if f, ok := fieldCache.Load(t); ok {
		return f.([]Field)
	}
	f, _ := fieldCache.LoadOrStore(t, readFields(t))
	return f.([]Field)
}

func readFields(t reflect.Type) []Field {
	var out []Field
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		tag := sf.Tag.Get("yaml")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if sf.Anonymous && name == "" && sf.Type.Kind() == reflect.Struct {
			for _, f := range fields(sf.Type) {
				f.Index = -1 // embedded fields are set through FieldByName
				out = append(out, f)
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		f := Field{Key: name, Index: i, Desc: sf.Tag.Get("desc"), Default: sf.Tag.Get("default"),
			Example: sf.Tag.Get("example"), Required: sf.Tag.Get("required") == "true", Type: sf.Type}
		if e := sf.Tag.Get("enum"); e != "" {
			f.Enum = strings.Split(e, ",")
		}
		out = append(out, f)
	}
	return out
}

func fieldByKey(v reflect.Value, key string) reflect.Value {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if sf.Anonymous && name == "" && sf.Type.Kind() == reflect.Struct {
			if f := fieldByKey(v.Field(i), key); f.IsValid() {
				return f
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		if name == key {
			return v.Field(i)
		}
	}
	return reflect.Value{}
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	switch n.Tag {
	case "!!null":
		return "null"
	case "!!bool":
		return "a boolean"
	case "!!int":
		return "an integer"
	case "!!float":
		return "a number"
	}
	return "a string"
}

func (d *decoder) value(n *yaml.Node, v reflect.Value, fi fieldInfo) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if v.Type() == nodePtrType {
		v.Set(reflect.ValueOf(n))
		return
	}
	if v.CanAddr() && v.Addr().Type().Implements(unmarshalerType) {
		if v.Kind() == reflect.Pointer && v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		u := v.Addr().Interface().(Unmarshaler)
		d.diags.AddErr(NodePos(n), u.UnmarshalNode(n, d.ctx))
		return
	}
	if v.Kind() == reflect.Pointer {
		if n.Tag == "!!null" {
			return
		}
		// Keep what decoded even when part of it is wrong: callers get every
		// diagnostic anyway, and later checks (a stage's roles, names, kind
		// options) still run on the fields that are right, so one bad field
		// does not hide the other problems around it.
		nv := reflect.New(v.Type().Elem())
		d.value(n, nv.Elem(), fi)
		v.Set(nv)
		return
	}
	if v.Type() == durationType {
		dur, err := ParseDuration(n)
		if err != nil {
			d.diags.AddErr(NodePos(n), err)
			return
		}
		v.SetInt(int64(dur))
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.structure(n, v)
	case reflect.String:
		if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
			d.errf(n, "%s must be a string, got %s", label(fi), kindName(n))
			return
		}
		if len(fi.enum) > 0 && !contains(fi.enum, n.Value) {
			d.errf(n, "%s must be one of %s, got %q%s", label(fi), strings.Join(fi.enum, ", "), n.Value, Suggest(n.Value, fi.enum))
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" || n.Decode(&b) != nil {
			d.errf(n, "%s must be true or false, got %s", label(fi), describe(n))
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		i, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, 64)
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || err != nil || v.OverflowInt(i) {
			d.errf(n, "%s must be an integer, got %s", label(fi), describe(n))
			return
		}
		if len(fi.enum) > 0 && !contains(fi.enum, strconv.FormatInt(i, 10)) {
			d.errf(n, "%s must be %s, got %s", label(fi), strings.Join(fi.enum, " or "), n.Value)
			return
		}
		v.SetInt(i)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		i, err := strconv.ParseUint(strings.ReplaceAll(n.Value, "_", ""), 0, 64)
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || err != nil || v.OverflowUint(i) {
			d.errf(n, "%s must be a non-negative integer, got %s", label(fi), describe(n))
			return
		}
		v.SetUint(i)
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), 64)
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") || err != nil || math.IsNaN(f) {
			d.errf(n, "%s must be a number, got %s", label(fi), describe(n))
			return
		}
		v.SetFloat(f)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			// A single value where a list is expected is a list of one.
			if n.Kind == yaml.ScalarNode && n.Tag != "!!null" {
				s := reflect.MakeSlice(v.Type(), 1, 1)
				d.value(n, s.Index(0), fi)
				v.Set(s)
				return
			}
			d.errf(n, "%s must be a list, got %s", label(fi), kindName(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			d.value(c, s.Index(i), fieldInfo{key: fmt.Sprintf("%s[%d]", fi.key, i), enum: fi.enum})
		}
		v.Set(s)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			d.errf(n, "%s must be a mapping, got %s", label(fi), kindName(n))
			return
		}
		if v.Type().Key().Kind() != reflect.String {
			panic("conf: map keys must be strings")
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			ev := reflect.New(v.Type().Elem()).Elem()
			d.value(val, ev, fieldInfo{key: k.Value})
			m.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), ev)
		}
		v.Set(m)
	case reflect.Interface:
		var x any
		if err := n.Decode(&x); err != nil {
			d.errf(n, "%s: %v", label(fi), err)
			return
		}
		if x != nil {
			v.Set(reflect.ValueOf(Normalize(x)))
		}
	default:
		panic(fmt.Sprintf("conf: unsupported field type %s", v.Type()))
	}
}

func (d *decoder) structure(n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		if sh, ok := v.Addr().Interface().(Shorthander); ok && n.Kind == yaml.ScalarNode && n.Tag != "!!null" {
			key := sh.Shorthand()
			var enum []string
			for _, f := range fields(v.Type()) {
				if f.Key == key {
					enum = f.Enum
				}
			}
			d.value(n, fieldByKey(v, key), fieldInfo{key: key, enum: enum})
			applyDefaults(v, map[string]bool{key: true})
			d.validate(n, v)
			return
		}
		if n.Tag == "!!null" {
			n = &yaml.Node{Kind: yaml.MappingNode, Line: n.Line, Column: n.Column}
		} else {
			d.errf(n, "expected a mapping, got %s", kindName(n))
			return
		}
	}
	setNode(v, n)
	fields := fields(v.Type())
	keys := make([]string, len(fields))
	for i, f := range fields {
		keys[i] = f.Key
	}
	seen := map[string]bool{}
	before := len(d.diags)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if seen[k.Value] {
			d.errf(k, "duplicate key %q", k.Value)
			continue
		}
		seen[k.Value] = true
		idx := -1
		for j, f := range fields {
			if f.Key == k.Value {
				idx = j
			}
		}
		if idx < 0 {
			sorted := append([]string(nil), keys...)
			sort.Strings(sorted)
			d.errf(k, "unknown key %q%s; expected one of: %s", k.Value, Suggest(k.Value, keys), strings.Join(sorted, ", "))
			continue
		}
		d.value(val, fieldByKey(v, k.Value), fieldInfo{key: k.Value, enum: fields[idx].Enum})
	}
	for _, f := range fields {
		if f.Required && !seen[f.Key] {
			d.errf(n, "missing required key %q", f.Key)
		}
	}
	applyDefaults(v, seen)
	if len(d.diags) == before {
		d.validate(n, v)
	}
}

// setNode stores the mapping node in a field tagged `conf:"node"` of type
// *yaml.Node, so that later checks can point at keys of the struct.
func setNode(v reflect.Value, n *yaml.Node) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		if t.Field(i).Tag.Get("conf") == "node" && t.Field(i).Type == nodePtrType {
			v.Field(i).Set(reflect.ValueOf(n))
		}
	}
}

// KeyPos returns the position of key in mapping n, or of n itself when the
// key is absent; ValuePos likewise for the key's value.
func KeyPos(n *yaml.Node, key string) Pos {
	if k, _ := lookup(n, key); k != nil {
		return NodePos(k)
	}
	return NodePos(n)
}

func ValuePos(n *yaml.Node, key string) Pos {
	if _, v := lookup(n, key); v != nil {
		return NodePos(v)
	}
	return NodePos(n)
}

// Lookup returns the value node of key in mapping n.
func Lookup(n *yaml.Node, key string) *yaml.Node {
	_, v := lookup(n, key)
	return v
}

func lookup(n *yaml.Node, key string) (k, v *yaml.Node) {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil, nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i], n.Content[i+1]
		}
	}
	return nil, nil
}

func (d *decoder) validate(n *yaml.Node, v reflect.Value) {
	if val, ok := v.Addr().Interface().(Validator); ok {
		d.diags.AddErr(NodePos(n), val.Validate())
	}
}

func label(fi fieldInfo) string {
	if fi.key == "" {
		return "value"
	}
	return strconv.Quote(fi.key)
}

func describe(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode && n.Tag != "!!null" {
		return fmt.Sprintf("%s %q", kindName(n), n.Value)
	}
	return kindName(n)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// ParseDuration reads a Go duration ("250ms", "1m30s") from a scalar node.
func ParseDuration(n *yaml.Node) (time.Duration, error) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		return 0, Errorf(NodePos(n), "expected a duration such as \"250ms\", \"5s\" or \"1m30s\", got %s", kindName(n))
	}
	if n.Value == "0" {
		return 0, nil
	}
	dur, err := time.ParseDuration(n.Value)
	if err != nil {
		hint := ""
		if n.Tag == "!!int" || n.Tag == "!!float" {
			hint = fmt.Sprintf(" (add a unit: \"%ss\")", n.Value)
		}
		return 0, Errorf(NodePos(n), "invalid duration %q: use a Go duration such as \"250ms\", \"5s\" or \"1m30s\"%s", n.Value, hint)
	}
	if dur < 0 {
		return 0, Errorf(NodePos(n), "duration %q must not be negative", n.Value)
	}
	return dur, nil
}

// Normalize turns YAML-decoded values into JSON-shaped ones: maps with string
// keys, int64 integers, float64 numbers, []any lists.
func Normalize(x any) any {
	switch t := x.(type) {
	case map[string]any:
		for k, v := range t {
			t[k] = Normalize(v)
		}
		return t
	case map[any]any:
		m := make(map[string]any, len(t))
		for k, v := range t {
			m[fmt.Sprint(k)] = Normalize(v)
		}
		return m
	case []any:
		for i, v := range t {
			t[i] = Normalize(v)
		}
		return t
	case int:
		return int64(t)
	case uint64:
		return float64(t)
	}
	return x
}

// DecodesItself reports types that decode themselves from a node (and so are
// one value in a file, whatever their Go fields) or describe their own schema.
func DecodesItself(t reflect.Type) bool {
	pt := reflect.PointerTo(t)
	return pt.Implements(unmarshalerType) || pt.Implements(reflect.TypeFor[Schemaer]())
}

// applyDefaults sets every field of struct v that the file left out (not
// in seen) to the value of its `default:` tag. The tag is therefore the
// behaviour, not only its documentation: docs, schema and decoding read
// the same text, and no package writes the value a second time.
func applyDefaults(v reflect.Value, seen map[string]bool) {
	for _, f := range fields(v.Type()) {
		if f.Default == "" || seen[f.Key] {
			continue
		}
		fv := fieldByKey(v, f.Key)
		if !fv.IsZero() {
			continue // set by a shorthand or an unmarshaler already
		}
		d := &decoder{ctx: &Context{}}
		d.value(defaultNode(f.Default, f.Type), fv, fieldInfo{key: f.Key, enum: f.Enum})
		if len(d.diags) > 0 {
			// A wiring bug, caught the first time the type decodes.
			panic(fmt.Sprintf("conf: the default %q of %s.%s does not decode: %v", f.Default, v.Type(), f.Key, d.diags))
		}
	}
}

var defaultNodes sync.Map // default text + type -> *yaml.Node

// defaultNode reads a default tag as YAML ("[0]" is a list, "true" a
// boolean), except where the text is not a YAML scalar of its own ("{stem}.{ext}"),
// which stays a string.
func defaultNode(text string, t reflect.Type) *yaml.Node {
	key := text + "\x00" + t.String()
	if n, ok := defaultNodes.Load(key); ok {
		return n.(*yaml.Node)
	}
	n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: text}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err == nil && len(doc.Content) == 1 {
		c := doc.Content[0]
		if c.Kind == yaml.SequenceNode || c.Kind == yaml.ScalarNode {
			n = c
		}
	}
	defaultNodes.Store(key, n)
	return n
}

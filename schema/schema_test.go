package schema_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/schema"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/spec/spectest"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/steps/all"
)

// TestSchemaJSONIsFresh fails when the committed schema.json is not what the
// code generates, so the file editors use cannot drift from the validator.
func TestSchemaJSONIsFresh(t *testing.T) {
	want, err := schema.Generate(all.Registry())
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("../schema.json")
	if err != nil {
		t.Fatalf("%v; create it with: %s", err, schema.RefreshCommand)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("schema.json is stale (it differs from what the step kinds and spec types generate); refresh it with:\n\t%s\nand commit it", schema.RefreshCommand)
	}
}

func TestGenerateIsDeterministic(t *testing.T) {
	a, err := schema.Generate(all.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		b, _ := schema.Generate(all.Registry())
		if !bytes.Equal(a, b) {
			t.Fatal("two runs of Generate differ")
		}
	}
}

func compile(t *testing.T, reg *steps.Registry) *jsonschema.Schema {
	t.Helper()
	data, err := schema.Generate(reg)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("schema.json", doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("schema.json")
	if err != nil {
		t.Fatalf("schema does not compile as draft-07: %v", err)
	}
	return sch
}

// instance reads a YAML file as the JSON value an editor validates.
func instance(t *testing.T, data []byte) (any, *yaml.Node) {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	var v any
	if err := doc.Decode(&v); err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(conf.Normalize(v))
	if err != nil {
		t.Fatal(err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		t.Fatal(err)
	}
	return inst, &doc
}

func TestValidFilesPassTheSchema(t *testing.T) {
	fake := compile(t, spectest.Registry())
	files, _ := filepath.Glob("../spec/testdata/valid/*.yaml")
	if len(files) == 0 {
		t.Fatal("no valid corpus")
	}
	for _, f := range files {
		data, _ := os.ReadFile(f)
		inst, _ := instance(t, data)
		if err := fake.Validate(inst); err != nil {
			t.Errorf("%s: rejected by the schema:\n%v", f, err)
		}
	}
	// The examples run on the real kinds, with the committed schema's source.
	examples, _ := filepath.Glob("../examples/*.yaml")
	if len(examples) == 0 {
		t.Log("no examples/*.yaml yet")
		return
	}
	real := compile(t, all.Registry())
	for _, f := range examples {
		data, _ := os.ReadFile(f)
		inst, _ := instance(t, data)
		if err := real.Validate(inst); err != nil {
			t.Errorf("%s: rejected by the schema:\n%v", f, err)
		}
	}
}

// TestSchemaAgreesWithValidator: each invalid file that is wrong in shape
// (unknown keys, bad enums, wrong types) is rejected by the schema too, and
// every line the schema flags is a line 'flow validate' flags, so the editor
// and the validator point at the same places.
func TestSchemaAgreesWithValidator(t *testing.T) {
	sch := compile(t, spectest.Registry())
	cat := spectest.Registry()
	// Files whose problems are (partly) beyond JSON Schema: roles by
	// position, cross-references, expressions. The schema may accept them.
	semantic := map[string]bool{"exprs.yaml": true, "policies.yaml": true, "one-bad-field.yaml": true}
	files, _ := filepath.Glob("../spec/testdata/invalid/*.yaml")
	for _, f := range files {
		base := filepath.Base(f)
		data, _ := os.ReadFile(f)
		var probe yaml.Node
		if len(bytes.TrimSpace(data)) == 0 || yaml.Unmarshal(data, &probe) != nil {
			continue // not YAML: the editor's parser reports it, not the schema
		}
		t.Run(strings.TrimSuffix(base, ".yaml"), func(t *testing.T) {
			_, perr := spec.Parse(base, data, spec.Options{}, cat)
			var ds conf.Diags
			if !errors.As(perr, &ds) {
				t.Fatalf("spec.Parse accepts %s", f)
			}
			specLines := map[int]bool{}
			for _, d := range ds {
				specLines[d.Line] = true
			}
			inst, doc := instance(t, data)
			err := sch.Validate(inst)
			if err == nil {
				if !semantic[base] {
					t.Fatalf("the schema accepts %s, which flow validate rejects:\n%v", base, perr)
				}
				return
			}
			var ve *jsonschema.ValidationError
			if !errors.As(err, &ve) {
				t.Fatal(err)
			}
			for _, sp := range schemaSpans(ve, doc) {
				hit := false
				for l := sp[0]; l <= sp[1]; l++ {
					hit = hit || specLines[l]
				}
				if !hit {
					t.Errorf("the schema flags lines %d-%d of %s, flow validate does not:\n%v\nflow validate:\n%v", sp[0], sp[1], base, err, perr)
				}
			}
		})
	}
}

// schemaSpans maps the deepest errors to the lines an editor would mark: the
// key of an unknown or badly named property, the line of a wrong scalar, or
// the lines of a mapping or list that is wrong as a whole.
func schemaSpans(ve *jsonschema.ValidationError, doc *yaml.Node) [][2]int {
	root := doc.Content[0]
	seen := map[[2]int]bool{}
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		switch k := e.ErrorKind.(type) {
		case *kind.PropertyNames:
			// The library places this error oddly; find the key by name.
			if key := findKey(root, k.Property); key != nil {
				seen[[2]int{key.Line, key.Line}] = true
			}
			return
		case *kind.AdditionalProperties:
			n := at(root, e.InstanceLocation)
			for i := 0; i+1 < len(n.Content); i += 2 {
				for _, p := range k.Properties {
					if n.Content[i].Value == p {
						seen[[2]int{n.Content[i].Line, n.Content[i].Line}] = true
					}
				}
			}
			return
		}
		if len(e.Causes) == 0 {
			n := at(root, e.InstanceLocation)
			seen[[2]int{n.Line, lastLine(n)}] = true
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	var out [][2]int
	for sp := range seen {
		out = append(out, sp)
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return out
}

func lastLine(n *yaml.Node) int {
	l := n.Line
	for _, c := range n.Content {
		l = max(l, lastLine(c))
	}
	return l
}

func findKey(n *yaml.Node, name string) *yaml.Node {
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == name {
				return n.Content[i]
			}
		}
	}
	for _, c := range n.Content {
		if k := findKey(c, name); k != nil {
			return k
		}
	}
	return nil
}

func at(n *yaml.Node, path []string) *yaml.Node {
	for _, tok := range path {
		switch n.Kind {
		case yaml.MappingNode:
			var next *yaml.Node
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == tok {
					next = n.Content[i+1]
				}
			}
			if next == nil {
				return n
			}
			n = next
		case yaml.SequenceNode:
			i, err := strconv.Atoi(tok)
			if err != nil || i >= len(n.Content) {
				return n
			}
			n = n.Content[i]
		default:
			return n
		}
	}
	return n
}

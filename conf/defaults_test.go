package conf

import (
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

type withDefaults struct {
	Mode    string        `yaml:"mode" enum:"a,b" default:"b"`
	Wait    time.Duration `yaml:"wait" default:"150ms"`
	Codes   []int         `yaml:"codes" default:"[0, 2]"`
	On      *bool         `yaml:"on" default:"true"`
	Name    string        `yaml:"name" default:"{stem}.{ext}"`
	Plain   int           `yaml:"plain"`
	Nested  *inner        `yaml:"nested"`
	Unset   *inner        `yaml:"unset"`
	Written string        `yaml:"written" default:"x"`
}

type inner struct {
	N int `yaml:"n" default:"7"`
}

func (*inner) Shorthand() string { return "n" }

func decodeText(t *testing.T, src string, v any) Diags {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	return Decode(&doc, v, nil)
}

// The default: tag is what decoding fills in: the docs, the schema and the
// behaviour read one text.
func TestDecodeAppliesDefaultTags(t *testing.T) {
	var v withDefaults
	if ds := decodeText(t, "nested: {}\nwritten: \"\"\n", &v); len(ds) > 0 {
		t.Fatal(ds)
	}
	if v.Mode != "b" || v.Wait != 150*time.Millisecond || len(v.Codes) != 2 || v.Codes[1] != 2 ||
		v.On == nil || !*v.On || v.Name != "{stem}.{ext}" || v.Plain != 0 {
		t.Errorf("defaults not applied: %+v", v)
	}
	if v.Nested == nil || v.Nested.N != 7 {
		t.Errorf("a nested mapping's defaults: %+v", v.Nested)
	}
	if v.Unset != nil {
		t.Errorf("an absent optional mapping stays absent, got %+v", v.Unset)
	}
	if v.Written != "" {
		t.Errorf("a value written in the file (even empty) is kept, got %q", v.Written)
	}
	var w withDefaults
	if ds := decodeText(t, "mode: a\nnested: 3\n", &w); len(ds) > 0 || w.Mode != "a" || w.Nested.N != 3 {
		t.Errorf("written values win over defaults: %+v %v", w, ds)
	}
}

type badDefault struct {
	N int `yaml:"n" default:"many"`
}

// A default that does not decode is a wiring bug, caught on first use.
func TestDecodePanicsOnABadDefault(t *testing.T) {
	defer func() {
		p := recover()
		if p == nil || !strings.Contains(p.(string), `default "many"`) {
			t.Fatalf("recovered %v", p)
		}
	}()
	var v badDefault
	decodeText(t, "{}", &v)
}

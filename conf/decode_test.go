package conf_test

import (
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
)

type inner struct {
	A int    `yaml:"a"`
	B string `yaml:"b" enum:"x,y"`
}

type outer struct {
	Version int      `yaml:"version" enum:"1"`
	In      *inner   `yaml:"in"`
	List    []string `yaml:"list"`
}

func decode(t *testing.T, src string) (*outer, conf.Diags) {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(src), &n); err != nil {
		t.Fatal(err)
	}
	var o outer
	return &o, conf.Decode(&n, &o, nil)
}

// A struct behind a pointer keeps its good fields when another is wrong, so
// that later checks still see them; the error is still reported.
func TestPointerKeepsWhatDecoded(t *testing.T) {
	o, ds := decode(t, "in: {a: 3, b: z}\n")
	if len(ds) != 1 || ds[0].Line != 1 || ds[0].Col != 15 || !strings.Contains(ds[0].Msg, `"b" must be one of x, y`) {
		t.Fatalf("diags = %v", ds)
	}
	if o.In == nil || o.In.A != 3 {
		t.Fatalf("In = %+v, want the good field kept", o.In)
	}
}

func TestIntegerEnumAndListOfOne(t *testing.T) {
	o, ds := decode(t, "version: 2\nlist: one\n")
	if len(ds) != 1 || ds[0].Msg != `"version" must be 1, got 2` {
		t.Fatalf("diags = %v", ds)
	}
	if len(o.List) != 1 || o.List[0] != "one" {
		t.Errorf("list = %q, want [one]", o.List)
	}
	if _, ds := decode(t, "version: 1\nin: ~\n"); len(ds) != 0 {
		t.Errorf("valid input: %v", ds)
	}
}

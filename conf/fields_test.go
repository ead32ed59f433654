package conf_test

import (
	"reflect"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
)

type withDefault struct {
	N    int    `yaml:"n" default:"7"`
	Mode string `yaml:"mode" enum:"a,b" default:"a"`
}

// Decoding keeps each type's fields once read; what Fields hands out is the
// caller's own, so changing it changes no later decoding.
func TestFieldsIsTheCallersCopy(t *testing.T) {
	typ := reflect.TypeFor[withDefault]()
	fs := conf.Fields(typ)
	if len(fs) != 2 || fs[0].Default != "7" || fs[1].Enum[1] != "b" {
		t.Fatalf("Fields = %+v", fs)
	}
	fs[0].Default, fs[1].Key = "99", "other"
	var n yaml.Node
	if err := yaml.Unmarshal([]byte("mode: b\n"), &n); err != nil {
		t.Fatal(err)
	}
	var v withDefault
	if ds := conf.Decode(&n, &v, nil); len(ds) > 0 {
		t.Fatal(ds)
	}
	if v.N != 7 || v.Mode != "b" {
		t.Errorf("decoded %+v after changing what Fields returned; want {N:7 Mode:b}", v)
	}
	if again := conf.Fields(typ); again[0].Default != "7" || again[1].Key != "mode" {
		t.Errorf("Fields after a caller changed its copy = %+v", again)
	}
}

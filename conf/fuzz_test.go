package conf_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/tmpl"
)

// fuzzTarget has a field of every shape option structs use, so one fuzz
// target exercises each decoding path: scalars of every kind, enums,
// required fields, durations, pointers, slices, maps, nested structs,
// shorthands, raw nodes, templates and interface values.
type fuzzTarget struct {
	Name    string            `yaml:"name" required:"true"`
	Mode    string            `yaml:"mode" enum:"thread,process"`
	Level   int               `yaml:"level" enum:"1,2,3"`
	N       int64             `yaml:"n"`
	Small   int8              `yaml:"small"`
	U       uint16            `yaml:"u"`
	F       float64           `yaml:"f"`
	B       bool              `yaml:"b"`
	Timeout time.Duration     `yaml:"timeout"`
	Ptr     *int              `yaml:"ptr"`
	List    []string          `yaml:"list"`
	Map     map[string]int    `yaml:"map"`
	Nested  *fuzzNested       `yaml:"nested"`
	Short   *fuzzShort        `yaml:"short"`
	Raw     *yaml.Node        `yaml:"raw"`
	Expr    *tmpl.T           `yaml:"expr"`
	Any     any               `yaml:"any"`
	Items   []fuzzNested      `yaml:"items"`
	Headers map[string]string `yaml:"headers"`
}

type fuzzNested struct {
	A string   `yaml:"a"`
	B []int    `yaml:"b"`
	C *float64 `yaml:"c"`
}

func (n *fuzzNested) Validate() error {
	if n.A == "bad" {
		return conf.Errorf(conf.Pos{}, "a must not be bad")
	}
	return nil
}

type fuzzShort struct {
	Format string `yaml:"format" enum:"a,b"`
	Cols   []string
}

func (*fuzzShort) Shorthand() string { return "format" }

// FuzzDecode: any YAML decodes into the struct or gives diagnostics that
// carry a message (and, when they come from a node, a position); never a
// panic.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		"name: x\nmode: thread\nlevel: 2\nn: 9223372036854775807\nsmall: 127\nu: 65535\nf: 1e308\nb: true\ntimeout: 1m30s\nptr: 3\nlist: [a, b]\nmap: {a: 1}\nnested: {a: x, b: [1, 2], c: 0.5}\nshort: a\nraw: {any: [thing]}\nexpr: \"${ item * 2 }\"\nany: [1, {x: y}]\nitems: [{a: 1}]\nheaders: {Authorization: Bearer x}\n",
		"name: [1]\nmode: proc\nlevel: 4\nn: 1e40\nsmall: 300\nu: -1\nf: .nan\nb: maybe\ntimeout: 5\nptr: null\nlist: x\nmap: [1]\nnested: {a: bad}\nshort: {format: c, extra: 1}\n",
		"<<: {name: merged}\nn: 0x7f\nsmall: -0b1\nf: .inf\ntimeout: \"-1h\"\n",
		"&a {name: *a}",
		"[]",
		"~",
		"name: x\nnme: y\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		done := make(chan struct{})
		var stage string
		var mu sync.Mutex
		at := func(s string) { mu.Lock(); stage = s; mu.Unlock() }
		go func() {
			defer close(done)
			var doc yaml.Node
			at("yaml")
			if yaml.Unmarshal([]byte(src), &doc) != nil || len(doc.Content) == 0 {
				return
			}
			at("aliases")
			if conf.CheckAliases(doc.Content[0]) != nil {
				return
			}
			at("decode")
			var v fuzzTarget
			ds := conf.Decode(doc.Content[0], &v, &conf.Context{Vars: map[string]any{"x": 1}})
			for _, d := range ds {
				if strings.TrimSpace(d.Msg) == "" {
					panic(fmt.Sprintf("empty diagnostic for %q: %#v", src, ds))
				}
			}
			_ = ds.Sort().Error()
		}()
		// The fuzzer does not notice hangs: fail the input instead, so
		// that it is saved as a crasher.
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("hangs in %s on %q", stage, src)
		}
	})
}

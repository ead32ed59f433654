package spec_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/spec/spectest"
	"github.com/flowrun/flow/steps/all"
)

// TestExamplesWithRealKinds validates examples/*.yaml against the real step
// kinds. An example that names a kind not registered yet is skipped by name,
// so this test grows with steps/all instead of failing while kinds land.
func TestExamplesWithRealKinds(t *testing.T) {
	files, _ := filepath.Glob("../examples/*.yaml")
	if len(files) == 0 {
		t.Skip("no examples/*.yaml yet")
	}
	reg := all.Registry()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.yaml") {
			continue // the tests of an example, not a pipeline (package flowtest)
		}
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range kindsNamed(data) {
				if _, ok := reg.Lookup(k); !ok {
					t.Skipf("kind %q is not registered in steps/all yet", k)
				}
			}
			if _, err := spec.Parse(f, data, spec.Options{}, reg); err != nil {
				t.Errorf("%v", err)
			}
		})
	}
}

// kindsNamed lists the kinds a pipeline file names, read loosely.
func kindsNamed(data []byte) []string {
	var doc struct {
		Stages []map[string]any `yaml:"stages"`
	}
	if yaml.Unmarshal(data, &doc) != nil {
		return nil
	}
	var out []string
	for _, s := range doc.Stages {
		if k, ok := s["step"].(string); ok {
			out = append(out, k)
		}
		for _, role := range []string{"source", "sink"} {
			switch v := s[role].(type) {
			case string:
				out = append(out, v)
			case map[string]any:
				for k := range v {
					out = append(out, k)
				}
			}
		}
	}
	return out
}

// FuzzParse: any input gives a pipeline or diagnostics, never a panic, and
// every diagnostic names the file.
func FuzzParse(f *testing.F) {
	for _, pat := range []string{"../examples/*.yaml", "testdata/valid/*.yaml", "testdata/invalid/*.yaml"} {
		files, _ := filepath.Glob(pat)
		for _, file := range files {
			if data, err := os.ReadFile(file); err == nil {
				f.Add(data)
			}
		}
	}
	cat := spectest.Registry()
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := spec.Parse("f.yaml", data, spec.Options{Set: map[string]string{}}, cat)
		if err == nil && p == nil {
			t.Fatal("no pipeline and no error")
		}
		if ds, ok := err.(interface{ Error() string }); ok && ds.Error() == "" {
			t.Fatal("empty error")
		}
	})
}

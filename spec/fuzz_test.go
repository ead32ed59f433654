package spec_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flowrun/flow/internal/fuzzguard"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps/all"
)

// FuzzParseReal is FuzzParse against the real step kinds rather than the
// stand-ins, so that every kind's option decoding and validation runs on
// mutated pipelines too. Any input gives a pipeline or diagnostics that name
// the file and carry a message; nothing panics or hangs.
func FuzzParseReal(f *testing.F) {
	for _, pat := range []string{"../examples/*.yaml", "testdata/valid/*.yaml", "testdata/invalid/*.yaml"} {
		files, _ := filepath.Glob(pat)
		for _, file := range files {
			if data, err := os.ReadFile(file); err == nil {
				f.Add(data)
			}
		}
	}
	f.Add([]byte("version: 1\nstages:\n  - name: a\n    source: {items: &x [1, *x]}\n"))
	reg := all.Registry()
	opts := spec.Options{Set: map[string]string{}, Environ: []string{"FLOW_VAR_n=3"}}
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzguard.Run(t, func(fatalf func(format string, args ...any)) {
			p, err := spec.Parse("f.yaml", data, opts, reg)
			if err == nil {
				if p == nil {
					fatalf("no pipeline and no error")
				}
				if len(p.Stages) == 0 {
					fatalf("a valid pipeline without stages")
				}
				return
			}
			var ds conf.Diags
			if !errors.As(err, &ds) {
				fatalf("error is %T, want conf.Diags: %v", err, err)
			}
			if len(ds) == 0 {
				fatalf("empty diagnostics")
			}
			for _, d := range ds {
				if d.File != "f.yaml" || strings.TrimSpace(d.Msg) == "" {
					fatalf("diagnostic without file or message: %#v", d)
				}
			}
		})
	})
}

// Found by FuzzFromNode: an anchor used inside its own value crashed
// validation with a stack overflow; it is now a positioned diagnostic.
func TestParseRefusesRecursiveAlias(t *testing.T) {
	src := "version: 1\nstages:\n  - name: src\n    source: {items: [1]}\n  - name: c\n    step: compute\n    with:\n      value: &a [*a]\n"
	_, err := spec.Parse("p.yaml", []byte(src), spec.Options{}, all.Registry())
	if err == nil || !strings.Contains(err.Error(), "p.yaml:8:14:") || !strings.Contains(err.Error(), "alias to itself") {
		t.Fatalf("want p.yaml:8:14: ... alias to itself, got %v", err)
	}
}

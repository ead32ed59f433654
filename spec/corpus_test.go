package spec_test

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/spec/spectest"
	"github.com/flowrun/flow/steps"
)

var update = flag.Bool("update", false, "rewrite testdata/invalid/*.want from the current diagnostics (review the diff!)")

// TestInvalidCorpus parses every testdata/invalid/*.yaml and compares the
// full list of diagnostics with the file's .want golden file, so a change in
// any message, position or in the set of problems found shows up in review.
func TestInvalidCorpus(t *testing.T) {
	files, err := filepath.Glob("testdata/invalid/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no invalid corpus: %v", err)
	}
	cat := spectest.Registry()
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".yaml"), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			name := filepath.Base(file)
			_, err = spec.Parse(name, data, spec.Options{}, cat)
			var ds conf.Diags
			if !errors.As(err, &ds) || len(ds) == 0 {
				t.Fatalf("Parse(%s) = %v, want diagnostics", file, err)
			}
			for _, d := range ds {
				if d.File != name || d.Line < 1 || d.Col < 1 {
					t.Errorf("diagnostic without FILE:LINE:COL: %q", d.String())
				}
			}
			got := ds.Error() + "\n"
			want := strings.TrimSuffix(file, ".yaml") + ".want"
			if *update {
				if err := os.WriteFile(want, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			wb, err := os.ReadFile(want)
			if err != nil {
				t.Fatalf("%v (run: go test ./spec -run TestInvalidCorpus -update, then review the .want file)", err)
			}
			if got != string(wb) {
				t.Errorf("diagnostics of %s differ from %s\n--- got\n%s--- want\n%s", file, want, got, wb)
			}
		})
	}
}

// TestValidCorpus: every testdata/valid/*.yaml parses without a diagnostic.
func TestValidCorpus(t *testing.T) {
	files, _ := filepath.Glob("testdata/valid/*.yaml")
	if len(files) == 0 {
		t.Fatal("no valid corpus")
	}
	cat := spectest.Registry()
	for _, file := range files {
		p, err := spec.Load(file, spec.Options{}, cat)
		if err != nil {
			t.Errorf("%s:\n%v", file, err)
			continue
		}
		if len(p.Stages) == 0 || p.Stages[0].Role != steps.RoleSource {
			t.Errorf("%s: stages not resolved: %+v", file, p.Stages)
		}
	}
}

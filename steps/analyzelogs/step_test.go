package analyzelogs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp/syntax"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/steps"
)

func buildStep(t *testing.T, dir, opts string) (steps.Step, error) {
	t.Helper()
	r := steps.NewRegistry()
	Register(r)
	k, ok := r.Lookup("analyze-logs")
	if !ok {
		t.Fatal("analyze-logs not registered")
	}
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(opts), &n); err != nil {
		t.Fatal(err)
	}
	var node *yaml.Node
	if len(n.Content) > 0 {
		node = n.Content[0]
	}
	v, err := k.Build(node, nil, &steps.Env{Dir: dir, Vars: map[string]any{"sub": "logs"}})
	if err != nil {
		return nil, err
	}
	return v.Step, nil
}

func mustBuild(t *testing.T, dir, opts string) steps.Step {
	t.Helper()
	s, err := buildStep(t, dir, opts)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	return s
}

func write(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func do(t *testing.T, s steps.Step, item any) map[string]any {
	t.Helper()
	v, err := s.Do(context.Background(), steps.Input{Item: item})
	if err != nil {
		t.Fatalf("Do(%v): %v", item, err)
	}
	return v.(map[string]any)
}

func TestStepDefaults(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "app.log"), []byte("ok\nWARN a\nERROR b WARN\nlast ERROR"))
	s := mustBuild(t, dir, "")
	got := do(t, s, "app.log")
	want := map[string]any{
		"file": "app.log", "path": filepath.Join(dir, "app.log"),
		"lines": int64(4), "errors": int64(2), "warnings": int64(1),
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	// An absolute path is used as it is.
	if got := do(t, s, filepath.Join(dir, "app.log")); got["lines"] != int64(4) {
		t.Fatalf("absolute path: %v", got)
	}
}

func TestStepGzipByContent(t *testing.T) {
	dir := t.TempDir()
	data := "ERROR 1\nWARN 2\r\nERROR 3\n"
	write(t, filepath.Join(dir, "a.log.gz"), gz(t, data, 1))
	// Detection is by content: a compressed file without '.gz' reads too.
	write(t, filepath.Join(dir, "rotated.1"), gz(t, data, 2))
	s := mustBuild(t, dir, "")
	for _, name := range []string{"a.log.gz", "rotated.1"} {
		got := do(t, s, name)
		if got["lines"] != int64(3) || got["errors"] != int64(2) || got["warnings"] != int64(1) || got["file"] != name {
			t.Errorf("%s: %v", name, got)
		}
	}
}

func TestStepOptions(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "logs", "x.log"), []byte(
		"GET /a 200 12ms\nGET /b 500 900ms\nPOST /c 503 15ms\nGET /d 404 1200ms\nGET /e 200 3ms\n"))
	s := mustBuild(t, dir, `
path: "${ vars.sub }/${ item.name }"
regex: true
patterns:
  - {name: server_errors, match: ' 5\d\d '}
  - {name: slow, match: '\d{3,}ms$'}
  - {name: gets, match: 'GET', regex: false}
  - {name: dots, match: '.', regex: false}
samples: 1
sample_length: 10
`)
	got := do(t, s, map[string]any{"name": "x.log"})
	want := map[string]any{
		"file": "x.log", "path": filepath.Join(dir, "logs", "x.log"), "lines": int64(5),
		"server_errors": int64(2), "slow": int64(1), "gets": int64(2), "dots": int64(0),
		"samples": map[string]any{
			"server_errors": []any{"GET /b 500…"},
			"slow":          []any{"GET /d 404…"},
			"gets":          []any{"GET /a 200…"},
			"dots":          []any{},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
}

func TestStepSubstringIsNotRegex(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.log"), []byte("a.b\naxb\n"))
	s := mustBuild(t, dir, "patterns: [{name: dots, match: 'a.b'}]")
	if got := do(t, s, "a.log"); got["dots"] != int64(1) {
		t.Fatalf("substring 'a.b' counted %v lines, want 1", got["dots"])
	}
	s = mustBuild(t, dir, "regex: true\npatterns: [{name: dots, match: 'a.b'}]")
	if got := do(t, s, "a.log"); got["dots"] != int64(2) {
		t.Fatalf("regex 'a.b' counted %v lines, want 2", got["dots"])
	}
}

func TestStepFileErrors(t *testing.T) {
	dir := t.TempDir()
	s := mustBuild(t, dir, "")
	_, err := s.Do(context.Background(), steps.Input{Item: "missing.log"})
	var se *steps.Error
	if !errors.As(err, &se) || !se.Permanent || !strings.Contains(err.Error(), filepath.Join(dir, "missing.log")) {
		t.Fatalf("missing file: err = %v, want a permanent error naming the path", err)
	}
	if _, err := s.Do(context.Background(), steps.Input{Item: "."}); err == nil || !strings.Contains(err.Error(), "directory") {
		t.Fatalf("directory: err = %v", err)
	}
	if _, err := s.Do(context.Background(), steps.Input{Item: map[string]any{"p": 1}}); err == nil || !strings.Contains(err.Error(), "path") {
		t.Fatalf("mapping item: err = %v, want a hint about 'path'", err)
	}
	write(t, filepath.Join(dir, "bad.gz"), append(gz(t, "hello\n", 1)[:12], "garbage"...))
	if _, err := s.Do(context.Background(), steps.Input{Item: "bad.gz"}); err == nil || !strings.Contains(err.Error(), "bad.gz") {
		t.Fatalf("corrupt gzip: err = %v, want one naming the file", err)
	}
}

func TestStepValidation(t *testing.T) {
	for _, tc := range []struct{ opts, want string }{
		{"patterns: [{name: a, match: x}, {name: a, match: y}]", "appears twice"},
		{"patterns: [{name: lines, match: x}]", "taken by the result"},
		{"patterns: [{name: a, match: 'x('}]\nregex: true", "invalid regular expression"},
		{"patterns: [{name: a, match: ''}]", "non-empty"},
		{"patterns: [{name: a}]", "missing required key \"match\""},
		{"samples: -1", "samples"},
		{"sample_length: 2", "sample_length"},
		{"pattern: []", "unknown key"},
	} {
		_, err := buildStep(t, t.TempDir(), tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.opts, err, tc.want)
		}
	}
}

func TestRequiredLiterals(t *testing.T) {
	for _, tc := range []struct {
		re   string
		want []string
	}{
		{`ERROR|FATAL`, []string{"ERROR", "FATAL"}},
		{`\d+ took (\d+)ms`, []string{" took "}},
		{`(?i)error`, nil},
		{`a*`, nil},
		{`x{2,}`, []string{"x"}},
		{`[0-9]+`, nil},
	} {
		re, err := syntax.Parse(tc.re, syntax.Perl)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := required(re.Simplify())
		if ok != (tc.want != nil) || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("required(%q) = %q, %v; want %q", tc.re, got, ok, tc.want)
		}
	}
}

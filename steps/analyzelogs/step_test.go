package analyzelogs

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"regexp/syntax"
	"strings"
	"sync"
	"sync/atomic"
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

// BenchmarkStepDir runs the step, as a stage's two workers would, over every
// *.log of a directory, for what a file costs besides its bytes (the
// harness's analyze-logs-small: 10,000 files of 4 KiB):
// FLOW_BENCH_LOGDIR=/path/to/logs go test -bench StepDir -benchmem.
func BenchmarkStepDir(b *testing.B) {
	dir := os.Getenv("FLOW_BENCH_LOGDIR")
	if dir == "" {
		b.Skip("set FLOW_BENCH_LOGDIR to a directory of *.log files")
	}
	paths, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil || len(paths) == 0 {
		b.Fatalf("no *.log in %s (%v)", dir, err)
	}
	r := steps.NewRegistry()
	Register(r)
	k, _ := r.Lookup("analyze-logs")
	v, err := k.Build(nil, nil, &steps.Env{Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	s := v.Step
	const workers = 2
	b.ReportMetric(float64(len(paths)), "files")
	for b.Loop() {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for {
					i := int(next.Add(1)) - 1
					if i >= len(paths) {
						return
					}
					if _, err := s.Do(context.Background(), steps.Input{Item: paths[i], Index: int64(i)}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
}

// refCount counts as the step's contract says, line by line: lines end at
// LF, CRLF or a lone CR, a last line without a break counts, and a line
// counts for the first pattern it holds.
func refCount(data string, pats []string) (lines int64, counts []int64) {
	counts = make([]int64, len(pats))
	data = strings.ReplaceAll(data, "\r\n", "\n")
	data = strings.ReplaceAll(data, "\r", "\n")
	if data == "" {
		return 0, counts
	}
	ls := strings.Split(strings.TrimSuffix(data, "\n"), "\n")
	for _, l := range ls {
		for i, p := range pats {
			if strings.Contains(l, p) {
				counts[i]++
				break
			}
		}
	}
	return int64(len(ls)), counts
}

// Many small files in a row, on two workers: what one scan leaves behind
// (the state recycled between inputs, the plan kept from the last
// histogram, a kernel switched for CRLF breaks, a dense block) must not
// change the counts of the next. Every file is checked against refCount.
func TestStepManySmallFiles(t *testing.T) {
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(19, 1))
	words := []string{"INFO ok", "ERROR disk", "WARN slow", "WARN after ERROR", "RRRR RRR R", "DEBUG x", "", "ERRO", "WAR N"}
	breaks := []string{"\n", "\r\n", "\r"}
	var names []string
	for i := range 400 {
		var b strings.Builder
		n := r.IntN(60)
		if i%7 == 0 {
			n = 0 // empty files
		}
		crlf := i%3 == 1 // whole files of CRLF breaks, as Windows writes them
		for j := range n {
			b.WriteString(words[r.IntN(len(words))])
			if r.IntN(4) == 0 {
				b.WriteString(strings.Repeat("R", r.IntN(200))) // dense stops
			}
			if j < n-1 || r.IntN(2) == 0 { // some files end without a break
				switch {
				case crlf:
					b.WriteString("\r\n")
				default:
					b.WriteString(breaks[r.IntN(len(breaks))])
				}
			}
		}
		name := fmt.Sprintf("f%03d.log", i)
		write(t, filepath.Join(dir, name), []byte(b.String()))
		names = append(names, name)
	}
	s := mustBuild(t, dir, "")
	var wg sync.WaitGroup
	var next atomic.Int64
	for range 2 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(names) {
					return
				}
				data, err := os.ReadFile(filepath.Join(dir, names[i]))
				if err != nil {
					t.Error(err)
					return
				}
				v, err := s.Do(context.Background(), steps.Input{Item: names[i], Index: int64(i)})
				if err != nil {
					t.Error(err)
					return
				}
				got := v.(map[string]any)
				lines, counts := refCount(string(data), []string{"ERROR", "WARN"})
				if got["lines"] != lines || got["errors"] != counts[0] || got["warnings"] != counts[1] {
					t.Errorf("%s (%q): got %v lines, %v errors, %v warnings; want %d, %d, %d",
						names[i], data, got["lines"], got["errors"], got["warnings"], lines, counts[0], counts[1])
				}
			}
		})
	}
	wg.Wait()
}

// Package editor holds the test that runs a real yaml-language-server (the
// server behind VS Code's YAML extension) against schema.json, over LSP on
// stdio, as an editor would: it proves that the schema works where users
// see it, not only in a Go JSON Schema validator.
package editor

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/schema"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/spec/spectest"
)

const modeline = "# yaml-language-server: $schema=../../schema.json\n"

type doc struct {
	path string
	text string
}

func (d doc) uri() string { return fileURI(d.path) }

// TestYAMLLanguageServer drives yaml-language-server over LSP stdio:
// examples get no diagnostics, broken files get them on the right lines, and
// hover and completion on stage keys show our descriptions and keys.
func TestYAMLLanguageServer(t *testing.T) {
	root := repoRoot(t)
	server := findServer(t, root)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()

	// Our fixtures run against a schema generated from the stand-in kinds,
	// laid out as in the repository (tmp/schema.json, tmp/editor/testdata),
	// so they test the generator and not whichever real kinds exist today.
	tmp := t.TempDir()
	data, err := schema.Generate(spectest.Registry())
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(tmp, "schema.json"), string(data))
	fixtures := filepath.Join(tmp, "editor", "testdata")
	var valid, broken []doc
	for _, f := range glob(t, "testdata/*.yaml") {
		text := read(t, f)
		d := doc{path: filepath.Join(fixtures, filepath.Base(f)), text: text}
		write(t, d.path, text)
		if strings.Contains(text, "# diag") {
			broken = append(broken, d)
		} else {
			valid = append(valid, d)
		}
	}
	// The spec package's valid corpus, given the modeline.
	for _, f := range glob(t, "../spec/testdata/valid/*.yaml") {
		d := doc{path: filepath.Join(fixtures, "spec-"+filepath.Base(f)), text: modeline + read(t, f)}
		write(t, d.path, d.text)
		valid = append(valid, d)
	}
	// The examples, in place, against the committed schema.json.
	for _, f := range glob(t, filepath.Join(root, "examples", "*.yaml")) {
		valid = append(valid, doc{path: f, text: read(t, f)})
	}
	if len(broken) == 0 || len(valid) == 0 {
		t.Fatal("no fixtures")
	}
	completion := doc{path: filepath.Join(fixtures, "completion.yaml"), text: modeline + `version: 1
stages:
  - name: ids
    source: stdin
  - name: get
    step: fetch
    with:
      url: https://example.com
      
    
`}
	write(t, completion.path, completion.text)

	settings := map[string]any{
		"yaml": map[string]any{
			"validate": true, "hover": true, "completion": true,
			"format":      map[string]any{"enable": false},
			"schemaStore": map[string]any{"enable": false}, // no network
			"schemas":     map[string]any{},
			"yamlVersion": "1.2",
		},
		"http":   map[string]any{"proxy": "", "proxyStrictSSL": false},
		"[yaml]": map[string]any{},
		"editor": map[string]any{"tabSize": 2},
		"files":  map[string]any{},
	}
	c := start(t, server, root, settings)
	folders := []map[string]any{{"uri": fileURI(root), "name": "flow"}, {"uri": fileURI(tmp), "name": "fixtures"}}
	_, err = c.call(ctx, "initialize", map[string]any{
		"processId":        os.Getpid(),
		"clientInfo":       map[string]any{"name": "flow-editor-test"},
		"rootUri":          fileURI(root),
		"workspaceFolders": folders,
		"capabilities": map[string]any{
			"workspace": map[string]any{
				"configuration":          true,
				"workspaceFolders":       true,
				"didChangeConfiguration": map[string]any{"dynamicRegistration": true},
			},
			"textDocument": map[string]any{
				"synchronization":    map[string]any{"dynamicRegistration": true, "didSave": true},
				"publishDiagnostics": map[string]any{"relatedInformation": true},
				"hover":              map[string]any{"contentFormat": []string{"markdown", "plaintext"}},
				"completion": map[string]any{"completionItem": map[string]any{
					"snippetSupport": true, "documentationFormat": []string{"markdown", "plaintext"},
				}},
			},
		},
	})
	if err != nil {
		t.Fatalf("initialize: %v", err)
	}
	must(t, c.notify("initialized", map[string]any{}))
	must(t, c.notify("workspace/didChangeConfiguration", map[string]any{"settings": settings}))

	var uris []string
	for _, d := range append(append(append([]doc{}, valid...), broken...), completion) {
		must(t, c.notify("textDocument/didOpen", map[string]any{"textDocument": map[string]any{
			"uri": d.uri(), "languageId": "yaml", "version": 1, "text": d.text,
		}}))
		uris = append(uris, d.uri())
	}
	// What is wrong with diags, one line per document that is not as
	// expected: valid ones without diagnostics, broken ones flagged on the
	// lines their markers name.
	problems := func(diags map[string][]diagnostic) []string {
		var out []string
		for _, d := range valid {
			if ds := diags[d.uri()]; len(ds) > 0 {
				out = append(out, fmt.Sprintf("%s: want no diagnostics, got:\n%s", d.path, list(ds)))
			}
		}
		for _, d := range broken {
			want := markedLines(d.text)
			got := map[int]bool{}
			for _, x := range diags[d.uri()] {
				got[x.Range.Start.Line] = true
			}
			if !reflect.DeepEqual(sortedKeys(got), sortedKeys(want)) {
				out = append(out, fmt.Sprintf("%s: diagnostics on lines %v, want lines %v:\n%s", filepath.Base(d.path), oneBased(got), oneBased(want), list(diags[d.uri()])))
			}
		}
		return out
	}
	diags, err := c.settle(ctx, uris, 1500*time.Millisecond, 15*time.Second,
		func(d map[string][]diagnostic) bool { return len(problems(d)) == 0 })
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems(diags) {
		t.Error(p)
	}

	t.Run("hover", func(t *testing.T) {
		d := valid[0]
		for _, key := range []string{"workers", "on_error", "retry", "limit", "complete"} {
			line := lineOf(t, d.text, "    "+key+":")
			raw, err := c.call(ctx, "textDocument/hover", map[string]any{
				"textDocument": map[string]any{"uri": d.uri()},
				"position":     map[string]any{"line": line, "character": 6},
			})
			if err != nil {
				t.Fatal(err)
			}
			var h struct {
				Contents struct {
					Kind  string `json:"kind"`
					Value string `json:"value"`
				} `json:"contents"`
			}
			_ = json.Unmarshal(raw, &h)
			// The whole description, as Markdown: 'x' became `x`.
			want := codeSpan.ReplaceAllString(stageDesc(t, key), "`$1`")
			if h.Contents.Kind != "markdown" || !strings.Contains(h.Contents.Value, want) {
				t.Errorf("hover on %q: want our description as Markdown:\n%s\ngot %s", key, want, raw)
			}
		}
	})

	t.Run("completion", func(t *testing.T) {
		lines := strings.Split(completion.text, "\n")
		withLine, stageLine := len(lines)-3, len(lines)-2
		for _, tc := range []struct {
			name      string
			line, col int
			want      []string
		}{
			{"stage keys", stageLine, 4, []string{"workers", "timeout", "retry", "on_error", "rate"}},
			{"fetch options through if/then on step", withLine, 6, []string{"method", "headers", "decode", "max_bytes"}},
		} {
			raw, err := c.call(ctx, "textDocument/completion", map[string]any{
				"textDocument": map[string]any{"uri": completion.uri()},
				"position":     map[string]any{"line": tc.line, "character": tc.col},
			})
			if err != nil {
				t.Fatal(err)
			}
			labels := completionLabels(raw)
			for _, w := range tc.want {
				if !labels[w] {
					t.Errorf("%s: completion lacks %q; got %v", tc.name, w, sortedLabels(labels))
				}
			}
		}
	})
}

func completionLabels(raw json.RawMessage) map[string]bool {
	var list struct {
		Items []struct {
			Label string `json:"label"`
		} `json:"items"`
	}
	if json.Unmarshal(raw, &list) != nil {
		_ = json.Unmarshal(raw, &list.Items)
	}
	out := map[string]bool{}
	for _, it := range list.Items {
		out[it.Label] = true
	}
	return out
}

func stageDesc(t *testing.T, key string) string {
	for _, f := range conf.Fields(reflect.TypeFor[spec.Stage]()) {
		if f.Key == key {
			return f.Desc
		}
	}
	t.Fatalf("spec.Stage has no key %q", key)
	return ""
}

var codeSpan = regexp.MustCompile(`'([^']*)'`)

func markedLines(text string) map[int]bool {
	out := map[int]bool{}
	for i, l := range strings.Split(text, "\n") {
		if strings.HasSuffix(strings.TrimSpace(l), "# diag") && !strings.HasPrefix(strings.TrimSpace(l), "#") {
			out[i] = true
		}
	}
	return out
}

func lineOf(t *testing.T, text, prefix string) int {
	for i, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			return i
		}
	}
	t.Fatalf("no line starts with %q", prefix)
	return 0
}

func sortedKeys(m map[int]bool) []int {
	out := []int{}
	for k := range m {
		out = append(out, k)
	}
	sort.Ints(out)
	return out
}

func oneBased(m map[int]bool) []int {
	out := sortedKeys(m)
	for i := range out {
		out[i]++
	}
	return out
}

func sortedLabels(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func list(ds []diagnostic) string {
	var b strings.Builder
	for _, d := range ds {
		b.WriteString("\t" + d.String() + "\n")
	}
	return b.String()
}

func glob(t *testing.T, pattern string) []string {
	m, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func read(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func write(t *testing.T, path, text string) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

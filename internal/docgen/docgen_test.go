package docgen_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flowrun/flow/internal/docgen"
	"github.com/flowrun/flow/steps/all"
	"github.com/flowrun/flow/tmpl"
)

// TestGeneratedDocsUpToDate fails when a desc tag, a default or a kind's
// documentation changed without the committed docs being regenerated.
func TestGeneratedDocsUpToDate(t *testing.T) {
	for name, want := range docgen.Files(all.Registry()) {
		path := filepath.Join("..", "..", "docs", name)
		got, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("docs/%s: %v; create it with: %s", name, err, docgen.RefreshCommand)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("docs/%s is stale (it differs from what the code generates at line %d); refresh it with: %s",
				name, firstDiffLine(got, want), docgen.RefreshCommand)
		}
	}
}

func firstDiffLine(a, b []byte) int {
	la, lb := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := 0; i < len(la) && i < len(lb); i++ {
		if la[i] != lb[i] {
			return i + 1
		}
	}
	return min(len(la), len(lb)) + 1
}

// TestReferenceCoversEveryKey guards the generator itself: every stage key
// and every registered kind must appear.
func TestReferenceCoversEveryKey(t *testing.T) {
	reg := all.Registry()
	ref := string(docgen.Reference(reg))
	for _, key := range []string{"version", "vars", "limits", "stages", "mode", "workers", "rate", "burst", "limit",
		"timeout", "deadline", "retry.attempts", "retry.on", "order", "key", "complete", "on_error", "max_errors", "when",
		"max_tasks_per_child", "memory", "concurrency", "lock", "lock.file", "lock.mode", "lock.timeout"} {
		if !strings.Contains(ref, "| `"+key+"` |") {
			t.Errorf("reference.md has no row for %q", key)
		}
	}
	st := string(docgen.Steps(reg))
	for _, k := range reg.Kinds() {
		if !strings.Contains(ref, "[`"+k.Name+"`]") {
			t.Errorf("reference.md does not list kind %q", k.Name)
		}
		if !strings.Contains(st, "### "+k.Name+" "+string(k.Role)+"\n") {
			t.Errorf("steps.md has no section for %s %q", k.Role, k.Name)
		}
	}
	if strings.Contains(ref+st, "'") && strings.Contains(ref+st, "| '") {
		t.Errorf("a desc tag kept its quotes instead of becoming a code span")
	}
}

// TestConceptsFunctionExamples compiles the example of every row of the
// function table in docs/concepts.md, so that the hand-written table cannot
// name a function the library does not have, or call one wrongly.
func TestConceptsFunctionExamples(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "concepts.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(b), "| Function | Does | Example |")
	if !ok {
		t.Fatal("docs/concepts.md has no function table")
	}
	rows := 0
	for _, line := range strings.Split(table, "\n")[2:] {
		if !strings.HasPrefix(line, "| ") {
			break
		}
		cells := strings.Split(strings.Trim(line, "| "), " | ")
		example := strings.Trim(cells[len(cells)-1], "`")
		if _, err := tmpl.Compile(example); err != nil {
			t.Errorf("docs/concepts.md: example %s does not compile: %v", example, err)
		}
		rows++
	}
	if rows < 8 {
		t.Errorf("found %d rows in the function table of docs/concepts.md, want at least 8", rows)
	}
}

// TestCookbookMatchesExamples keeps the YAML shown in docs/cookbook.md equal
// to the example files it stands for: after each <!-- example: NAME -->
// marker comes the body of examples/NAME (without its header comment).
// FLOW_UPDATE_DOCS=1 rewrites the blocks.
func TestCookbookMatchesExamples(t *testing.T) {
	path := filepath.Join("..", "..", "docs", "cookbook.md")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	lines := strings.Split(string(b), "\n")
	seen := 0
	for i := 0; i < len(lines); i++ {
		out = append(out, lines[i])
		name, ok := strings.CutPrefix(lines[i], "<!-- example: ")
		if !ok {
			continue
		}
		name = strings.TrimSuffix(name, " -->")
		seen++
		src, err := os.ReadFile(filepath.Join("..", "..", "examples", name))
		if err != nil {
			t.Errorf("docs/cookbook.md names example %s: %v", name, err)
			continue
		}
		// Drop the block that follows the marker, if any; it is regenerated.
		j := i + 1
		for j < len(lines) && lines[j] == "" {
			j++
		}
		if j < len(lines) && lines[j] == "```yaml" {
			for j++; j < len(lines) && lines[j] != "```"; j++ {
			}
			i = j
		}
		out = append(out, "", "```yaml", strings.TrimRight(exampleBody(string(src)), "\n"), "```")
	}
	if seen < 11 {
		t.Errorf("docs/cookbook.md shows %d examples, want all 11", seen)
	}
	want := strings.Join(out, "\n")
	if want == string(b) {
		return
	}
	if os.Getenv("FLOW_UPDATE_DOCS") == "1" {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("docs/cookbook.md shows YAML that differs from examples/ (line %d); refresh it with: FLOW_UPDATE_DOCS=1 go test ./internal/docgen -run Cookbook",
		firstDiffLine(b, []byte(want)))
}

// exampleBody is an example file without its leading comment block.
func exampleBody(src string) string {
	lines := strings.Split(src, "\n")
	i := 0
	for i < len(lines) && (lines[i] == "" || strings.HasPrefix(lines[i], "#")) {
		i++
	}
	return strings.Join(lines[i:], "\n")
}

// TestDependenciesDocumented fails when go.mod requires a module that
// docs/dependencies.md does not explain.
func TestDependenciesDocumented(t *testing.T) {
	mod, err := os.ReadFile(filepath.Join("..", "..", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "dependencies.md"))
	if err != nil {
		t.Fatal(err)
	}
	inBlock := false
	for _, line := range strings.Split(string(mod), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "require (":
			inBlock = true
			continue
		case line == ")":
			inBlock = false
			continue
		case strings.HasPrefix(line, "require "):
			line = strings.TrimPrefix(line, "require ")
		case !inBlock:
			continue
		}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if !strings.Contains(string(doc), "`"+fields[0]+"`") {
			t.Errorf("go.mod requires %s, which docs/dependencies.md does not mention; say what it is for", fields[0])
		}
	}
}

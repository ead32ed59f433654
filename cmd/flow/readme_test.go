package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeFirstCommands keeps the README's opening promise true: its first
// lines give the command that runs a real pipeline (run end to end by
// testdata/script/readme.txtar) and the command that runs the tests, which
// must be what CI runs.
func TestReadmeFirstCommands(t *testing.T) {
	root := repoRoot(t)
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 6 || !strings.HasPrefix(lines[2], "```") {
		t.Fatalf("README.md must open with a title and a code block of the two set-up commands, got:\n%s", strings.Join(lines[:min(6, len(lines))], "\n"))
	}
	block := strings.Join(lines[3:6], "\n")
	for _, want := range []string{
		"go run ./cmd/flow run examples/log_analyzer.yaml",
		"bash .ci/run",
	} {
		if !strings.Contains(block, want) {
			t.Errorf("README.md's first code block lacks %q:\n%s", want, block)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "examples", "log_analyzer.yaml")); err != nil {
		t.Errorf("the README runs examples/log_analyzer.yaml: %v", err)
	}
	ci, err := os.ReadFile(filepath.Join(root, ".ci", "run"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ci), "go test ") || !strings.Contains(string(ci), "set -euo pipefail") {
		t.Errorf(".ci/run must run go test under set -euo pipefail")
	}
}

// TestReadmeLinks fails when a relative link of README.md names a file that
// does not exist.
func TestReadmeLinks(t *testing.T) {
	root := repoRoot(t)
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	links := regexp.MustCompile(`\]\(([^)#]+)(#[^)]*)?\)`).FindAllStringSubmatch(string(b), -1)
	if len(links) == 0 {
		t.Fatal("README.md links to nothing; it should point at docs/ and examples/")
	}
	for _, m := range links {
		target := m[1]
		if strings.Contains(target, "://") {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(target))); err != nil {
			t.Errorf("README.md links to %s, which does not exist", target)
		}
	}
}

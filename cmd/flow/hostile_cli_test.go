package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestVersionNamesTheCommit builds flow the way docs/getting-started.md says
// to install it (go build -trimpath -ldflags=-s in a git clone) and checks
// that flow version names the clone's commit. Go stamps the commit only in a
// clone (not in a git worktree, whose .git is a file) and not with
// -buildvcs=false, which this test overrides as the docs tell users to.
func TestVersionNamesTheCommit(t *testing.T) {
	if testing.Short() {
		t.Skip("builds flow from a clone")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git command")
	}
	clone := filepath.Join(t.TempDir(), "flow")
	run := func(dir string, env []string, name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	run(repoRoot(t), nil, "git", "clone", "-q", "--no-hardlinks", repoRoot(t), clone)
	head := run(clone, nil, "git", "rev-parse", "HEAD")
	run(clone, []string{"GOFLAGS=-buildvcs=true"}, gobin, "build", "-trimpath", "-ldflags=-s", "-o", "flow", "./cmd/flow")
	out := run(clone, nil, filepath.Join(clone, "flow"), "version")
	if !strings.Contains(out, "commit "+head+" (") {
		t.Errorf("flow version does not name commit %s:\n%s", head, out)
	}
	if strings.Contains(out, "with local changes") {
		t.Errorf("a clean clone reported local changes:\n%s", out)
	}
}

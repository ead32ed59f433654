package main

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestVersionNamesTheCommit builds flow the way docs/getting-started.md says
// to install it (CGO_ENABLED=0 go build -trimpath -ldflags=-s in a git
// clone) and checks that flow version names the clone's commit, and that the
// binary is static as docs/dependencies.md says. Go stamps the commit only in a
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
	run(clone, []string{"GOFLAGS=-buildvcs=true", "CGO_ENABLED=0"}, gobin, "build", "-trimpath", "-ldflags=-s", "-o", "flow", "./cmd/flow")
	out := run(clone, nil, filepath.Join(clone, "flow"), "version")
	// docs/dependencies.md: built with CGO_ENABLED=0 the binary is static.
	if runtime.GOOS == "linux" {
		f, err := elf.Open(filepath.Join(clone, "flow"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("a CGO_ENABLED=0 build has a dynamic loader (it links libc)")
			}
		}
	}
	if !strings.Contains(out, "commit "+head+" (") {
		t.Errorf("flow version does not name commit %s:\n%s", head, out)
	}
	if strings.Contains(out, "with local changes") {
		t.Errorf("a clean clone reported local changes:\n%s", out)
	}
}

package exec

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flowrun/flow/steps"
)

// Programs do not inherit flow's FLOW_VAR_* variables, secrets among them;
// the pipeline passes what a program needs explicitly.
func TestNoInheritedVariables(t *testing.T) {
	t.Setenv("FLOW_VAR_token", "inherited-s3cret")
	t.Setenv("FLOW_VAR_TOKEN", "inherited-s3cret")
	t.Setenv("FLOW_TEST_KEPT", "kept")
	out := mustRun(t, mustBuild(t, `{argv: [env]}`), nil)["stdout"].(string)
	if strings.Contains(out, "FLOW_VAR_") || strings.Contains(out, "inherited-s3cret") {
		t.Errorf("the program sees flow's variables:\n%s", out)
	}
	if !strings.Contains(out, "FLOW_TEST_KEPT=kept") || !strings.Contains(out, tagVar+"="+token+"-") {
		t.Errorf("the rest of the environment and the tag are missing:\n%s", out)
	}
	out = mustRun(t, mustBuild(t, `{argv: [env], env: {FLOW_VAR_token: passed, FLOW_EXEC_ID: forged}}`), nil)["stdout"].(string)
	if !strings.Contains(out, "FLOW_VAR_token=passed") || strings.Contains(out, "forged") {
		t.Errorf("env: should pass FLOW_VAR_token and not replace the tag:\n%s", out)
	}
}

func TestTagsNest(t *testing.T) {
	env, outer := childEnv([]string{"A=1", tagVar + "=abc-1", "FLOW_VAR_x=2", guardVar + "=z"})
	if strings.Join(env, " ") != "A=1" || outer != "abc-1" {
		t.Fatalf("childEnv = %q, %q", env, outer)
	}
	e := []byte("A=1\x00" + tagEntry(outer, "def-12") + "\x00")
	for tag, want := range map[string]bool{"abc-1": true, "def-12": true, "def-1": false, "def-123": false} {
		if got := tagged(e, func(t string) bool { return t == tag }); got != want {
			t.Errorf("tagged %s = %v, want %v", tag, got, want)
		}
	}
}

// A program that leaves its process group (setsid), directly or through a
// double fork, is still stopped with its item, after a timeout or after a
// normal end.
func TestSetsidChildrenEndWithTheItem(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the sweep of setsid children is Linux only; see docs/reliability.md")
	}
	for name, c := range map[string]struct {
		cmd     string
		timeout bool
	}{
		"setsid, timeout":      {`setsid sh -c 'echo $$ > "$0"; exec sleep 60' "$1" & wait`, true},
		"double fork, timeout": {`setsid -f sh -c 'echo $$ > "$0"; exec sleep 60' "$1"; sleep 60`, true},
		"double fork, exits":   {`setsid -f sh -c 'echo $$ > "$0"; exec sleep 60' "$1"; while [ ! -s "$1" ]; do sleep 0.01; done`, false},
	} {
		t.Run(name, func(t *testing.T) {
			pidfile := filepath.Join(t.TempDir(), "pid")
			s := mustBuild(t, fmt.Sprintf(`{shell: true, command: '%s', argv: ["${ item }"], kill_grace: 100ms}`, strings.ReplaceAll(c.cmd, "'", "''")))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, err := s.Do(ctx, steps.Input{Item: pidfile})
				done <- err
			}()
			pid := waitPID(t, pidfile)
			t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
			if c.timeout {
				cancel()
			}
			select {
			case err := <-done:
				if c.timeout == (err == nil) {
					t.Fatalf("Do: %v", err)
				}
			case <-time.After(time.Minute):
				t.Fatal("Do did not return")
			}
			// Killed and reaped before Do returned.
			if alive(pid) {
				t.Errorf("process %d (%s) outlived its item", pid, comm(pid))
			}
		})
	}
}

func comm(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	return strings.TrimSpace(string(b))
}

// The stderr tail never starts in the middle of a line without saying so:
// the cut could fall inside a secret, whose end redaction only recognises
// after a cut mark.
func TestTailMarksItsCut(t *testing.T) {
	for _, c := range []struct {
		max    int
		writes []string
		want   string
	}{
		{100, []string{"abc\n", "def\n"}, "abc\ndef"},
		{20, []string{"xxxxs3cr3t-end\nnext line\n"}, "next line"},
		{6, []string{"abcdefghij"}, "…efghij"},
		{6, []string{"abcd", "efghij"}, "…efghij"},
		{6, []string{"abcd", "ef"}, "abcdef"},
	} {
		tl := &tail{max: c.max}
		for _, w := range c.writes {
			tl.Write([]byte(w))
		}
		if got := tl.String(); got != c.want {
			t.Errorf("%q: String() = %q, want %q", c.writes, got, c.want)
		}
	}
}

// A process handed to flow as subreaper that ends on its own before its
// item does is reaped, not left a zombie until flow exits.
func TestOrphansThatEndAreReaped(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Linux only")
	}
	pidfile := filepath.Join(t.TempDir(), "pid")
	s := mustBuild(t, `{shell: true, argv: ["${ item }"], command: '( sh -c ''echo $$ > "$0"'' "$1" & ); while [ ! -s "$1" ]; do sleep 0.01; done; p=$(cat "$1"); while [ -e /proc/$p ] && ! grep -q "^[0-9]* ([^)]*) Z" /proc/$p/stat; do sleep 0.01; done'}`)
	if _, err := run(t, s, pidfile); err != nil {
		t.Fatal(err)
	}
	pid := waitPID(t, pidfile)
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil {
		t.Errorf("the orphan is still there: %s", b)
	}
}

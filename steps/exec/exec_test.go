package exec

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/steps/steptest"
)

func build(t *testing.T, with string, env *steps.Env) (steps.Step, error) {
	t.Helper()
	if env == nil {
		env = &steps.Env{Dir: t.TempDir(), Workers: 1}
	}
	v, err := steptest.Build(t, Register, "exec", steptest.Node(t, with), env)
	if err != nil {
		return nil, err
	}
	return v.(steps.Step), nil
}

func mustBuild(t *testing.T, with string) steps.Step {
	t.Helper()
	s, err := build(t, with, nil)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	return s
}

func run(t *testing.T, s steps.Step, item any) (map[string]any, error) {
	t.Helper()
	v, err := s.Do(context.Background(), steps.Input{Item: item})
	if err != nil {
		return nil, err
	}
	return v.(map[string]any), nil
}

func mustRun(t *testing.T, s steps.Step, item any) map[string]any {
	t.Helper()
	m, err := run(t, s, item)
	if err != nil {
		t.Fatalf("Do(%v): %v", item, err)
	}
	return m
}

func TestCaptures(t *testing.T) {
	m := mustRun(t, mustBuild(t, `argv: [printf, "a %s\nb\n\n", "${ item }"]`), "x")
	if m["stdout"] != "a x\nb" || m["exit_code"] != int64(0) || m["stderr"] != "" {
		t.Errorf("text: %#v", m)
	}
	m = mustRun(t, mustBuild(t, "argv: [printf, 'one\\r\\ntwo\\n']\ncapture: lines"), nil)
	if !reflect.DeepEqual(m["stdout"], []any{"one", "two"}) {
		t.Errorf("lines: %#v", m["stdout"])
	}
	m = mustRun(t, mustBuild(t, `{argv: [printf, '{"n": 3, "f": 1.5, "l": [1]}'], capture: json}`), nil)
	if !reflect.DeepEqual(m["stdout"], map[string]any{"n": int64(3), "f": 1.5, "l": []any{int64(1)}}) {
		t.Errorf("json: %#v", m["stdout"])
	}
	m = mustRun(t, mustBuild(t, `{argv: [echo, hi], capture: none}`), nil)
	if _, ok := m["stdout"]; ok {
		t.Errorf("none: stdout present: %#v", m)
	}
	_, err := run(t, mustBuild(t, `{argv: [echo, "not json"], capture: json}`), nil)
	if steps.ClassOf(err) != "decode" || !strings.Contains(err.Error(), "not JSON") {
		t.Errorf("bad json: %v", err)
	}
}

// Items never reach a shell: metacharacters stay literal arguments.
func TestArgvIsNotAShell(t *testing.T) {
	dir := t.TempDir()
	env := &steps.Env{Dir: dir}
	s, err := build(t, `argv: [printf, "%s", "${ item }"]`, env)
	if err != nil {
		t.Fatal(err)
	}
	for _, item := range []string{"; rm -rf ~", "$(touch pwned)", "`touch pwned`", "a' \"b", "x && touch pwned"} {
		m := mustRun(t, s, item)
		if m["stdout"] != item {
			t.Errorf("stdout = %q, want the literal %q", m["stdout"], item)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "pwned")); err == nil {
		t.Fatal("an item was run by a shell")
	}
}

func TestShell(t *testing.T) {
	s := mustBuild(t, `{shell: true, command: 'printf "%s|%s" "$1" "$2"', argv: ["${ item }", two]}`)
	m := mustRun(t, s, "; echo injected")
	if m["stdout"] != "; echo injected|two" {
		t.Errorf("shell stdout = %q", m["stdout"])
	}
	m = mustRun(t, mustBuild(t, `{shell: true, command: "echo ${ item } | tr a-z A-Z"}`), "abc")
	if m["stdout"] != "ABC" {
		t.Errorf("pipeline stdout = %q", m["stdout"])
	}
}

func TestArgvListSplat(t *testing.T) {
	m := mustRun(t, mustBuild(t, `argv: [printf, "<%s>", "${ item }", "${ [1, 2] }", "[x]"]`), []any{"a b", "c"})
	if m["stdout"] != "<a b><c><1><2><[x]>" {
		t.Errorf("stdout = %q", m["stdout"])
	}
}

func TestStdinEnvDir(t *testing.T) {
	m := mustRun(t, mustBuild(t, `{argv: [cat], stdin: "${ item }"}`), map[string]any{"k": "v"})
	if m["stdout"] != `{"k":"v"}` {
		t.Errorf("stdin: %q", m["stdout"])
	}
	m = mustRun(t, mustBuild(t, `{argv: [cat]}`), "x")
	if m["stdout"] != "" {
		t.Errorf("no stdin: %q", m["stdout"])
	}
	m = mustRun(t, mustBuild(t, `{argv: [sh, -c, 'printf "%s" "$FLOW_TEST_V"'], env: {FLOW_TEST_V: "v-${ item }"}}`), 7)
	if m["stdout"] != "v-7" {
		t.Errorf("env: %q", m["stdout"])
	}
	base := t.TempDir()
	if err := os.Mkdir(filepath.Join(base, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := build(t, `{argv: [pwd], dir: "${ item }"}`, &steps.Env{Dir: base})
	if err != nil {
		t.Fatal(err)
	}
	m = mustRun(t, s, "sub")
	if got, _ := filepath.EvalSymlinks(m["stdout"].(string)); got != mustEval(t, filepath.Join(base, "sub")) {
		t.Errorf("dir: %q", m["stdout"])
	}
	// Without dir, programs run in the pipeline directory.
	s, _ = build(t, `{argv: [pwd]}`, &steps.Env{Dir: base})
	if got, _ := filepath.EvalSymlinks(mustRun(t, s, nil)["stdout"].(string)); got != mustEval(t, base) {
		t.Errorf("default dir: %q", got)
	}
}

func mustEval(t *testing.T, p string) string {
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestExitErrors(t *testing.T) {
	_, err := run(t, mustBuild(t, `argv: [sh, -c, 'echo first >&2; echo "bad input" >&2; exit 3']`), nil)
	var se *steps.Error
	if !errors.As(err, &se) || se.Class != "exit" || se.Permanent {
		t.Fatalf("want a retryable exit error, got %#v", err)
	}
	if !strings.Contains(err.Error(), "status 3") || !strings.Contains(err.Error(), "bad input") {
		t.Errorf("message lacks status or stderr: %v", err)
	}
	// Only the tail of a long stderr is kept.
	_, err = run(t, mustBuild(t, `argv: [sh, -c, 'i=0; while [ $i -lt 500 ]; do echo "line $i" >&2; i=$((i+1)); done; exit 1']`), nil)
	if err == nil || strings.Contains(err.Error(), "line 479\n") || !strings.Contains(err.Error(), "line 480") || !strings.Contains(err.Error(), "line 499") {
		t.Errorf("tail: %v", err)
	}
	// ok_codes makes an exit code a success, reported in the result.
	m := mustRun(t, mustBuild(t, `{argv: [sh, -c, 'echo warn >&2; exit 1'], ok_codes: [0, 1]}`), nil)
	if m["exit_code"] != int64(1) || m["stderr"] != "warn" {
		t.Errorf("ok_codes: %#v", m)
	}
	// A program that does not exist fails permanently.
	_, err = run(t, mustBuild(t, `argv: [flow-no-such-program-xyz]`), nil)
	if !errors.As(err, &se) || !se.Permanent || !strings.Contains(err.Error(), "flow-no-such-program-xyz") {
		t.Errorf("missing program: %#v", err)
	}
}

func TestMaxOutput(t *testing.T) {
	_, err := run(t, mustBuild(t, `{argv: [yes], max_output: 64KiB}`), nil)
	var se *steps.Error
	if !errors.As(err, &se) || se.Class != "too_large" || !strings.Contains(err.Error(), "65536") {
		t.Fatalf("want too_large, got %v", err)
	}
	m := mustRun(t, mustBuild(t, `{argv: [head, -c, "65536", /dev/zero], max_output: 64KiB}`), nil)
	if len(m["stdout"].(string)) != 65536 {
		t.Errorf("exactly max_output bytes should pass, got %d", len(m["stdout"].(string)))
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return err == nil
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// On cancel the whole process group goes, children of the program
// included, even when they ignore SIGTERM.
func TestCancelKillsProcessGroup(t *testing.T) {
	for _, cmd := range []string{
		`sleep 300 & echo $! > "$1"; wait`,
		`trap "" TERM; sleep 300 & echo $! > "$1"; wait; wait`,
	} {
		t.Run(cmd, func(t *testing.T) {
			pidfile := filepath.Join(t.TempDir(), "pid")
			s := mustBuild(t, fmt.Sprintf(`{shell: true, command: '%s', argv: ["${ item }"], kill_grace: 100ms}`, cmd))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, err := s.Do(ctx, steps.Input{Item: pidfile})
				done <- err
			}()
			pid := waitPID(t, pidfile)
			if !alive(pid) {
				t.Fatal("grandchild not running before cancel")
			}
			cancel()
			err := <-done
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Do: %v, want context.Canceled", err)
			}
			// The grandchild was sent SIGKILL before Do returned; allow for
			// its reaping by init, which is asynchronous.
			for i := 0; alive(pid); i++ {
				if i > 500 {
					t.Fatalf("grandchild %d still alive after cancel", pid)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

func TestTimeoutClass(t *testing.T) {
	s := mustBuild(t, `{argv: [sleep, "300"], kill_grace: 50ms}`)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := s.Do(ctx, steps.Input{})
	if steps.ClassOf(err) != "timeout" || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v (class %s), want a timeout", err, steps.ClassOf(err))
	}
}

func waitPID(t *testing.T, path string) int {
	t.Helper()
	for i := 0; ; i++ {
		b, err := os.ReadFile(path)
		if err == nil && strings.HasSuffix(string(b), "\n") {
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				t.Fatal(err)
			}
			return pid
		}
		if i > 3000 {
			t.Fatal("program did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestOptionErrors(t *testing.T) {
	for _, c := range []struct{ with, want string }{
		{`{shell: true}`, "needs 'command'"},
		{`{command: "ls"}`, "shell: true"},
		{`{capture: text}`, "missing 'argv'"},
		{`{argv: [ls], capture: xml}`, "must be one of"},
		{`{argv: [ls], max_output: lots}`, "invalid size"},
		{`{argv: [ls], max_output: 0}`, "above zero"},
		{`{argv: ["${ item + }"]}`, "expression"},
	} {
		_, err := build(t, c.with, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.with, err, c.want)
		}
	}
}

// Per-item cost of starting a program in its own process group.
func BenchmarkExecTrue(b *testing.B) {
	var doc yaml.Node
	_ = yaml.Unmarshal([]byte(`argv: ["true"]`), &doc)
	r := steps.NewRegistry()
	Register(r)
	k, _ := r.Lookup("exec")
	v, err := k.Build(doc.Content[0], nil, &steps.Env{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	s := v.Step
	for b.Loop() {
		if _, err := s.Do(context.Background(), steps.Input{}); err != nil {
			b.Fatal(err)
		}
	}
}

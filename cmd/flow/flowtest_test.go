package main

import (
	"bytes"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestFlowTestScripts runs the scripts of testdata/flowtest: `flow test` over
// the real binary (exit codes, positions, snapshots, JUnit, mocks).
func TestFlowTestScripts(t *testing.T) {
	root := repoRoot(t)
	cmds := map[string]func(ts *testscript.TestScript, neg bool, args []string){"junit": cmdJUnit}
	for _, m := range []map[string]func(*testscript.TestScript, bool, []string){scriptCmds, exampleCmds} {
		for k, v := range m {
			cmds[k] = v
		}
	}
	testscript.Run(t, testscript.Params{
		Dir:                 filepath.Join(root, "testdata", "flowtest"),
		RequireExplicitExec: true,
		Cmds:                cmds,
		UpdateScripts:       os.Getenv("UPDATE_SCRIPTS") == "1",
		Setup: func(env *testscript.Env) error {
			env.Setenv("ROOT", root)
			return nil
		},
	})
}

// cmdJUnit: junit FILE TESTS FAILURES ERRORS parses FILE as JUnit XML and
// checks the totals of its <testsuites> against those of its suites.
func cmdJUnit(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 4 {
		ts.Fatalf("usage: junit FILE TESTS FAILURES ERRORS")
	}
	type suite struct {
		Tests    int `xml:"tests,attr"`
		Failures int `xml:"failures,attr"`
		Errors   int `xml:"errors,attr"`
		Cases    []struct {
			Name    string    `xml:"name,attr"`
			Failure *struct{} `xml:"failure"`
			Error   *struct{} `xml:"error"`
		} `xml:"testcase"`
	}
	var doc struct {
		XMLName  xml.Name `xml:"testsuites"`
		Tests    int      `xml:"tests,attr"`
		Failures int      `xml:"failures,attr"`
		Errors   int      `xml:"errors,attr"`
		Suites   []suite  `xml:"testsuite"`
	}
	if err := xml.Unmarshal([]byte(ts.ReadFile(args[0])), &doc); err != nil {
		ts.Fatalf("%s is not valid XML: %v", args[0], err)
	}
	want := make([]int, 3)
	for i, a := range args[1:] {
		n, err := strconv.Atoi(a)
		if err != nil {
			ts.Fatalf("junit: %q is not a number", a)
		}
		want[i] = n
	}
	if got := []int{doc.Tests, doc.Failures, doc.Errors}; got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		ts.Fatalf("%s: tests, failures, errors = %v, want %v", args[0], got, want)
	}
	var tests, failures, errs int
	for _, s := range doc.Suites {
		if s.Tests != len(s.Cases) {
			ts.Fatalf("%s: a suite says tests=%d but holds %d cases", args[0], s.Tests, len(s.Cases))
		}
		tests += s.Tests
		failures += s.Failures
		errs += s.Errors
	}
	if tests != doc.Tests || failures != doc.Failures || errs != doc.Errors {
		ts.Fatalf("%s: the suites' totals (%d, %d, %d) disagree with <testsuites>", args[0], tests, failures, errs)
	}
}

// TestEveryExampleHasTests: each pipeline of examples/ has NAME_test.yaml
// beside it (testdata/flowtest/examples.txtar runs them all).
func TestEveryExampleHasTests(t *testing.T) {
	root := repoRoot(t)
	files, err := filepath.Glob(filepath.Join(root, "examples", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples found: %v", err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.yaml") {
			continue
		}
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		if _, err := os.Stat(filepath.Join(root, "examples", name+"_test.yaml")); err != nil {
			t.Errorf("examples/%s.yaml has no tests: write examples/%s_test.yaml (see docs/testing.md)", name, name)
		}
	}
}

// TestTestingDocRuns: the files docs/testing.md shows (each code block
// after a "<!-- file: NAME -->" line) are written to a folder and their
// tests pass, so the guide cannot drift from what flow test does.
func TestTestingDocRuns(t *testing.T) {
	root := repoRoot(t)
	doc, err := os.ReadFile(filepath.Join(root, "docs", "testing.md"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	lines := strings.Split(string(doc), "\n")
	files := 0
	for i := 0; i < len(lines); i++ {
		name, ok := strings.CutPrefix(lines[i], "<!-- file: ")
		if !ok {
			continue
		}
		name = strings.TrimSuffix(name, " -->")
		if i+1 >= len(lines) || !strings.HasPrefix(lines[i+1], "```") {
			t.Fatalf("docs/testing.md:%d: a file marker must come just before a code block", i+1)
		}
		var body []string
		for i += 2; i < len(lines) && lines[i] != "```"; i++ {
			body = append(body, lines[i])
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(strings.Join(body, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		files++
	}
	if files < 4 {
		t.Fatalf("docs/testing.md shows %d files, want the pipelines and tests it teaches with", files)
	}
	stdout, stderr, code := runCLI(t, dir, "test", ".")
	if code != 0 || strings.Contains(stdout, "FAIL") {
		t.Errorf("flow test on the files of docs/testing.md: exit %d\n%s%s", code, stdout, stderr)
	}
}

// runCLI runs the real command line in a process of its own, in dir.
func runCLI(t *testing.T, dir string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), cliEnv+"=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	code = relWait(t, cmd)
	return out.String(), errb.String(), code
}

// Ctrl-C during `flow test` stops the running case, removes its sandbox and
// exits 130 like the rest of the CLI.
func TestFlowTestInterrupted(t *testing.T) {
	dir := t.TempDir()
	tmp := t.TempDir()
	writeFile(t, dir, "slow.yaml", `version: 1
name: slow
stages:
  - name: src
    source: {items: [1]}
  - name: wait
    step: compute
    with:
      value: "${ sleep(600) ?? item }"
  - name: out
    sink: {print: jsonl}
`)
	writeFile(t, dir, "slow_test.yaml", `tests:
  - name: waits ten minutes on the real clock
    clock: real
    expect:
      output: [1]
`)
	cmd := flowCommand(t, "test", dir)
	cmd.Env = append(cmd.Env, "TMPDIR="+tmp)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sandboxes := func() []string {
		m, _ := filepath.Glob(filepath.Join(tmp, "flow-test-*"))
		return m
	}
	deadline := time.Now().Add(hangGuard)
	for len(sandboxes()) == 0 {
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("the case never made its sandbox in %s:\n%s", tmp, out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, cmd); code != 130 {
		t.Fatalf("exit %d, want 130:\n%s", code, out.String())
	}
	if left := sandboxes(); len(left) != 0 {
		t.Errorf("sandbox left behind: %v", left)
	}
	if !strings.Contains(out.String(), "stopped by") {
		t.Errorf("no word of the interruption:\n%s", out.String())
	}
}

package main

import (
	"encoding/xml"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestFlowTestScripts runs the scripts of testdata/flowtest: `flow test` over
// the real binary (exit codes, positions, snapshots, JUnit, mocks).
func TestFlowTestScripts(t *testing.T) {
	root := repoRoot(t)
	cmds := map[string]func(ts *testscript.TestScript, neg bool, args []string){"junit": cmdJUnit}
	for k, v := range scriptCmds {
		cmds[k] = v
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

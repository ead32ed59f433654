package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/flowrun/flow/procpool"
	"github.com/flowrun/flow/steps/all"
)

// cliEnv makes the test binary behave as the flow command; the signal tests
// use it to run the real CLI in a process of its own.
const cliEnv = "FLOW_TEST_AS_CLI"

func TestMain(m *testing.M) {
	// Process-mode stages re-execute os.Executable(), which under test is this
	// binary (or testscript's copy of it named flow): it must serve as a
	// worker before anything else looks at the command line.
	if procpool.IsWorker() {
		os.Exit(procpool.WorkerMain(all.Registry()))
	}
	if os.Getenv(cliEnv) == "1" {
		os.Exit(run(os.Args[1:]))
	}
	testscript.Main(m, map[string]func(){
		"flow": main,
	})
}

// repoRoot is the module root, two levels above this package.
func repoRoot(t testing.TB) string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test source")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

func TestScripts(t *testing.T) {
	root := repoRoot(t)
	testscript.Run(t, testscript.Params{
		Dir:                 filepath.Join(root, "testdata", "script"),
		RequireExplicitExec: true,
		Cmds:                scriptCmds,
		UpdateScripts:       os.Getenv("UPDATE_SCRIPTS") == "1",
		Setup: func(env *testscript.Env) error {
			// Scripts reach the committed examples and schema through $ROOT.
			env.Setenv("ROOT", root)
			return nil
		},
	})
}

// scriptCmds are the commands the scripts use beyond testscript's own.
var scriptCmds = map[string]func(ts *testscript.TestScript, neg bool, args []string){
	"genimages": cmdGenImages, // see examples_test.go
	// exits CODE PROG [ARGS...] runs PROG and checks its exact exit code;
	// stdout and stderr are then checked as after exec.
	"exits": func(ts *testscript.TestScript, neg bool, args []string) {
		if neg || len(args) < 2 {
			ts.Fatalf("usage: exits CODE PROG [ARGS...]")
		}
		want, err := strconv.Atoi(args[0])
		if err != nil {
			ts.Fatalf("exits: bad code %q", args[0])
		}
		got := 0
		if err := ts.Exec(args[1], args[2:]...); err != nil {
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				ts.Fatalf("exits: %v", err)
			}
			got = ee.ExitCode()
		}
		if got != want {
			ts.Fatalf("%s exited %d, want %d", args[1], got, want)
		}
	},
	// jsonval FILE PATH WANT checks one value of a JSON file; PATH is dotted
	// keys and list indexes (stages.1.succeeded), WANT is compared with the
	// value's JSON encoding (strings without their quotes).
	"jsonval": func(ts *testscript.TestScript, neg bool, args []string) {
		if len(args) != 3 {
			ts.Fatalf("usage: jsonval FILE PATH WANT")
		}
		var v any
		if err := json.Unmarshal([]byte(ts.ReadFile(args[0])), &v); err != nil {
			ts.Fatalf("%s: %v", args[0], err)
		}
		for _, k := range strings.Split(args[1], ".") {
			switch x := v.(type) {
			case map[string]any:
				var ok bool
				if v, ok = x[k]; !ok {
					ts.Fatalf("%s: no key %q in %s", args[0], k, args[1])
				}
			case []any:
				i, err := strconv.Atoi(k)
				if err != nil || i < 0 || i >= len(x) {
					ts.Fatalf("%s: no index %q in %s", args[0], k, args[1])
				}
				v = x[i]
			default:
				ts.Fatalf("%s: %s: %q is not inside an object or list", args[0], args[1], k)
			}
		}
		got := ""
		if s, ok := v.(string); ok {
			got = s
		} else {
			b, _ := json.Marshal(v)
			got = string(b)
		}
		if (got == args[2]) == neg {
			ts.Fatalf("%s: %s is %s, want %s%s", args[0], args[1], got, map[bool]string{true: "not ", false: ""}[neg], args[2])
		}
	},
}

package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/flowtest"
	"github.com/flowrun/flow/internal/textsafe"
	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/spec"
)

type testFlags struct {
	run     string
	update  bool
	junit   string
	verbose bool
}

func (a *app) testCmd() *cobra.Command {
	var f testFlags
	cmd := &cobra.Command{
		Use:   "test [PATH]...",
		Short: "Run the tests of pipeline files",
		Long: `Test runs the test cases of pipelines: NAME_test.yaml beside NAME.yaml, and the
'tests:' section of a pipeline file. PATH is a test file, a pipeline file with
a 'tests:' section, a folder (its test files), or a folder followed by /...
(its test files and those of every folder below it). Without PATH, the
current folder.

Each case runs the pipeline, one stage or a range of stages, in this process
(every stage on goroutines, whatever its mode:), without the state database,
with its input, variables and environment, its mocks (nothing outside that is
not mocked can be reached: no request, no program, no file) and, unless it
says 'clock: real', on a virtual clock: sleeps, timeouts, deadlines, backoff
and rates take no time and attempt times are exact. Outputs are captured, not
printed.

One line per case: ok or FAIL, the file, the case's name and how long it took.
A failed assertion is printed as FILE:LINE:COL of the assertion in the test
file, with what was wanted and what came (a diff for lists and text).

--update writes the snapshot of every case with 'snapshot:' instead of
comparing with it. --junit FILE writes the results as JUnit XML for CI.

Exit codes: 0 every case passed; 1 a case failed; 2 a test file is not
valid, or the command line is wrong (no test found, a bad --run).

See docs/testing.md.`,
		Example: `  flow test                              # the tests of this folder
  flow test examples/map_timeout_test.yaml
  flow test ./...                        # this folder and every folder below
  flow test ./pipelines/... --run 'retr(y|ies)' -v
  flow test --update                     # write the snapshots again
  flow test ./... --junit junit.xml      # for CI`,
		ValidArgsFunction: yamlFiles,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runTests(args, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.run, "run", "", "run only the cases whose name matches `REGEX`")
	fl.BoolVar(&f.update, "update", false, "write the snapshots (snapshot:) from this run instead of comparing")
	fl.StringVar(&f.junit, "junit", "", "write the results as JUnit XML to `FILE`")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "print what each case's run wrote to stderr, and the snapshots written")
	return cmd
}

func (a *app) runTests(args []string, f testFlags) error {
	var pick *regexp.Regexp
	if f.run != "" {
		re, err := regexp.Compile(f.run)
		if err != nil {
			return &exitError{code: ExitInvalid, msg: fmt.Sprintf("--run %q: %v", f.run, err)}
		}
		pick = re
	}
	if f.junit != "" {
		if err := report.CheckPath(f.junit); err != nil {
			return &exitError{code: ExitInvalid, msg: fmt.Sprintf("--junit: %v", err)}
		}
	}
	if len(args) == 0 {
		args = []string{"."}
	}
	var files []string
	seen := map[string]bool{}
	for _, arg := range args {
		found, err := flowtest.Find(arg)
		if err != nil {
			return &exitError{code: ExitInvalid, msg: fmt.Sprintf("%s: %v", arg, err)}
		}
		for _, f := range found {
			if !seen[filepath.Clean(f)] {
				seen[filepath.Clean(f)] = true
				files = append(files, f)
			}
		}
	}
	if len(files) == 0 {
		return &exitError{code: ExitInvalid, msg: fmt.Sprintf("no test files in %s: write NAME_test.yaml beside NAME.yaml (see docs/testing.md)", strings.Join(args, ", "))}
	}

	begin := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The first SIGINT or SIGTERM stops the case running (its sandbox is
	// removed) and the cases after it; a second exits at once.
	stop := a.handleSignals(cancel, a.stderr)
	r := &flowtest.Runner{Registry: flowtest.NewRegistry(), Environ: a.environ, Update: f.update, Context: ctx}
	out := a.stdout
	var (
		results []*flowtest.Result
		broken  []flowtest.Broken
		ran     int
	)
	for _, file := range files {
		s, err := flowtest.Load(file)
		if err != nil {
			b := flowtest.Broken{File: file}
			var ds conf.Diags
			if errors.As(err, &ds) {
				for _, d := range ds {
					b.Problems = append(b.Problems, d.String())
				}
			} else {
				b.Problems = []string{fmt.Sprintf("%s: %v", file, err)}
			}
			fmt.Fprintf(out, "INVALID %s\n", textsafe.Line(file))
			for _, p := range b.Problems {
				fmt.Fprintf(out, "    %s\n", textsafe.Line(p))
			}
			broken = append(broken, b)
			continue
		}
		for _, c := range s.Cases {
			if pick != nil && !pick.MatchString(c.Name) || ctx.Err() != nil {
				continue
			}
			ran++
			res := r.Run(s, c)
			results = append(results, res)
			a.printResult(out, res, f.verbose)
		}
		_ = s.Close()
	}
	total := time.Since(begin)

	failed := 0
	for _, res := range results {
		if !res.Passed() {
			failed++
		}
	}
	junitLost := false
	if f.junit != "" {
		if err := writeJUnit(f.junit, results, broken, total); err != nil {
			fmt.Fprintf(a.stderr, "flow: --junit: %v\n", err)
			junitLost = true // CI would read no record: not a success
		}
	}
	if sig := stop(); sig != nil {
		fmt.Fprintf(out, "flow test: stopped by %s after %d cases\n", signalName(sig), len(results))
		return exitCode(signalCode(sig))
	}
	passed := len(results) - failed
	switch {
	case len(broken) > 0:
		fmt.Fprintf(out, "flow test: %d invalid test files, %d passed, %d failed (%s)\n", len(broken), passed, failed, roundDuration(total))
		return exitCode(ExitInvalid)
	case ran == 0 && pick != nil:
		return &exitError{code: ExitInvalid, msg: fmt.Sprintf("--run %q matches no case in %d test files", f.run, len(files))}
	case failed > 0:
		fmt.Fprintf(out, "flow test: %d passed, %d failed (%s)\n", passed, failed, roundDuration(total))
		return exitCode(ExitFailed)
	case junitLost:
		return exitCode(ExitFailed)
	}
	if !a.quiet {
		fmt.Fprintf(out, "flow test: %d passed in %d files (%s)\n", passed, len(files), roundDuration(total))
	}
	return nil
}

func (a *app) printResult(w io.Writer, res *flowtest.Result, verbose bool) {
	status := "ok  "
	if !res.Passed() {
		status = "FAIL"
	}
	if res.Passed() && a.quiet {
		return
	}
	fmt.Fprintf(w, "%s %s: %s (%s)\n", status, textsafe.Line(res.Suite.File), textsafe.Line(res.Case.Name), roundDuration(res.Duration))
	for _, f := range res.Failures {
		flowtest.WriteFailure(w, f, "    ")
	}
	if res.Updated != "" {
		fmt.Fprintf(w, "    wrote %s\n", textsafe.Line(res.Updated))
	}
	if res.Log != "" && (verbose || !res.Passed()) {
		fmt.Fprintf(w, "    what the run wrote to stderr:\n")
		for _, l := range tailLines(res.Log, verbose) {
			fmt.Fprintf(w, "      %s\n", textsafe.Line(l))
		}
	}
}

// tailLines is a run's log, its last 20 lines unless verbose.
func tailLines(log string, all bool) []string {
	var lines []string
	start := 0
	for i := 0; i < len(log); i++ {
		if log[i] == '\n' {
			lines = append(lines, log[start:i])
			start = i + 1
		}
	}
	if start < len(log) {
		lines = append(lines, log[start:])
	}
	if !all && len(lines) > 20 {
		lines = append([]string{fmt.Sprintf("... (%d lines before)", len(lines)-20)}, lines[len(lines)-20:]...)
	}
	return lines
}

// writeJUnit writes the JUnit file whole or not at all.
func writeJUnit(path string, results []*flowtest.Result, broken []flowtest.Broken, total time.Duration) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".flow-junit-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := flowtest.WriteJUnit(tmp, results, broken, total); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// loadAny is load for flow validate, which also checks test files
// (NAME_test.yaml): `flow validate dir/*.yaml` covers a folder whose
// pipelines have their tests beside them.
func (a *app) loadAny(file string, set map[string]string) (*spec.Pipeline, error) {
	if !flowtest.IsTestFile(filepath.Base(file)) {
		p, err := a.load(file, set)
		if err != nil || p.Tests == nil || file == "-" {
			return p, err
		}
		// Its tests: section too.
		s, err := flowtest.Parse(file, p.Source)
		if err != nil {
			return p, err
		}
		return p, s.Close()
	}
	s, err := flowtest.Load(file)
	if err != nil {
		return nil, err
	}
	return nil, s.Close()
}

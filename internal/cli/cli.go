// Package cli is the `flow` command line. cmd/flow only calls Run, so the
// end-to-end tests drive exactly the code users run.
package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"github.com/spf13/cobra"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/internal/redact"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/steps/all"
)

// Exit codes, as in the product sketch.
const (
	ExitOK      = 0   // every item succeeded, or failures stayed within max_errors
	ExitFailed  = 1   // items failed or a policy stopped the run
	ExitInvalid = 2   // invalid pipeline file or command line
	ExitSIGINT  = 130 // interrupted by SIGINT, report written
	ExitSIGTERM = 143 // stopped by SIGTERM, report written
)

// exitError carries an exit code out of a command. Its message, if any, has
// not been printed yet.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// exitCode returns an error that makes Run return code without printing more.
func exitCode(code int) error { return &exitError{code: code} }

// app holds what every command shares; the hooks make signal handling
// testable in-process.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	reg            *steps.Registry
	environ        []string
	quiet          bool

	// notify subscribes to signals (signal.Notify); stopNotify undoes it.
	notify     func(c chan<- os.Signal, sig ...os.Signal)
	stopNotify func(c chan<- os.Signal)
	// exit ends the process at once (second signal).
	exit func(code int)
}

// Run runs the flow command line with args (without the program name) and
// returns the process exit code.
func Run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{
		stdin: stdin, stdout: stdout, stderr: stderr,
		reg:        all.Registry(),
		environ:    os.Environ(),
		notify:     signal.Notify,
		stopNotify: signal.Stop,
		exit:       os.Exit,
	}
	return a.run(args)
}

func (a *app) run(args []string) int {
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	cmd, err := root.ExecuteC()
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintf(a.stderr, "flow: %s\n", ee.msg)
		}
		return ee.code
	}
	// Anything else comes from cobra itself: an unknown command or flag, a
	// missing or extra argument. Those are usage errors.
	if cmd == nil {
		cmd = root
	}
	fmt.Fprintf(a.stderr, "flow: %s\n", strings.TrimSpace(err.Error()))
	fmt.Fprintf(a.stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	return ExitInvalid
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "flow",
		Short: "Run declarative concurrent pipelines",
		Long: `flow runs a pipeline described in a YAML file. Each stage runs its items on an
executor of its own (goroutines or worker processes) with its own worker count,
rate limit, timeouts, retries, ordering and completion policy, and streams its
results into the next stage as they are ready.

Results go to stdout; progress, logs and the closing summary go to stderr.

Exit codes:
  0    every item succeeded (or failures stayed within max_errors)
  1    items failed, or a policy stopped the run
  2    invalid pipeline file or command line; nothing was run
  75   skipped: another run holds the --lock file (--lock-mode skip); nothing was run
  130  interrupted by SIGINT (report written)
  143  stopped by SIGTERM (report written)`,
		Example: `  flow init hello                 # write hello.yaml, a pipeline to start from
  flow validate hello.yaml        # check it: every problem as FILE:LINE:COL
  flow run hello.yaml             # run it
  flow steps                      # what each step kind does and its options
  flow completion bash > /etc/bash_completion.d/flow`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().BoolVarP(&a.quiet, "quiet", "q", false, "print only results and errors: no progress, no 'ok' lines, no summary of a run that succeeded (a failed run still says why)")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return err // reported as a usage error by run
	})
	root.AddCommand(
		a.runCmd(),
		a.validateCmd(),
		a.schemaCmd(),
		a.stepsCmd(),
		a.versionCmd(),
		a.initCmd(),
		a.graphCmd(),
		a.workerCmd(),
		a.workersCmd(),
		a.runsCmd(),
		a.cacheCmd(),
		a.reportCmd(),
		a.testCmd(),
	)
	return root
}

// printDiags prints every problem of a pipeline file, one per line, and
// reports whether err was such a list.
// red hides the pipeline's secrets, which a message may quote (a path or a
// number built from a variable); nil hides nothing.
func printDiags(w io.Writer, file string, err error, red *redact.Redactor) {
	var ds conf.Diags
	if errors.As(err, &ds) {
		for _, d := range ds.WithFile(file) {
			fmt.Fprintln(w, red.String(d.String()))
		}
		return
	}
	fmt.Fprintln(w, red.String(fmt.Sprintf("%s: %v", file, err)))
}

// secretsOf is the redactor of p's secret variables (p may be nil, or only
// partly valid).
func secretsOf(p *spec.Pipeline) *redact.Redactor {
	if p == nil {
		return nil
	}
	return redact.New(p.Vars.Secrets())
}

// yamlFiles makes shells complete pipeline files.
func yamlFiles(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return []string{"yaml", "yml"}, cobra.ShellCompDirectiveFilterFileExt
}

// oneFile is the Args check of commands that take exactly one pipeline file,
// with a message that says what to type.
func oneFile(cmd *cobra.Command, args []string) error {
	switch {
	case len(args) == 0:
		return fmt.Errorf("missing FILE: name the pipeline file, e.g. %s pipeline.yaml", cmd.CommandPath())
	case len(args) > 1:
		return fmt.Errorf("%s takes one pipeline file, got %d: %s", cmd.CommandPath(), len(args), strings.Join(args, " "))
	}
	return nil
}

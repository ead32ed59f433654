package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/flowrun/flow/spec"
)

func (a *app) validateCmd() *cobra.Command {
	var sets []string
	cmd := &cobra.Command{
		Use:   "validate FILE...",
		Short: "Check pipeline files and report every problem at once",
		Long: `Validate parses each pipeline file and checks everything that can be checked
without running it: keys and types, durations and rates, stage names and roles,
step kinds and their options, and every ${ } expression (compiled and
type-checked). Options evaluated once, before items exist (a source's, a
sink's path), are computed with the variables as --set and FLOW_VAR_NAME
override them, and checked with their values: a problem they cause ends with
"(from --set NAME=VALUE)". Every problem of every file is printed to stderr
as FILE:LINE:COL: message, sorted.

A test file (NAME_test.yaml, see flow test) is checked as a test file.

Exit code 0 when every file is valid ("FILE: ok" on stdout for each, unless
--quiet), 2 when any file has a problem. Use "-" to read a file from stdin.`,
		Example: `  flow validate pipeline.yaml
  flow validate examples/*.yaml
  flow validate --set count=5 pipeline.yaml   # check with a variable overridden
  cat pipeline.yaml | flow validate -`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return fmt.Errorf("missing FILE: name one or more pipeline files, e.g. flow validate pipeline.yaml")
			}
			return nil
		},
		ValidArgsFunction: yamlFiles,
		RunE: func(cmd *cobra.Command, args []string) error {
			set, err := parseSets(sets)
			if err != nil {
				return err
			}
			bad := 0
			for _, file := range args {
				if p, err := a.loadAny(file, set); err != nil {
					printDiags(a.stderr, file, err, secretsOf(p))
					bad++
					continue
				}
				if !a.quiet {
					fmt.Fprintf(a.stdout, "%s: ok\n", file)
				}
			}
			if bad > 0 {
				if len(args) > 1 {
					return &exitError{code: ExitInvalid, msg: fmt.Sprintf("%d of %d files have problems", bad, len(args))}
				}
				return exitCode(ExitInvalid)
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&sets, "set", nil, "override variable NAME with VALUE (`NAME=VALUE`, repeatable)")
	return cmd
}

// load reads and validates one pipeline file ("-" for stdin) with the
// variable overrides of the command line and the environment.
func (a *app) load(file string, set map[string]string) (*spec.Pipeline, error) {
	opts := spec.Options{Set: set, Environ: a.environ, Resolve: true}
	if file == "-" {
		data, err := io.ReadAll(a.stdin)
		if err != nil {
			return nil, fmt.Errorf("reading stdin: %w", err)
		}
		return spec.Parse("<stdin>", data, opts, a.reg)
	}
	return spec.Load(file, opts, a.reg)
}

// parseSets reads repeated --set NAME=VALUE flags.
func parseSets(sets []string) (map[string]string, error) {
	if len(sets) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(sets))
	for _, kv := range sets {
		k, v, ok := strings.Cut(kv, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, &exitError{code: ExitInvalid, msg: fmt.Sprintf("--set %q: write NAME=VALUE, e.g. --set count=10", kv)}
		}
		m[k] = v
	}
	return m, nil
}

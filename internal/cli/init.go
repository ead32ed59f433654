package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
)

func (a *app) initCmd() *cobra.Command {
	var (
		force  bool
		schema string
	)
	cmd := &cobra.Command{
		Use:   "init [NAME]",
		Short: "Write a commented pipeline to start from",
		Long: `Init writes NAME.yaml (pipeline.yaml without NAME): a small pipeline that
validates and runs as it is, with a comment on every key, and the
yaml-language-server modeline that gives editors completion, hover and checks
from the schema.

The modeline points at --schema when given; otherwise at the schema.json of the
nearest directory above, up to the project root (the directory with .git or
go.mod), by a relative path; otherwise at schema.json beside the file, with the
command that creates it.

An existing file is never overwritten unless --force is given.`,
		Example: `  flow init                     # writes pipeline.yaml
  flow init thumbnails          # writes thumbnails.yaml
  flow init jobs/nightly.yaml --schema ../schema.json
  flow init && flow run pipeline.yaml`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := "pipeline"
			if len(args) == 1 {
				name = args[0]
			}
			return a.scaffold(name, schema, force)
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "overwrite the file if it exists")
	cmd.Flags().StringVar(&schema, "schema", "", "`PATH or URL` of schema.json for the editor modeline")
	return cmd
}

func (a *app) scaffold(name, schema string, force bool) error {
	file := name
	if ext := filepath.Ext(file); ext != ".yaml" && ext != ".yml" {
		file += ".yaml"
	}
	base := strings.TrimSuffix(filepath.Base(file), filepath.Ext(file))
	if base == "" || strings.HasPrefix(base, ".") {
		return &exitError{code: ExitInvalid, msg: fmt.Sprintf("%q is not a usable pipeline name; try e.g. 'flow init hello'", name)}
	}
	modeline := ""
	if schema == "" {
		schema = findSchema(filepath.Dir(file))
	}
	if schema == "" {
		modeline = "# Editors check this file against schema.json; create it beside this file with:\n#   flow schema > schema.json\n"
		schema = "schema.json"
	}
	modeline = "# yaml-language-server: $schema=" + schema + "\n" + modeline
	text := modeline + strings.ReplaceAll(scaffoldBody, "{{NAME}}", base)

	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(file, flags, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return &exitError{code: ExitInvalid, msg: fmt.Sprintf("%s already exists; choose another name, or add --force to overwrite it", file)}
	}
	if err != nil {
		return &exitError{code: ExitFailed, msg: fmt.Sprintf("cannot write %s: %v", file, err)}
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return &exitError{code: ExitFailed, msg: fmt.Sprintf("cannot write %s: %v", file, err)}
	}
	if err := f.Close(); err != nil {
		return &exitError{code: ExitFailed, msg: fmt.Sprintf("cannot write %s: %v", file, err)}
	}
	if !a.quiet {
		fmt.Fprintf(a.stdout, "wrote %s\nnext: flow validate %s && flow run %s\n", file, file, file)
	}
	return nil
}

// findSchema looks for schema.json in dir and its parents, up to the root of
// the project (the first directory holding .git or go.mod), and returns its
// path relative to dir, as the modeline wants it. Outside a project it finds
// nothing: a schema.json left in /tmp or $HOME says nothing about this file.
func findSchema(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return ""
	}
	var found string
	for d := abs; ; d = filepath.Dir(d) {
		candidate := filepath.Join(d, "schema.json")
		if found == "" {
			if st, err := os.Stat(candidate); err == nil && st.Mode().IsRegular() {
				found = candidate
			}
		}
		if isProjectRoot(d) {
			break
		}
		if filepath.Dir(d) == d {
			return ""
		}
	}
	if found == "" {
		return ""
	}
	rel, err := filepath.Rel(abs, found)
	if err != nil {
		return ""
	}
	rel = filepath.ToSlash(rel)
	if !strings.HasPrefix(rel, ".") {
		rel = "./" + rel
	}
	return rel
}

func isProjectRoot(dir string) bool {
	for _, marker := range []string{".git", "go.mod"} {
		if _, err := os.Stat(filepath.Join(dir, marker)); err == nil {
			return true
		}
	}
	return false
}

// scaffoldBody is the pipeline written by init, after the modeline. {{NAME}} is
// replaced by the file's base name. It must validate and run as it is: a test
// runs it.
const scaffoldBody = `#
# {{NAME}}: a flow pipeline. Check it with 'flow validate', run it with 'flow run'.
# 'flow steps' lists every source, step and sink with its options; hovering a
# key in an editor with the YAML extension shows the same help.

# Format version of this file: always 1.
version: 1
# Shown in progress output, in the closing summary and in the run report.
name: {{NAME}}
description: Squares the numbers from 1 to 10.

# Variables, used in expressions as vars.NAME. Override them when running:
#   flow run FILE --set count=100    or    FLOW_VAR_count=100 flow run FILE
vars:
  count: 10

# Run from cron? A lock keeps two runs from overlapping: with mode skip a run
# that finds the previous one still going exits 75 without running.
# lock: {file: {{NAME}}.lock, mode: skip}

# Stages run in order, each streaming its results into the next one.
stages:
  # The first stage is the source of the items: here the numbers 1 to count
  # (both included). Others: items, glob, lines, jsonl, stdin.
  - name: numbers
    source:
      range: {from: 1, to: "${ vars.count }"}

  # A step stage does its work on every item, several items at once.
  - name: square
    step: compute
    with:
      # ${ } holds an expression over item, index, vars and env; a string
      # that is exactly one expression keeps its type (here numbers).
      value: {n: "${ item }", square: "${ item * item }"}
    mode: thread      # thread: goroutines in this process; process: worker processes
    workers: 4        # items at once; auto picks a number for the mode
    order: input      # results leave in input order (like executor.map); or completion
    on_error: fail    # a failed item stops the run; skip drops it, keep passes it on
    timeout: 5s       # bound on each attempt of an item

  # The last stage may be a sink; without one, results print as JSON Lines.
  - name: out
    sink:
      print: jsonl    # or table, json, csv; write: {path: out.jsonl} for a file
`

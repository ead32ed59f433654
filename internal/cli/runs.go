package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/flowrun/flow/store"
)

type runsFlags struct {
	state stateFlags
	json  bool
	limit int
}

func (a *app) runsCmd() *cobra.Command {
	var f runsFlags
	cmd := &cobra.Command{
		Use:   "runs [FILE]",
		Short: "List the recorded runs",
		Long: `Runs lists the runs recorded in the state database, the most recent first:
id, status, exit code, start, duration, pipeline and each stage's counts.

flow run records every run in .flow/state.db beside the pipeline file (see
docs/state.md). With FILE, runs reads the database beside FILE and lists the
runs of FILE only; without it, the database in ./.flow. --state DIR (or
FLOW_STATE) reads DIR/state.db instead.

A run shown as "died" was recorded as running by a process of this host that
is gone: it was killed (SIGKILL, out of memory) or the machine restarted.

flow runs show ID prints the JSON report of one run.`,
		Example: `  flow runs
  flow runs nightly.yaml --limit 5
  flow runs --json | jq '.[0].status'
  flow runs show latest`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f.state.changed = cmd.Flags().Changed
			file := ""
			if len(args) == 1 {
				file = args[0]
			}
			return a.listRuns(file, f)
		},
	}
	addStateFlags(cmd, &f.state, false)
	cmd.Flags().BoolVar(&f.json, "json", false, "print the runs as a JSON array (with their variables and file hashes)")
	cmd.Flags().IntVar(&f.limit, "limit", 20, "list at most `N` runs, the most recent; 0 lists them all")
	cmd.AddCommand(a.runsShowCmd())
	return cmd
}

func (a *app) runsShowCmd() *cobra.Command {
	var f stateFlags
	cmd := &cobra.Command{
		Use:   "show ID [FILE]",
		Short: "Print the report of one recorded run",
		Long: `Show prints the JSON report of one run, as flow run --report writes it. ID is
a run id as flow runs lists it, a prefix of one that names one run only, or
"latest". FILE and --state pick the database as for flow runs.`,
		Example: `  flow runs show latest
  flow runs show 20261203T220508 nightly.yaml`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return fmt.Errorf("missing ID: name a run, e.g. %s latest (flow runs lists them)", cmd.CommandPath())
			}
			return cobra.MaximumNArgs(2)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			f.changed = cmd.Flags().Changed
			file := ""
			if len(args) == 2 {
				file = args[1]
			}
			return a.showRun(args[0], file, f)
		},
	}
	addStateFlags(cmd, &f, false)
	return cmd
}

// openRuns opens the database flow runs reads, without creating one.
func (a *app) openRuns(file string, f stateFlags) (*store.DB, string, error) {
	dir := "."
	if file != "" {
		dir = filepath.Dir(file)
	}
	loc, err := a.stateLocation(f, dir)
	if err != nil {
		return nil, "", err
	}
	db, err := store.Open(loc.path, store.Options{MustExist: true})
	if err != nil {
		if errors.Is(err, store.ErrNotExist) {
			return nil, loc.path, err
		}
		return nil, "", &exitError{code: ExitFailed, msg: err.Error()}
	}
	return db, loc.path, nil
}

func (a *app) listRuns(file string, f runsFlags) error {
	if f.limit < 0 {
		return &exitError{code: ExitInvalid, msg: "--limit must not be negative"}
	}
	db, path, err := a.openRuns(file, f.state)
	if errors.Is(err, store.ErrNotExist) {
		// Nothing recorded yet is an answer, not a failure.
		if f.json {
			fmt.Fprintln(a.stdout, "[]")
		} else {
			fmt.Fprintf(a.stderr, "flow: no runs recorded: there is no %s yet (flow run records each run there)\n", path)
		}
		return nil
	} else if err != nil {
		return err
	}
	defer db.Close()
	filter := store.RunFilter{Limit: f.limit}
	if file != "" {
		if filter.File, err = filepath.Abs(file); err != nil {
			return err
		}
	}
	runs, err := db.Runs(context.Background(), filter)
	if err != nil {
		return &exitError{code: ExitFailed, msg: err.Error()}
	}
	if f.json {
		if runs == nil {
			runs = []store.Run{}
		}
		b, err := json.MarshalIndent(runs, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "%s\n", b)
		return nil
	}
	if len(runs) == 0 {
		fmt.Fprintf(a.stderr, "flow: no runs recorded in %s\n", db.Path())
		return nil
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tEXIT\tSTARTED\tDURATION\tPIPELINE\tSTAGES")
	for _, r := range runs {
		exit, dur := "-", "-"
		if r.ExitCode != nil {
			exit = fmt.Sprint(*r.ExitCode)
		}
		if r.End != nil {
			dur = roundDuration(r.End.Sub(r.Start))
		}
		name := r.Pipeline
		if name == "" {
			name = filepath.Base(r.File)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Status, exit, r.Start.Local().Format("2006-01-02 15:04:05"), dur, name, stageCounts(r.Stages))
	}
	return tw.Flush()
}

// stageCounts is a run's stages as the closing summary of flow run has them.
func stageCounts(stages []store.StageCounts) string {
	var out []string
	for _, s := range stages {
		var parts []string
		add := func(n int64, what string) {
			if n > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", n, what))
			}
		}
		add(s.Succeeded, "ok")
		add(s.Failed, "failed")
		add(s.Skipped, "skipped")
		add(s.Cancelled, "cancelled")
		add(s.Filtered, "filtered")
		if len(parts) == 0 {
			parts = append(parts, "0 items")
		}
		out = append(out, s.Name+" "+strings.Join(parts, ", "))
	}
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, " | ")
}

func (a *app) showRun(id, file string, f stateFlags) error {
	db, path, err := a.openRuns(file, f)
	if errors.Is(err, store.ErrNotExist) {
		return &exitError{code: ExitFailed, msg: fmt.Sprintf("no runs recorded: there is no %s yet", path)}
	} else if err != nil {
		return err
	}
	defer db.Close()
	r, doc, err := db.FindRun(context.Background(), id)
	if err != nil {
		return &exitError{code: ExitFailed, msg: err.Error()}
	}
	if doc == nil {
		why := "it did not start"
		if r.Status == store.StatusRunning || r.Status == store.StatusDied {
			why = "it is " + r.Status
			if r.Reason != "" {
				why += ": " + r.Reason
			}
		}
		return &exitError{code: ExitFailed, msg: fmt.Sprintf("run %s has no report: %s", r.ID, why)}
	}
	var b bytes.Buffer
	if err := json.Indent(&b, doc, "", "  "); err != nil {
		return &exitError{code: ExitFailed, msg: fmt.Sprintf("run %s: stored report: %v", r.ID, err)}
	}
	b.WriteByte('\n')
	_, err = a.stdout.Write(b.Bytes())
	return err
}

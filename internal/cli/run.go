package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/internal/redact"
	"github.com/flowrun/flow/internal/textsafe"
	"github.com/flowrun/flow/progress"
	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/report/events"
	"github.com/flowrun/flow/steps"
)

type runFlags struct {
	sets     []string
	report   string
	events   string
	html     string
	metrics  string
	progress string
	lock     lockFlags
	cluster  clusterFlags
	state    stateFlags
	resume   resumeFlags
}

func (a *app) runCmd() *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run FILE",
		Short: "Run a pipeline",
		Long: `Run validates the pipeline file, then runs it: results go to stdout, progress
and logs to stderr, and a one-line summary of every stage closes the run on
stderr (with --quiet, only when the run did not succeed: it says why).

On a terminal the progress bars sit below the results: each result printed
erases them and they are drawn again under it, so nothing a run prints is
ever overwritten.

Variables declared under vars: take their defaults from the file; --set
NAME=VALUE and the environment variable FLOW_VAR_NAME override them (--set
wins).

Validation comes first, with the variables as overridden: options evaluated
once (a source's, a sink's path) are computed and checked, so a bad --set
value is reported as FILE:LINE:COL (from --set NAME=VALUE) and nothing runs
(exit 2).

--report FILE writes the run report (JSON: every stage's counts, latencies and
the failed items). It is written whatever happens: on success, on failure, on
interrupt, and when nothing was run (status "invalid", with every problem).
FILE is tried first: one that cannot be written stops the run before it
starts. It is replaced atomically (a symbolic link is written through) and
readable by others (0644 less the umask).

--html FILE writes a self-contained HTML page of the run: status, the first
failure, per stage the outcomes, throughput, items in flight against the
workers, time waiting on limits, latency percentiles and errors by class, a
timeline with one lane per worker, and a table of items (failures first).
--events FILE keeps what the page needs beside the JSON report, for flow
report to draw it later. --metrics FILE writes the run's figures in the
Prometheus text format, for node_exporter's textfile collector. All are
written atomically, like the report, whatever happens.

SIGINT (Ctrl-C) or SIGTERM stops the sources, cancels running work, drains the
stages, writes the report and exits 130 or 143. A second signal exits at once.

Exit codes: 0 every item succeeded (or failures stayed within max_errors);
1 items failed or a policy stopped the run; 2 invalid file or command line;
75 skipped because another run holds the --lock file (--lock-mode skip);
130/143 interrupted.

--lock FILE keeps runs from cron from overlapping: the run holds an exclusive
lock (flock) on FILE until it ends, however it ends, so a killed run never
leaves a stale lock. A run that finds it held waits, skips or fails as
--lock-mode says. A pipeline can declare its lock in the file instead
(lock: run.lock, or lock: {file: run.lock, mode: skip}); the flags override
it.`,
		Example: `  flow run pipeline.yaml
  flow run pipeline.yaml --set count=100 --report report.json
  FLOW_VAR_base_url=http://localhost:8080 flow run api.yaml
  flow run pipeline.yaml --progress plain 2> progress.log
  flow run pipeline.yaml > results.jsonl
  flow run pipeline.yaml --html run.html --metrics /var/lib/node_exporter/textfile/flow.prom
  flow run nightly.yaml --lock /tmp/nightly.lock --lock-mode skip   # from cron
  flow run big.yaml --nats nats://queue.internal:4222             # mode: cluster stages on flow workers`,
		Args:              oneFile,
		ValidArgsFunction: yamlFiles,
		RunE: func(cmd *cobra.Command, args []string) error {
			f.lock.changed = cmd.Flags().Changed
			f.state.changed = cmd.Flags().Changed
			return a.runPipeline(args[0], f)
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&f.sets, "set", nil, "override variable NAME with VALUE (`NAME=VALUE`, repeatable)")
	fl.StringVar(&f.report, "report", "", "write the run report as JSON to `FILE` (also on failure and interrupt)")
	fl.StringVar(&f.html, "html", "", "write a self-contained HTML page of the run (timeline, charts, items) to `FILE`")
	fl.StringVar(&f.events, "events", "", "write what the HTML page needs to `FILE` (JSON Lines), for flow report --html")
	fl.StringVar(&f.metrics, "metrics", "", "write the run's figures in the Prometheus text format to `FILE` (node_exporter textfile collector)")
	fl.StringVar(&f.progress, "progress", "auto", "progress on stderr: auto (bars on a terminal, nothing otherwise), bar, plain ([n/total] lines) or none")
	addLockFlags(cmd, &f.lock)
	addClusterFlags(cmd, &f.cluster)
	addStateFlags(cmd, &f.state, true)
	addResumeFlags(cmd, &f.resume)
	_ = cmd.RegisterFlagCompletionFunc("progress", cobra.FixedCompletions(progressModes, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("report", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"json"}, cobra.ShellCompDirectiveFilterFileExt
	})
	_ = cmd.RegisterFlagCompletionFunc("html", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"html"}, cobra.ShellCompDirectiveFilterFileExt
	})
	return cmd
}

var progressModes = progress.Modes

// runPipeline runs a pipeline file and, with --report, leaves a report of
// this run at that path whatever happens: a run refused before it starts
// (status invalid), one that could not start or take its lock, one that
// failed or was interrupted. The path is tried first, so that a report that
// could not be written is known before any item runs.
func (a *app) runPipeline(file string, f runFlags) error {
	if f.report != "" {
		if err := report.CheckPath(f.report); err != nil {
			return &exitError{code: ExitInvalid, msg: fmt.Sprintf("--report: %v; nothing was run", err)}
		}
	}
	o := &outcome{start: time.Now()}
	defer func() {
		if o.release != nil {
			o.release() // after the report: the next run to take the lock finds it written
		}
	}()
	err := a.execute(file, f, o)
	if f.report == "" {
		return err
	}
	rep := o.rep
	if rep == nil {
		rep = o.refused(file, err)
	}
	if werr := rep.WriteFile(f.report); werr != nil {
		fmt.Fprintf(a.stderr, "flow: %v\n", werr)
		if err == nil {
			return exitCode(ExitFailed)
		}
	}
	return err
}

// outcome is what a run leaves for its report.
type outcome struct {
	start    time.Time
	rep      *report.Report // the engine's, once the run started
	name     string         // the pipeline's name, once read
	status   string         // set by the runs that never started
	reason   string
	problems []string
	release  func() // the --lock, held until the report is written
}

// refused is the report of a run that never started: its exit code and why.
func (o *outcome) refused(file string, err error) *report.Report {
	code, reason := ExitOK, o.reason
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
		if reason == "" {
			reason = ee.msg
		}
	}
	status := report.Status(o.status)
	if status == "" {
		status = map[int]report.Status{ExitOK: report.StatusSucceeded, ExitInvalid: report.StatusInvalid,
			ExitLocked: report.StatusSkipped, ExitSIGINT: report.StatusInterrupted, ExitSIGTERM: report.StatusInterrupted}[code]
		if status == "" {
			status = report.StatusFailed
		}
	}
	end := time.Now()
	return &report.Report{
		Pipeline: o.name, File: file, Start: o.start, End: end, Duration: report.Duration(end.Sub(o.start)),
		ExitCode: code, Status: status, Reason: reason, Problems: o.problems,
		Stages: []*report.Stage{}, Failures: []report.Failure{},
	}
}

// problemList is every problem of an invalid pipeline, as printed: secret
// values hidden.
func problemList(file string, err error, red *redact.Redactor) []string {
	var ds conf.Diags
	if !errors.As(err, &ds) {
		return []string{red.String(fmt.Sprintf("%s: %v", file, err))}
	}
	var out []string
	for _, d := range ds.WithFile(file) {
		out = append(out, red.String(d.String()))
	}
	return out
}

func (a *app) execute(file string, f runFlags, o *outcome) error {
	set, err := parseSets(f.sets)
	if err != nil {
		return err
	}
	if !contains(progressModes, f.progress) {
		return &exitError{code: ExitInvalid, msg: fmt.Sprintf("--progress %q: use one of %s", f.progress, strings.Join(progressModes, ", "))}
	}
	if err := checkLockFlags(f.lock); err != nil {
		return err
	}
	if err := f.resume.check(f.cluster.nats); err != nil {
		return err
	}
	p, err := a.load(file, set)
	red := secretsOf(p)
	if p != nil {
		o.name = p.Name
	}
	if err != nil {
		printDiags(a.stderr, file, err, red)
		fmt.Fprintf(a.stderr, "flow: %s is not valid; nothing was run. Fix the problems above (flow validate %s checks again).\n", file, file)
		o.problems = problemList(file, err, red)
		o.reason = fmt.Sprintf("%s is not valid; nothing was run: %s", file, o.problems[0])
		if n := len(o.problems); n > 1 {
			o.reason += fmt.Sprintf(" (and %d more problems)", n-1)
		}
		return exitCode(ExitInvalid)
	}
	if f.lock, err = effectiveLock(f.lock, p); err != nil {
		return err
	}
	hist, err := a.openHistory(file, p, f.state)
	if err != nil {
		return err
	}
	defer hist.close()
	mode := f.progress
	if a.quiet {
		mode = "none"
	}
	out, err := newProgress(mode, a.stdout, a.stderr, p, a.reg)
	if err != nil {
		return &exitError{code: ExitInvalid, msg: "--progress: " + err.Error()}
	}
	// From here on everything goes through out's writers, so that bars
	// never overwrite it; after out.close they write straight through.
	stderr := out.stderr
	hist.writeTo(stderr)
	files := outputs{report: f.report, events: f.events, html: f.html, metrics: f.metrics}
	var rec *events.Recorder
	if files.recording() {
		out.events, rec = withRecorder(out.events, time.Now())
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop := a.handleSignals(cancel, stderr)
	release, err := a.takeLock(ctx, file, f, stop, o)
	if err != nil {
		out.close()
		return err
	}
	o.release = release
	// What steps and worker processes write to stderr (a warning or a
	// worker's panic message, say) may quote an item built from a secret.
	runStderr := red.Writer(stderr)
	if hist == nil && (f.resume.resume || f.resume.resumeFailed) {
		out.close()
		return errResumeNeedsState
	}
	// Recorded before the cluster is set up: the cluster names the run
	// after its record, where a later --resume finds it.
	hist.start(file, p)
	rs, closeCluster, err := a.clusterRunners(p, f.resume.forCluster(f.cluster, p), a.clusterRun(hist, file, f.resume), runStderr)
	if err != nil {
		out.close()
		hist.finish(nil, ExitFailed, err)
		return err
	}
	defer closeCluster()
	rs, closeCache, err := a.cachedRunners(rs, hist, file, p, f.resume, f.cluster.nats, runStderr)
	if err != nil {
		out.close()
		hist.finish(nil, ExitFailed, err)
		return err
	}
	defer closeCache()

	rep, runErr := runEngine(ctx, p, engine.Options{
		Registry: a.reg,
		Stdin:    a.stdin,
		Stdout:   out.stdout,
		Stderr:   runStderr,
		Runners:  rs,
		Events:   out.events,
		// The command runs one pipeline per process; tests that call
		// Run in-process get the same, and GOMAXPROCS is put back after.
		OwnsProcess: true,
	})
	if f, ok := runStderr.(interface{ Flush() error }); ok {
		_ = f.Flush()
	}
	sig := stop()
	out.close()

	code := ExitFailed
	if rep != nil {
		code = rep.ExitCode
	}
	var ds conf.Diags
	if rep == nil && errors.As(runErr, &ds) {
		// Options that only fail when built (a missing input file, say).
		printDiags(stderr, file, runErr, red)
		code = ExitInvalid
		o.problems = problemList(file, runErr, red)
		o.reason = "the run could not start: " + o.problems[0]
	} else if runErr != nil && (sig == nil || !errors.Is(runErr, context.Canceled)) {
		// Building a source or a sink fails with its options in the
		// message, which may be made of secret variables.
		fmt.Fprintln(stderr, textsafe.Line(red.String("flow: "+runErr.Error())))
		if rep == nil {
			o.reason = red.String("the run could not start: " + runErr.Error())
		}
	}
	if rep != nil && code == ExitOK && runErr != nil {
		code = ExitFailed
	}
	if sig != nil {
		code = signalCode(sig)
		if rep != nil {
			rep.ExitCode = code
			reason := "stopped by " + signalName(sig)
			if rep.Reason != "" && rep.Reason != "interrupted" && rep.Status != "succeeded" {
				reason += "; " + rep.Reason // it was stopping for this already
			}
			rep.Status, rep.Reason = "interrupted", reason
		}
	}
	if rep == nil {
		if names := files.others(); names != "" {
			fmt.Fprintf(stderr, "flow: nothing written to %s: the run did not start\n", names)
		}
	} else if !files.write(stderr, red, p, rep, rec) && code == ExitOK {
		code = ExitFailed
	}
	hist.finish(rep, code, runErr)
	o.rep = rep
	// Quiet keeps a successful run silent; why a run failed is always said.
	if rep != nil && (!a.quiet || code != ExitOK) {
		fmt.Fprintln(stderr, summary(rep))
	}
	return exitCode(code)
}

// handleSignals cancels the run on the first SIGINT or SIGTERM and exits at
// once on the second, saying so on stderr. The returned function
// unsubscribes and tells which signal, if any, stopped the run.
func (a *app) handleSignals(cancel context.CancelFunc, stderr io.Writer) (stop func() os.Signal) {
	ch := make(chan os.Signal, 2)
	a.notify(ch, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	var (
		mu    sync.Mutex
		first os.Signal
	)
	go func() {
		select {
		case s := <-ch:
			mu.Lock()
			first = s
			mu.Unlock()
			fmt.Fprintf(stderr, "\nflow: %s: stopping: cancelling running work and writing the report (send it again to exit at once)\n", signalName(s))
			cancel()
		case <-done:
			return
		}
		select {
		case s := <-ch:
			fmt.Fprintf(stderr, "flow: second %s: exiting at once; the report was not written\n", signalName(s))
			a.exit(signalCode(s))
		case <-done:
		}
	}()
	return func() os.Signal {
		a.stopNotify(ch)
		close(done)
		mu.Lock()
		defer mu.Unlock()
		return first
	}
}

func signalCode(s os.Signal) int {
	if s == syscall.SIGTERM {
		return ExitSIGTERM
	}
	return ExitSIGINT
}

func signalName(s os.Signal) string {
	if s == syscall.SIGTERM {
		return "SIGTERM"
	}
	return "SIGINT"
}

// summary is the one line that closes a run on stderr: the outcome, the
// time, and each stage's counts (zero counts left out).
func summary(r *report.Report) string {
	var b strings.Builder
	name := r.Pipeline
	if name == "" {
		name = r.File
	}
	status := r.Status
	if status == "" {
		status = "finished"
	}
	fmt.Fprintf(&b, "flow: %s %s in %s", name, status, roundDuration(time.Duration(r.Duration)))
	if r.Reason != "" && r.Status != "succeeded" {
		fmt.Fprintf(&b, " (%s)", textsafe.Line(r.Reason))
	}
	for i, s := range r.Stages {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString(" | ")
		}
		b.WriteString(s.Name)
		parts := []string{}
		add := func(n int64, what string) {
			if n > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", n, what))
			}
		}
		if s.Role == string(steps.RoleSink) && r.Status != report.StatusSucceeded && keepsOldOnFailure(s.Kind) {
			// Written to a temporary file that the failed run removed.
			add(s.Succeeded, "not written")
		} else {
			add(s.Succeeded, "ok")
		}
		add(s.Cached, "cached") // of the ok: answered by the result cache
		add(s.Failed, "failed")
		add(s.Skipped, "skipped")
		add(s.Cancelled, "cancelled")
		add(s.Filtered, "filtered")
		add(s.TimedOut, "timed out")
		add(s.Retries, "retries")
		if len(parts) == 0 {
			parts = append(parts, "0 items")
		}
		b.WriteString(" " + strings.Join(parts, ", "))
		if w := byWorker(s.ByWorker); w != "" {
			b.WriteString(" (" + w + ")")
		}
	}
	return b.String()
}

// byWorker renders a stage's items per worker, busiest first, the first
// eight by name and the rest counted together.
func byWorker(m map[string]int64) string {
	if len(m) < 2 {
		return "" // one worker: nothing to compare
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		if m[names[i]] != m[names[j]] {
			return m[names[i]] > m[names[j]]
		}
		return names[i] < names[j]
	})
	var parts []string
	var rest, others int64
	for i, n := range names {
		if i < 8 {
			parts = append(parts, fmt.Sprintf("%s %d", textsafe.Line(n), m[n]))
			continue
		}
		rest += m[n]
		others++
	}
	if others > 0 {
		parts = append(parts, fmt.Sprintf("%d more workers %d", others, rest))
	}
	return strings.Join(parts, ", ")
}

// keepsOldOnFailure tells whether a sink kind's output is thrown away when
// the run does not succeed. By the steps.Sink contract a sink that writes a
// file leaves the old file in place then; print writes to stdout as it goes
// (partial results are still results). The report still counts those items
// as succeeded, as the engine does once Write returned; telling them apart
// there needs the engine to learn from the sink's Close that it discarded
// them.
func keepsOldOnFailure(kind string) bool { return kind != "print" }

func roundDuration(d time.Duration) string {
	switch {
	case d >= time.Minute:
		return d.Round(time.Second).String()
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(time.Millisecond).String()
	default:
		return d.Round(time.Microsecond).String()
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

package cli

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/internal/redact"
	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/report/events"
	"github.com/flowrun/flow/report/htmlreport"
	"github.com/flowrun/flow/report/metrics"
	"github.com/flowrun/flow/spec"
)

// outputs are the files a run writes besides its results: the JSON
// report, the events file, the HTML page and the metrics.
type outputs struct {
	report, events, html, metrics string
}

// names lists the files asked for.
func (o outputs) names() string {
	var n []string
	for _, s := range []string{o.report, o.events, o.html, o.metrics} {
		if s != "" {
			n = append(n, s)
		}
	}
	return strings.Join(n, ", ")
}

// others lists the files asked for besides the report, which runPipeline
// writes whatever happened.
func (o outputs) others() string {
	o.report = ""
	return o.names()
}

// recording tells whether the run must record events.
func (o outputs) recording() bool { return o.events != "" || o.html != "" }

// write writes every output asked for; each failure is said on stderr and
// makes the run fail, and the others are still written.
func (o outputs) write(stderr io.Writer, red *redact.Redactor, p *spec.Pipeline, rep *report.Report, rec *events.Recorder) (ok bool) {
	ok = true
	fail := func(err error) {
		fmt.Fprintln(stderr, red.String(fmt.Sprintf("flow: %v; check that the directory exists and is writable", err)))
		ok = false
	}
	rep.Version = buildVersion()
	if p != nil {
		sum := sha256.Sum256(p.Source)
		rep.FileSHA256 = hex.EncodeToString(sum[:])
	}
	var ev *events.Data
	if rec != nil {
		ev = rec.Data()
	}
	if o.events != "" {
		if err := ev.WriteFile(o.events); err != nil {
			fail(err)
		} else {
			rep.Events = relativeTo(o.report, o.events)
		}
	}
	// The report itself is written by runPipeline once the run is over,
	// whatever happened (this run's, or why nothing ran), with the fields
	// set here.
	if o.html != "" {
		if err := htmlreport.WriteFile(o.html, rep, ev); err != nil {
			fail(err)
		}
	}
	if o.metrics != "" {
		if err := metrics.WriteFile(o.metrics, rep); err != nil {
			fail(err)
		}
	}
	return ok
}

// relativeTo names target from the directory of the file from, so that a
// report and its events file can move together; an absolute path when
// target lies elsewhere.
func relativeTo(from, target string) string {
	abs, err := filepath.Abs(target)
	if err != nil {
		return target
	}
	if from == "" {
		return abs
	}
	dir, err := filepath.Abs(filepath.Dir(from))
	if err != nil {
		return abs
	}
	rel, err := filepath.Rel(dir, abs)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return abs
	}
	return rel
}

// fanOut hands every event to several sinks, in order.
type fanOut []engine.EventSink

func (f fanOut) StageStarted(stage string, workers int, total int64) {
	for _, s := range f {
		s.StageStarted(stage, workers, total)
	}
}

func (f fanOut) ItemDone(ev *engine.ItemEvent) {
	for _, s := range f {
		s.ItemDone(ev)
	}
}

func (f fanOut) StageDone(stage string) {
	for _, s := range f {
		s.StageDone(stage)
	}
}

// withRecorder adds a recorder to the run's event sinks.
func withRecorder(sink engine.EventSink, start time.Time) (engine.EventSink, *events.Recorder) {
	rec := events.New(start, events.DefaultLimits)
	if sink == nil {
		return rec, rec
	}
	return fanOut{sink, rec}, rec
}

type reportFlags struct {
	events, html, metrics string
}

func (a *app) reportCmd() *cobra.Command {
	var f reportFlags
	cmd := &cobra.Command{
		Use:   "report RUN.json",
		Short: "Render a run report as HTML or Prometheus metrics",
		Long: `Report renders the JSON report of a past run (flow run --report) as a
self-contained HTML page (--html) or as metrics in the Prometheus text format
(--metrics), as flow run --html and --metrics do at the end of a run.

The page's timeline, charts and item table come from the events file the run
wrote with --events FILE; the report names it, so it is found by itself when
it sits where it was written (or beside the report). --events overrides it.
Without an events file the page shows the counts and failures of the report
only. docs/report-format.md describes both files.`,
		Example: `  flow run nightly.yaml --report run.json --events run.events.jsonl
  flow report run.json --html run.html
  flow report run.json --metrics /var/lib/node_exporter/textfile/flow_nightly.prom`,
		Args: cobra.ExactArgs(1),
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			return []string{"json"}, cobra.ShellCompDirectiveFilterFileExt
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.renderReport(args[0], f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.html, "html", "", "write the HTML page to `FILE`")
	fl.StringVar(&f.events, "events", "", "read the run's events from `FILE` (default: the file the report names)")
	fl.StringVar(&f.metrics, "metrics", "", "write the run's figures in the Prometheus text format to `FILE`")
	return cmd
}

func (a *app) renderReport(path string, f reportFlags) error {
	if f.html == "" && f.metrics == "" {
		return &exitError{code: ExitInvalid, msg: "report: nothing to write: give --html FILE, --metrics FILE or both"}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return &exitError{code: ExitInvalid, msg: fmt.Sprintf("report: %v", err)}
	}
	rep := new(report.Report)
	if err := json.Unmarshal(b, rep); err != nil {
		return &exitError{code: ExitInvalid, msg: fmt.Sprintf("report: %s is not a run report (flow run --report writes one): %v", path, err)}
	}
	var ev *events.Data
	evPath := f.events
	if evPath == "" && rep.Events != "" {
		evPath = rep.Events
		if !filepath.IsAbs(evPath) {
			evPath = filepath.Join(filepath.Dir(path), evPath)
		}
		if _, err := os.Stat(evPath); errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(a.stderr, "flow: the events file %s named by %s is gone: the page has no timeline (give --events FILE if it moved)\n", evPath, path)
			evPath = ""
		}
	}
	if evPath != "" {
		if ev, err = events.ReadFile(evPath); err != nil {
			return &exitError{code: ExitInvalid, msg: fmt.Sprintf("report: events: %v", err)}
		}
	}
	if f.html != "" {
		if err := htmlreport.WriteFile(f.html, rep, ev); err != nil {
			return &exitError{code: ExitFailed, msg: err.Error()}
		}
	}
	if f.metrics != "" {
		if err := metrics.WriteFile(f.metrics, rep); err != nil {
			return &exitError{code: ExitFailed, msg: err.Error()}
		}
	}
	return nil
}

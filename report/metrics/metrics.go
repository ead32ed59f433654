// Package metrics writes a run's figures in the Prometheus text exposition
// format, for node_exporter's textfile collector: the usual way to watch
// jobs that cron starts (a gauge of the last run's status and time, which
// an alert compares with now).
package metrics

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/flowrun/flow/report"
)

var statuses = []report.Status{report.StatusSucceeded, report.StatusFailed, report.StatusTimedOut, report.StatusInterrupted}

var outcomes = []report.Outcome{report.Succeeded, report.Failed, report.Skipped, report.Cancelled, report.Filtered}

// Write writes the metrics of r. Every series carries the pipeline's name
// (its file's when it has none), so that several pipelines can share the
// collector's directory, each in a file of its own.
func Write(w io.Writer, r *report.Report) error {
	var b bytes.Buffer
	name := r.Pipeline
	if name == "" {
		name = filepath.Base(r.File)
	}
	p := `pipeline="` + escape(name) + `"`
	head := func(metric, typ, help string) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", metric, help, metric, typ)
	}
	head("flow_last_run_success", "gauge", "1 if the last run succeeded, 0 otherwise.")
	fmt.Fprintf(&b, "flow_last_run_success{%s} %d\n", p, boolInt(r.Status == report.StatusSucceeded))
	head("flow_last_run_status", "gauge", "1 for the status the last run ended with (succeeded, failed, timed_out, interrupted), 0 for the others.")
	for _, s := range statuses {
		fmt.Fprintf(&b, "flow_last_run_status{%s,status=%q} %d\n", p, s, boolInt(r.Status == s))
	}
	head("flow_last_run_exit_code", "gauge", "Exit code of the last run.")
	fmt.Fprintf(&b, "flow_last_run_exit_code{%s} %d\n", p, r.ExitCode)
	head("flow_last_run_start_timestamp_seconds", "gauge", "When the last run started, in seconds since the Unix epoch.")
	fmt.Fprintf(&b, "flow_last_run_start_timestamp_seconds{%s} %s\n", p, seconds(r.Start.UnixNano()))
	head("flow_last_run_end_timestamp_seconds", "gauge", "When the last run ended, in seconds since the Unix epoch.")
	fmt.Fprintf(&b, "flow_last_run_end_timestamp_seconds{%s} %s\n", p, seconds(r.End.UnixNano()))
	head("flow_last_run_duration_seconds", "gauge", "How long the last run took.")
	fmt.Fprintf(&b, "flow_last_run_duration_seconds{%s} %s\n", p, seconds(int64(r.Duration)))
	head("flow_last_run_items", "gauge", "Items of the last run by stage and outcome.")
	for _, s := range r.Stages {
		n := map[report.Outcome]int64{report.Succeeded: s.Succeeded, report.Failed: s.Failed,
			report.Skipped: s.Skipped, report.Cancelled: s.Cancelled, report.Filtered: s.Filtered}
		for _, o := range outcomes {
			fmt.Fprintf(&b, "flow_last_run_items{%s,stage=\"%s\",outcome=%q} %d\n", p, escape(s.Name), o, n[o])
		}
	}
	head("flow_last_run_retries", "gauge", "Retries of the last run by stage.")
	for _, s := range r.Stages {
		fmt.Fprintf(&b, "flow_last_run_retries{%s,stage=\"%s\"} %d\n", p, escape(s.Name), s.Retries)
	}
	head("flow_last_run_stage_duration_seconds", "gauge", "How long each stage of the last run took.")
	for _, s := range r.Stages {
		fmt.Fprintf(&b, "flow_last_run_stage_duration_seconds{%s,stage=\"%s\"} %s\n", p, escape(s.Name), seconds(int64(s.Duration)))
	}
	_, err := w.Write(b.Bytes())
	return err
}

// WriteFile writes the metrics to path atomically: the collector reads the
// directory at any moment and must never see half a file. The temporary
// file's name starts with a dot and does not end in .prom, so that the
// collector skips it.
func WriteFile(path string, r *report.Report) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".flow-metrics-*")
	if err != nil {
		return fmt.Errorf("writing metrics: %w", err)
	}
	defer os.Remove(f.Name())
	if err := Write(f, r); err != nil {
		f.Close()
		return fmt.Errorf("writing metrics %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing metrics %s: %w", path, err)
	}
	// node_exporter often runs as another user than the job.
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return fmt.Errorf("writing metrics %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("writing metrics %s: %w", path, err)
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func seconds(ns int64) string {
	return strconv.FormatFloat(float64(ns)/1e9, 'f', -1, 64)
}

// escape escapes a label value as the text format wants.
func escape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

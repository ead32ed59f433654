// Package report is the run report: what happened to every item of every
// stage. It is written as JSON by `flow run --report`, and is the seam for
// later renderings (an HTML timeline) and for resuming runs.
package report

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/flowrun/flow/steps"
)

// Report is the outcome of one run.
type Report struct {
	Pipeline string    `json:"pipeline"`
	File     string    `json:"file"`
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`
	Duration Duration  `json:"duration"`
	ExitCode int       `json:"exit_code"`
	Status   Status    `json:"status"`

	// Version is flow's version; FileSHA256 the hash of the pipeline text
	// that ran, to tell two runs of edited files apart. Events names the
	// events file written beside the report (--events), relative to the
	// report's directory when it is inside it: `flow report` reads it for
	// the timeline (docs/report-format.md).
	Version    string `json:"flow_version,omitempty"`
	FileSHA256 string `json:"file_sha256,omitempty"`
	Events     string `json:"events,omitempty"`

	Reason string `json:"reason,omitempty"` // why the run did not succeed
	// Problems lists, for a run refused before it started (status invalid),
	// every problem found, each as FILE:LINE:COL: message.
	Problems []string  `json:"problems,omitempty"`
	Stages   []*Stage  `json:"stages"`
	Failures []Failure `json:"failures"`
	// FailuresOmitted counts the failed items left out of Failures, which
	// keeps the first 1000 so that memory stays flat.
	FailuresOmitted int64 `json:"failures_omitted,omitempty"`
}

// Stage is the accounting of one stage. Invariant, whatever happens:
// In == Succeeded + Failed + Skipped + Cancelled + Filtered.
// TimedOut counts the failed or cancelled items whose cause was a timeout or
// deadline; it is a subset, not a separate outcome.
type Stage struct {
	Name      string `json:"name"`
	Kind      string `json:"kind"` // the step, source or sink kind
	Role      string `json:"role"`
	Mode      string `json:"mode"`
	Workers   int    `json:"workers"`
	In        int64  `json:"in"`
	Succeeded int64  `json:"succeeded"`
	Failed    int64  `json:"failed"`
	Skipped   int64  `json:"skipped"` // failed under on_error: skip (recorded, dropped)
	Cancelled int64  `json:"cancelled"`
	Filtered  int64  `json:"filtered"`
	TimedOut  int64  `json:"timed_out"`
	Retries   int64  `json:"retries"`
	// Cached counts the succeeded items whose result came from the result
	// cache instead of a run (a subset of Succeeded).
	Cached int64 `json:"cached,omitempty"`
	// ByWorker counts, for stages run elsewhere (mode: process, cluster),
	// the items that ran by the worker of their last attempt ("pid 4242",
	// a flow worker's name).
	ByWorker map[string]int64 `json:"by_worker,omitempty"`
	Out      int64            `json:"out"` // items passed downstream

	LatencyP50 Duration `json:"latency_p50"`
	LatencyP95 Duration `json:"latency_p95"`
	LatencyMax Duration `json:"latency_max"`
	PerSecond  float64  `json:"items_per_second"`
	Duration   Duration `json:"duration"`
}

// Balanced reports whether the stage accounts for every item it received.
func (s *Stage) Balanced() bool {
	return s.In == s.Succeeded+s.Failed+s.Skipped+s.Cancelled+s.Filtered
}

// Failure is one item that failed (or was skipped or kept with its error).
type Failure struct {
	Stage    string  `json:"stage"`
	Index    int64   `json:"index"`
	Item     any     `json:"item"`
	Error    string  `json:"error"`
	Class    string  `json:"class,omitempty"`
	Attempts int     `json:"attempts"`
	Outcome  Outcome `json:"outcome"` // failed, skipped, kept, timed_out
}

// Status is how a run ended.
type Status string

const (
	StatusSucceeded   Status = "succeeded"
	StatusFailed      Status = "failed"      // items failed past the policies, or setup failed
	StatusTimedOut    Status = "timed_out"   // the pipeline timeout or a stage deadline passed
	StatusInterrupted Status = "interrupted" // a signal, or the caller's context
	// The runs that never started, which still leave a report (flow run
	// --report), so that it never shows an earlier run's status.
	StatusSkipped Status = "skipped" // another run held the lock (exit 75)
	StatusInvalid Status = "invalid" // the file or the command line (exit 2)
)

// Outcome is what became of one item in one stage. The first five are the
// accounting's (Stage.Balanced); Kept and TimedOut refine a failure in the
// report's failure list.
type Outcome string

const (
	Succeeded Outcome = "succeeded"
	Failed    Outcome = "failed"
	Skipped   Outcome = "skipped"
	Cancelled Outcome = "cancelled"
	Filtered  Outcome = "filtered"
	Kept      Outcome = "kept"
	TimedOut  Outcome = "timed_out"
)

// marshal encodes r. An item that holds NaN or an infinity (a division that
// overflowed, a value read from data) must not stop the report from being
// written: such numbers are written as the strings "NaN", "Infinity" and
// "-Infinity", as sinks write them (docs/naming.md).
func (r *Report) marshal() ([]byte, error) {
	b, err := json.MarshalIndent(r, "", "  ")
	var uv *json.UnsupportedValueError
	if !errors.As(err, &uv) {
		return b, err
	}
	c := *r
	c.Failures = make([]Failure, len(r.Failures))
	for i, f := range r.Failures {
		f.Item = steps.Finite(f.Item)
		c.Failures[i] = f
	}
	c.Stages = make([]*Stage, len(r.Stages))
	for i, s := range r.Stages {
		s2 := *s
		if math.IsNaN(s2.PerSecond) || math.IsInf(s2.PerSecond, 0) {
			s2.PerSecond = 0
		}
		c.Stages[i] = &s2
	}
	return json.MarshalIndent(&c, "", "  ")
}

// Duration marshals as seconds (float) for tools, and reads back the same.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(fmt.Sprintf("%.6f", time.Duration(d).Seconds())), nil
}

func (d *Duration) UnmarshalJSON(b []byte) error {
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	*d = Duration(f * float64(time.Second))
	return nil
}

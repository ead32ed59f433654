// Package events records what a run's items did, per stage and per worker,
// in memory bounded whatever the number of items, and reads and writes it as
// the events file (JSON Lines, docs/report-format.md). The HTML report is
// drawn from it.
//
// It is a summary, not a log: times are binned, workers beyond what a screen
// shows share a lane, and only a bounded sample of items is kept (failures
// first, every failure up to a cap). Whatever is left out is counted.
package events

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// Format names the version of the events file; a reader refuses others.
const Format = "flow-events/1"

// Data is everything recorded about one run.
type Data struct {
	Format string    `json:"format"`
	Start  time.Time `json:"start"` // time zero of every offset (microseconds)
	End    time.Time `json:"end"`
	Stages []*Stage  `json:"-"`
	Items  []*Item   `json:"-"`
	Limits Limits    `json:"limits"`
}

// Limits are the caps the recorder ran with, so a reader can say what
// "aggregated" means.
type Limits struct {
	Bins          int `json:"bins"`            // time bins per series
	LanesPerStage int `json:"lanes_per_stage"` // worker lanes before "other workers"
	ExactAttempts int `json:"exact_attempts"`  // attempts kept one by one per stage
	ExactTotal    int `json:"exact_total"`     // and in the whole run
	Failures      int `json:"failures"`        // failed items kept, whole run
	Sample        int `json:"sample"`          // other items kept per stage
}

// Stage is one stage's figures.
type Stage struct {
	Name    string `json:"name"`
	Workers int    `json:"workers"`
	Total   int64  `json:"total"` // items expected when the stage started, -1 unknown
	// Items by outcome (succeeded, failed, skipped, cancelled, filtered).
	Outcomes map[string]int64 `json:"outcomes"`
	Attempts int64            `json:"attempts"`
	Retries  int64            `json:"retries"`     // attempts beyond each item's first
	Redeliv  int64            `json:"redelivered"` // deliveries again after a worker died
	WaitUS   int64            `json:"wait_us"`     // total time items waited on limits
	Waited   int64            `json:"waited"`      // items that waited at all
	// Latency of the items that ran, first attempt's start to last
	// attempt's end, in microseconds.
	Latency Percentiles `json:"latency_us"`
	FirstUS int64       `json:"first_us"` // first attempt start (or first item), -1 none
	LastUS  int64       `json:"last_us"`
	// Series over time: bin i covers [i*BinUS, (i+1)*BinUS).
	BinUS  int64         `json:"bin_us"`
	Series Series        `json:"series"`
	Errors []*ErrorClass `json:"errors"`
	// ErrorsOther counts failed items whose class was past the cap of
	// classes kept.
	ErrorsOther int64   `json:"errors_other,omitempty"`
	Lanes       []*Lane `json:"lanes"`
	// ExactOmitted counts attempts not kept one by one (past
	// Limits.ExactAttempts): the lanes' bins still count them.
	ExactOmitted     int64 `json:"exact_omitted"`
	FailuresOmitted  int64 `json:"failures_omitted"`
	SampleCandidates int64 `json:"sample_candidates"` // items the sample was drawn from
}

// Percentiles of a latency distribution, in microseconds.
type Percentiles struct {
	Count int64 `json:"count"`
	P50   int64 `json:"p50"`
	P90   int64 `json:"p90"`
	P99   int64 `json:"p99"`
	Max   int64 `json:"max"`
	Mean  int64 `json:"mean"`
}

// Series are a stage's figures per time bin.
type Series struct {
	// Done counts items whose outcome became final in the bin, by outcome.
	Done map[string][]int64 `json:"done"`
	// Busy is the attempt time overlapping the bin (µs): Busy/BinUS is the
	// mean number of items in flight.
	Busy []int64 `json:"busy_us"`
	// Wait is the time items spent waiting on limits in the bin (µs),
	// placed just before their first attempt.
	Wait []int64 `json:"wait_us"`
}

// ErrorClass groups the failed items of a stage by error class.
type ErrorClass struct {
	Class    string     `json:"class"`
	Count    int64      `json:"count"`
	Examples []*Example `json:"examples"`
}

// Example is one item of an error class.
type Example struct {
	Index int64  `json:"index"`
	Item  string `json:"item"`
	Error string `json:"error"`
}

// Lane is one worker of a stage (or, for Other, every worker past the cap).
type Lane struct {
	Worker string `json:"worker"`
	// Other lanes merge Workers workers.
	Other    bool  `json:"other,omitempty"`
	Workers  int   `json:"workers,omitempty"`
	Attempts int64 `json:"attempts"`
	Failed   int64 `json:"failed"` // attempts that did not succeed
	BusyUS   int64 `json:"busy_us"`
	// Per bin of the stage: attempt time (µs), attempts started, and
	// attempts started that did not succeed.
	Busy   []int64 `json:"busy_us_bins"`
	Starts []int64 `json:"starts"`
	Fails  []int64 `json:"fails"`
	// Exact attempts, each [start µs, duration µs, kind, item index]; kind
	// is one of the Kind constants.
	Exact [][4]int64 `json:"exact"`
}

// Kinds of an attempt, in Lane.Exact.
const (
	KindOK          = 0 // succeeded
	KindRetried     = 1 // failed, and the item was tried again
	KindFailed      = 2 // failed, and the item with it
	KindCancelled   = 3 // stopped by the run stopping
	KindRedelivered = 4 // a worker died with it (not the item's fault)
)

// Item is one item kept for the table.
type Item struct {
	Stage   string `json:"stage"`
	Index   int64  `json:"index"`
	Outcome string `json:"outcome"`
	Item    string `json:"item"` // JSON, shortened
	Error   string `json:"error,omitempty"`
	Class   string `json:"class,omitempty"`
	WaitUS  int64  `json:"wait_us,omitempty"`
	// Why it was kept: "failure", "slow" (among the slowest), "sample".
	Kept     string        `json:"kept"`
	Attempts []ItemAttempt `json:"attempts,omitempty"`
	// AttemptsOmitted counts attempts past the first MaxItemAttempts.
	AttemptsOmitted int `json:"attempts_omitted,omitempty"`
}

// ItemAttempt is one attempt of a kept item.
type ItemAttempt struct {
	Worker      string `json:"worker"`
	StartUS     int64  `json:"start_us"`
	DurUS       int64  `json:"dur_us"`
	Class       string `json:"class,omitempty"`
	Redelivered int    `json:"redelivered,omitempty"`
}

// Write writes d as JSON Lines: a header, one line per stage, one per item.
func (d *Data) Write(w io.Writer) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	if err := enc.Encode(struct {
		Type string `json:"type"`
		*Data
	}{"header", d}); err != nil {
		return err
	}
	for _, s := range d.Stages {
		if err := enc.Encode(struct {
			Type string `json:"type"`
			*Stage
		}{"stage", s}); err != nil {
			return err
		}
	}
	for _, it := range d.Items {
		if err := enc.Encode(struct {
			Type string `json:"type"`
			*Item
		}{"item", it}); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// WriteFile writes d to path atomically (temporary file, then rename).
func (d *Data) WriteFile(path string) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".flow-events-*")
	if err != nil {
		return fmt.Errorf("writing events: %w", err)
	}
	defer os.Remove(f.Name())
	if err := d.Write(f); err != nil {
		f.Close()
		return fmt.Errorf("writing events %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing events %s: %w", path, err)
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return fmt.Errorf("writing events %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("writing events %s: %w", path, err)
	}
	return nil
}

// Read reads an events file written by Write. Lines of unknown types are
// skipped, so that later versions can add some.
func Read(r io.Reader) (*Data, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 256<<20)
	var d *Data
	n := 0
	for sc.Scan() {
		n++
		b := sc.Bytes()
		if len(b) == 0 {
			continue
		}
		var t struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(b, &t); err != nil {
			return nil, fmt.Errorf("line %d: not JSON: %v", n, err)
		}
		if d == nil && t.Type != "header" {
			return nil, fmt.Errorf("line %d: the events file must start with a header line, got %q", n, t.Type)
		}
		switch t.Type {
		case "header":
			d = new(Data)
			if err := json.Unmarshal(b, d); err != nil {
				return nil, fmt.Errorf("line %d: %v", n, err)
			}
			if d.Format != Format {
				return nil, fmt.Errorf("line %d: format %q, this flow reads %q", n, d.Format, Format)
			}
		case "stage":
			s := new(Stage)
			if err := json.Unmarshal(b, s); err != nil {
				return nil, fmt.Errorf("line %d: %v", n, err)
			}
			d.Stages = append(d.Stages, s)
		case "item":
			it := new(Item)
			if err := json.Unmarshal(b, it); err != nil {
				return nil, fmt.Errorf("line %d: %v", n, err)
			}
			d.Items = append(d.Items, it)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if d == nil {
		return nil, fmt.Errorf("empty events file")
	}
	return d, nil
}

// ReadFile reads the events file at path.
func ReadFile(path string) (*Data, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	d, err := Read(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

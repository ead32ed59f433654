package events

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/steps"
)

var t0 = time.Date(2026, 12, 3, 22, 0, 0, 0, time.UTC)

// feed sends n items through stage "work": item i runs on worker i%workers
// for 1ms + i µs, every 7th item fails once and is retried, every 100th
// fails for good.
func feed(r *Recorder, n, workers int) {
	r.StageStarted("work", workers, int64(n))
	for i := 0; i < n; i++ {
		start := t0.Add(time.Duration(i) * 50 * time.Microsecond)
		w := fmt.Sprintf("thread %d", i%workers)
		ev := &engine.ItemEvent{Stage: "work", Index: int64(i), Item: i, Outcome: report.Succeeded, Wait: time.Microsecond}
		if i%7 == 0 {
			ev.Attempts = append(ev.Attempts, engine.Attempt{Worker: w, Start: start, End: start.Add(time.Millisecond), Class: "http"})
			start = start.Add(2 * time.Millisecond)
		}
		end := start.Add(time.Millisecond + time.Duration(i)*time.Microsecond/100)
		last := engine.Attempt{Worker: w, Start: start, End: end}
		if i%100 == 0 {
			ev.Outcome, ev.Err = report.Skipped, steps.Errorf("http", "item %d: 503", i)
			last.Class = "http"
		}
		ev.Attempts = append(ev.Attempts, last)
		r.ItemDone(ev)
	}
	r.StageDone("work")
}

func sum(b []int64) (n int64) {
	for _, x := range b {
		n += x
	}
	return n
}

// Whatever the number of items, what is kept is bounded, and what is left
// out is counted.
func TestBoundedAndCounted(t *testing.T) {
	lim := Limits{Bins: 64, LanesPerStage: 8, ExactAttempts: 1000, ExactTotal: 5000, Failures: 50, Sample: 20}
	r := New(t0, lim)
	r.now = func() time.Time { return t0.Add(time.Hour) }
	const n, workers = 200000, 40
	feed(r, n, workers)
	d := r.Data()
	s := d.Stages[0]

	if s.Outcomes["succeeded"]+s.Outcomes["skipped"] != n || s.Outcomes["skipped"] != n/100 {
		t.Errorf("outcomes %v", s.Outcomes)
	}
	retried := int64((n + 6) / 7)
	if s.Attempts != n+retried || s.Retries != retried {
		t.Errorf("%d attempts, %d retries; want %d, %d", s.Attempts, s.Retries, n+retried, retried)
	}
	if got := sum(s.Series.Done["succeeded"]) + sum(s.Series.Done["skipped"]); got != n {
		t.Errorf("the series count %d items, want %d", got, n)
	}
	if len(s.Series.Busy) > lim.Bins || len(s.Series.Done["succeeded"]) > lim.Bins {
		t.Errorf("%d bins, want at most %d", len(s.Series.Busy), lim.Bins)
	}
	if len(s.Lanes) != lim.LanesPerStage+1 || !s.Lanes[len(s.Lanes)-1].Other || s.Lanes[len(s.Lanes)-1].Workers != workers-lim.LanesPerStage {
		t.Fatalf("%d lanes, last %+v; want %d and one for the other %d workers", len(s.Lanes), s.Lanes[len(s.Lanes)-1].Worker, lim.LanesPerStage+1, workers-lim.LanesPerStage)
	}
	if s.Lanes[0].Worker != "thread 0" || s.Lanes[2].Worker != "thread 2" {
		t.Errorf("lanes out of order: %s, %s", s.Lanes[0].Worker, s.Lanes[2].Worker)
	}
	var attempts, exact, starts int64
	for _, l := range s.Lanes {
		attempts += l.Attempts
		exact += int64(len(l.Exact))
		starts += sum(l.Starts)
	}
	if attempts != s.Attempts || starts != s.Attempts {
		t.Errorf("lanes count %d attempts (%d in bins), the stage %d", attempts, starts, s.Attempts)
	}
	if exact != int64(lim.ExactAttempts) || exact+s.ExactOmitted != s.Attempts {
		t.Errorf("%d exact + %d omitted, want %d kept of %d", exact, s.ExactOmitted, lim.ExactAttempts, s.Attempts)
	}
	var failures, slow, sample int
	for _, it := range d.Items {
		switch it.Kept {
		case "failure":
			failures++
		case "slow":
			slow++
		case "sample":
			sample++
		}
	}
	if failures != lim.Failures || int64(failures)+s.FailuresOmitted != s.Outcomes["skipped"] {
		t.Errorf("%d failures kept + %d omitted, want %d kept of %d", failures, s.FailuresOmitted, lim.Failures, s.Outcomes["skipped"])
	}
	if d.Items[0].Kept != "failure" || d.Items[0].Index != 0 {
		t.Errorf("first item %+v, want the first failure", d.Items[0])
	}
	if slow != slowest || sample != lim.Sample {
		t.Errorf("%d slow, %d sampled; want %d, %d", slow, sample, slowest, lim.Sample)
	}
	if len(s.Errors) != 1 || s.Errors[0].Class != "http" || s.Errors[0].Count != int64(n/100) || len(s.Errors[0].Examples) != examplesPerErr {
		t.Errorf("errors %+v", s.Errors)
	}
	if s.Waited != n || s.WaitUS != n {
		t.Errorf("waited %d items %dµs, want %d", s.Waited, s.WaitUS, n)
	}
	// The slowest are the last items (each takes i/100 µs more).
	for _, it := range d.Items {
		if it.Kept == "slow" && it.Index < n-200 {
			t.Errorf("item %d among the slowest", it.Index)
		}
	}
}

// The memory held does not grow with the number of items.
func TestMemoryFlat(t *testing.T) {
	// Every failure is kept up to the cap, so past the cap.
	lim := DefaultLimits
	lim.Failures = 100
	size := func(n int) int {
		r := New(t0, lim)
		feed(r, n, 8)
		var b bytes.Buffer
		if err := r.Data().Write(&b); err != nil {
			t.Fatal(err)
		}
		return b.Len()
	}
	small, large := size(100000), size(400000)
	if large > small*3/2 {
		t.Errorf("events file of %d bytes for 100,000 items, %d for 400,000: want it bounded", small, large)
	}
	t.Logf("events file: %d KB for 100,000 items, %d KB for 400,000", small/1024, large/1024)
}

func TestPercentiles(t *testing.T) {
	r := New(t0, DefaultLimits)
	for i := 1; i <= 1000; i++ {
		a := engine.Attempt{Worker: "thread 0", Start: t0, End: t0.Add(time.Duration(i) * time.Millisecond)}
		r.ItemDone(&engine.ItemEvent{Stage: "s", Index: int64(i), Outcome: report.Succeeded, Attempts: []engine.Attempt{a}})
	}
	p := r.Data().Stages[0].Latency
	near := func(name string, got, want int64) {
		if float64(got) < float64(want)*0.87 || float64(got) > float64(want)*1.13 {
			t.Errorf("%s = %dµs, want about %dµs", name, got, want)
		}
	}
	near("p50", p.P50, 500000)
	near("p90", p.P90, 900000)
	near("p99", p.P99, 990000)
	if p.Max != 1000000 || p.Count != 1000 {
		t.Errorf("max %d, count %d", p.Max, p.Count)
	}
}

func TestWriteRead(t *testing.T) {
	r := New(t0, DefaultLimits)
	feed(r, 3000, 4)
	d := r.Data()
	var b bytes.Buffer
	if err := d.Write(&b); err != nil {
		t.Fatal(err)
	}
	got, err := Read(&b)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Start.Equal(d.Start) || !reflect.DeepEqual(got.Stages, d.Stages) || !reflect.DeepEqual(got.Items, d.Items) || got.Limits != d.Limits {
		t.Errorf("read back differs")
	}
	if _, err := Read(bytes.NewReader([]byte(`{"type":"header","format":"flow-events/9"}` + "\n"))); err == nil {
		t.Error("read a format it does not know")
	}
	if _, err := Read(bytes.NewReader([]byte(`{"type":"stage"}` + "\n"))); err == nil {
		t.Error("read a file without a header")
	}
}

// Stages report from their own goroutines at once.
func TestConcurrentStages(t *testing.T) {
	r := New(t0, DefaultLimits)
	var wg sync.WaitGroup
	for s := 0; s < 4; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("s%d", s)
			for i := 0; i < 2000; i++ {
				a := engine.Attempt{Worker: "thread 0", Start: time.Now(), End: time.Now()}
				r.ItemDone(&engine.ItemEvent{Stage: name, Index: int64(i), Outcome: report.Failed, Err: errors.New("x"), Attempts: []engine.Attempt{a}})
				if i%500 == 0 {
					r.Data()
				}
			}
		}()
	}
	wg.Wait()
	d := r.Data()
	var failures int64
	for _, s := range d.Stages {
		failures += s.Outcomes["failed"]
	}
	if failures != 8000 || len(d.Items) != DefaultLimits.Failures {
		t.Errorf("%d failures, %d kept; want 8000, %d", failures, len(d.Items), DefaultLimits.Failures)
	}
}

func BenchmarkItemDone(b *testing.B) {
	r := New(t0, DefaultLimits)
	r.StageStarted("work", 8, -1)
	ev := &engine.ItemEvent{Stage: "work", Item: 1, Outcome: report.Succeeded, Attempts: make([]engine.Attempt, 1)}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		start := t0.Add(time.Duration(i) * time.Microsecond)
		ev.Index = int64(i)
		ev.Attempts[0] = engine.Attempt{Worker: "thread 1", Start: start, End: start.Add(time.Microsecond)}
		r.ItemDone(ev)
	}
}

// Many stages share one budget of exact attempts.
func TestExactAttemptsRunBudget(t *testing.T) {
	lim := DefaultLimits
	lim.ExactAttempts, lim.ExactTotal = 100, 250
	r := New(t0, lim)
	for s := 0; s < 4; s++ {
		for i := 0; i < 200; i++ {
			a := engine.Attempt{Worker: "thread 0", Start: t0, End: t0.Add(time.Millisecond)}
			r.ItemDone(&engine.ItemEvent{Stage: fmt.Sprintf("s%d", s), Index: int64(i), Outcome: report.Succeeded, Attempts: []engine.Attempt{a}})
		}
	}
	var kept, omitted int64
	for _, s := range r.Data().Stages {
		for _, l := range s.Lanes {
			kept += int64(len(l.Exact))
		}
		omitted += s.ExactOmitted
	}
	if kept != 250 || kept+omitted != 800 {
		t.Errorf("%d kept, %d omitted; want 250 of 800", kept, omitted)
	}
}

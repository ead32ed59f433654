//go:build linux || darwin || freebsd

package analyzelogs

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestPreferMapping(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		read, mapped []time.Duration
		want         bool
	}{
		{[]time.Duration{10 * ms, 9 * ms}, []time.Duration{5 * ms, 7 * ms}, true},
		// Within a fifth: noise, reading stays.
		{[]time.Duration{10 * ms}, []time.Duration{9 * ms}, false},
		// The issue-19 VM: mapping cost 2.5 times reading.
		{[]time.Duration{4 * ms}, []time.Duration{10 * ms}, false},
		{nil, []time.Duration{ms}, false},
	} {
		if got := preferMapping(tc.read, tc.mapped); got != tc.want {
			t.Errorf("preferMapping(%v, %v) = %v, want %v", tc.read, tc.mapped, got, tc.want)
		}
	}
}

// A clear loss of mapping ends the measurement; anything closer, or a win,
// takes every round.
func TestSettled(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		read, mapped []time.Duration
		want         bool
	}{
		{[]time.Duration{4 * ms}, []time.Duration{10 * ms}, true}, // the issue-19 VM
		{[]time.Duration{4 * ms}, []time.Duration{8 * ms}, true},
		{[]time.Duration{4 * ms}, []time.Duration{7 * ms}, false},
		{[]time.Duration{10 * ms}, []time.Duration{5 * ms}, false},
		// The best of each round counts: 7 against 4.
		{[]time.Duration{10 * ms, 4 * ms}, []time.Duration{7 * ms, 12 * ms}, false},
	} {
		if got := settled(tc.read, tc.mapped); got != tc.want {
			t.Errorf("settled(%v, %v) = %v, want %v", tc.read, tc.mapped, got, tc.want)
		}
	}
}

// The choice is measured once per process, on the first large file, and
// then applied to every large file: mapped when the measurement favours it.
func TestChooseMappingMeasuresOnce(t *testing.T) {
	saved := mapping.measure
	defer func() {
		mapping.measure = saved
		mapping.decided.Store(false)
		mapping.mmap.Store(false)
	}()
	for _, mapWins := range []bool{true, false} {
		mapping.decided.Store(false)
		calls := 0
		mapping.measure = func(int) (read, mapped []time.Duration, ok bool) {
			calls++
			if mapWins {
				return []time.Duration{10}, []time.Duration{2}, true
			}
			return []time.Duration{2}, []time.Duration{10}, true
		}
		data := strings.Repeat("2024-05-01 INFO fine\nERROR x\n", calibrateMin/28+1)
		p := tempLog(t, data)
		s := mustScanner(t, defaultRules, 0, 200)
		for range 3 {
			f := openTemp(t, p)
			c, err := s.scanOSFile(context.Background(), f)
			if err != nil || c.Counts[0] != int64(calibrateMin/28+1) {
				t.Fatalf("got %+v, %v", c, err)
			}
		}
		if calls != 1 || mapping.mmap.Load() != mapWins {
			t.Errorf("mapping wins %v: %d measurements, decided mmap=%v", mapWins, calls, mapping.mmap.Load())
		}
	}
}

// The real measurement runs on a real file and returns both timings.
func TestMeasureReading(t *testing.T) {
	data := strings.Repeat("2024-05-01 INFO fine\n", calibrateSpan/21+10)
	f := openTemp(t, tempLog(t, data))
	read, mapped, ok := measureReading(f.fd)
	if !ok || len(read) == 0 || len(read) != len(mapped) || len(read) > calibrateRuns ||
		len(read) < calibrateRuns && !settled(read, mapped) {
		t.Fatalf("ok %v, read %v, mapped %v", ok, read, mapped)
	}
	// Too short a file cannot be measured: reading stays.
	g := openTemp(t, tempLog(t, "short\n"))
	if _, _, ok := measureReading(g.fd); ok {
		t.Error("a short file was measured")
	}
}

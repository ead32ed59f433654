package main

import (
	"bytes"
	"context"
	"image/jpeg"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		in   []time.Duration
		want time.Duration
	}{
		{nil, 0},
		{[]time.Duration{3 * ms}, 3 * ms},
		{[]time.Duration{9 * ms, 1 * ms, 5 * ms}, 5 * ms},
		// Two runs report the slower, not a flattering mean.
		{[]time.Duration{2 * ms, 8 * ms}, 8 * ms},
	} {
		if got := medianDur(tc.in); got != tc.want {
			t.Errorf("medianDur(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	in := []time.Duration{3, 1, 2}
	medianDur(in)
	if in[0] != 3 {
		t.Errorf("medianDur sorted its argument in place: %v", in)
	}
}

func TestRatePerUnit(t *testing.T) {
	// A peer run on a fifth of the items at the same speed per item is as
	// fast as flow: the ratio compares rates, not wall times.
	flow := &contender{units: 1000, samples: []sample{{wall: time.Second}}}
	peer := &contender{units: 200, samples: []sample{{wall: 200 * time.Millisecond}}}
	if r := flow.rate() / peer.rate(); math.Abs(r-1) > 1e-9 {
		t.Errorf("ratio = %v, want 1", r)
	}
	borrowed := &contender{borrow: peer}
	if borrowed.rate() != peer.rate() || borrowed.medianWall() != peer.medianWall() {
		t.Errorf("a borrowing contender reports %v, its source %v", borrowed.rate(), peer.rate())
	}
	if !math.IsNaN((&contender{units: 5}).rate()) {
		t.Error("a contender without samples has a rate")
	}
}

func TestSumInts(t *testing.T) {
	p := filepath.Join(t.TempDir(), "out")
	os.WriteFile(p, []byte("E 3\nW 10\nE 4\n"), 0o644)
	if got, err := sumInts(p, "E "); err != nil || got != 7 {
		t.Errorf("sumInts E = %d, %v; want 7", got, err)
	}
	os.WriteFile(p, []byte("3\n4\n"), 0o644)
	if got, err := sumInts(p, ""); err != nil || got != 7 {
		t.Errorf("sumInts = %d, %v; want 7", got, err)
	}
	os.WriteFile(p, []byte("3\ngrep: x: No such file\n"), 0o644)
	if _, err := sumInts(p, ""); err == nil {
		t.Error("a line that is not a count was accepted")
	}
}

func TestCountSum(t *testing.T) {
	p := filepath.Join(t.TempDir(), "out")
	os.WriteFile(p, []byte("2\n4\n6\n"), 0o644)
	if n, sum, err := countSum(p); err != nil || n != 3 || sum != 12 {
		t.Errorf("countSum = %d, %d, %v; want 3, 12", n, sum, err)
	}
	os.WriteFile(p, []byte("2\nawk: syntax error\n"), 0o644)
	if _, _, err := countSum(p); err == nil {
		t.Error("a line that is not an integer was accepted")
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 10_000_000: "10,000,000", 123456: "123,456"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestLastJSON(t *testing.T) {
	m, err := lastJSON("Item 3 failed: boom\n{\"ok\": 5, \"failed\": 1}\n")
	if err != nil || m["ok"] != 5.0 {
		t.Errorf("lastJSON = %v, %v", m, err)
	}
	if _, err := lastJSON("Traceback (most recent call last):\n  ...\n"); err == nil {
		t.Error("a traceback was read as a summary")
	}
}

func TestGenLogs(t *testing.T) {
	dir := t.TempDir()
	if err := genLogs(dir, 2, 64<<10, 2); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(filepath.Join(dir, "app-000.log"))
	b, _ := os.ReadFile(filepath.Join(dir, "app-001.log"))
	if len(a) < 64<<10 || len(a) > 65<<10 {
		t.Errorf("file of %d bytes, want about 64 KiB", len(a))
	}
	if bytes.Equal(a, b) {
		t.Error("two files have the same content")
	}
	lines, errs, err := warmAndCount(dir)
	if err != nil {
		t.Fatal(err)
	}
	// About 2% of lines are errors, plus WARN lines quoting one.
	if frac := float64(errs) / float64(lines); frac < 0.01 || frac > 0.05 {
		t.Errorf("%d ERROR lines of %d (%.3f), want about 2-3%%", errs, lines, frac)
	}
	if !bytes.Contains(a, []byte(" WARN  ")) || !bytes.Contains(a, []byte("upstream ERROR")) {
		t.Error("no WARN lines, or none quoting an ERROR")
	}
	// Same seed, same bytes: the cache key can trust the parameters.
	dir2 := t.TempDir()
	genLogs(dir2, 1, 64<<10, 1)
	a2, _ := os.ReadFile(filepath.Join(dir2, "app-000.log"))
	if !bytes.Equal(a, a2) {
		t.Error("the generator is not deterministic")
	}
}

func TestCached(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "c")
	calls := 0
	gen := func(d string) error { calls++; return os.WriteFile(filepath.Join(d, "f"), nil, 0o644) }
	for range 2 {
		if err := cached(dir, "k1", gen); err != nil {
			t.Fatal(err)
		}
	}
	if calls != 1 {
		t.Errorf("generated %d times for one key, want once", calls)
	}
	cached(dir, "k2", gen)
	if calls != 2 {
		t.Error("a new key did not regenerate")
	}
}

func TestSynthImage(t *testing.T) {
	img := synthImage(1, 320, 180)
	// Photographic content: wide spread of values and no large flat runs,
	// which would let a JPEG codec skip work.
	var sum, sq float64
	flat := 0
	for y := range 180 {
		for x := range 320 {
			v := float64(img.RGBAAt(x, y).G)
			sum += v
			sq += v * v
			if x > 0 && img.RGBAAt(x, y) == img.RGBAAt(x-1, y) {
				flat++
			}
		}
	}
	n := 320.0 * 180
	if sd := math.Sqrt(sq/n - (sum/n)*(sum/n)); sd < 15 {
		t.Errorf("green channel standard deviation %.1f: too flat", sd)
	}
	if flat > int(n/20) {
		t.Errorf("%d of %d pixels equal their left neighbour", flat, int(n))
	}
	dir := t.TempDir()
	if err := genImages(dir, 1, 64, 48, 1); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(filepath.Join(dir, "img-000.jpg"))
	defer f.Close()
	cfg, err := jpeg.DecodeConfig(f)
	if err != nil || cfg.Width != 64 || cfg.Height != 48 {
		t.Errorf("generated JPEG: %+v, %v", cfg, err)
	}
}

func TestServerRate(t *testing.T) {
	s := &slowServer{}
	t0 := time.Now()
	// Out of order, as concurrent handlers record them: 11 arrivals over
	// one second are 10 intervals, 10/s.
	for _, i := range []int{3, 0, 10, 1, 2, 4, 5, 6, 7, 8, 9} {
		s.arrivals = append(s.arrivals, t0.Add(time.Duration(i)*100*time.Millisecond))
	}
	if r, err := s.rate(); err != nil || math.Abs(r-10) > 1e-9 {
		t.Errorf("rate = %v, %v; want 10", r, err)
	}
	if err := s.expect(11); err != nil {
		t.Error(err)
	}
	s.reset()
	if _, err := s.rate(); err == nil {
		t.Error("a rate from no requests")
	}
}

func TestSlug(t *testing.T) {
	if got := slug("flow -tags libjpeg"); got != "flow-tags-libjpeg" {
		t.Errorf("slug = %q", got)
	}
}

func TestSpreadOf(t *testing.T) {
	ms := time.Millisecond
	s := spreadOf([]time.Duration{9 * ms, 1 * ms, 5 * ms})
	if s.Min != 0.001 || s.Median != 0.005 || s.Max != 0.009 {
		t.Errorf("spreadOf = %+v", s)
	}
	if s := spreadOf(nil); !math.IsNaN(s.Median) {
		t.Errorf("spreadOf(nil) = %+v, want NaN", s)
	}
}

func TestSumCounts(t *testing.T) {
	p := filepath.Join(t.TempDir(), "out")
	os.WriteFile(p, []byte("/x/a:3\n/x/b:c.log:4\n"), 0o644)
	if got, err := sumCounts(p); err != nil || got != 7 {
		t.Errorf("sumCounts = %d, %v; want 7", got, err)
	}
	os.WriteFile(p, []byte("rg: /x: Permission denied\n"), 0o644)
	if _, err := sumCounts(p); err == nil {
		t.Error("an rg error line was read as a count")
	}
}

// A contender without runs (skipped) must not break the JSON: NaN is not
// JSON.
func TestResultsJSON(t *testing.T) {
	h := &harness{machine: collectMachine(".")}
	if h.machine.CPUs < 1 || h.machine.Go == "" || h.machine.Date == "" {
		t.Errorf("machine info incomplete: %+v", h.machine)
	}
	flow := &contender{name: "flow", units: 10, samples: []sample{{wall: time.Second, cpu: time.Second}}}
	skipped := &contender{name: "peer", peer: true, units: 10, skip: "missing"}
	w := &workload{id: "w", cs: []*contender{flow, skipped}}
	p := filepath.Join(t.TempDir(), "r.json")
	if err := writeJSON(p, h.results([]*workload{w}, 1)); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	if !bytes.Contains(b, []byte(`"skipped": "missing"`)) || !bytes.Contains(b, []byte(`"median": 1`)) {
		t.Errorf("results.json:\n%s", b)
	}
}

func TestEngineFloor(t *testing.T) {
	if _, err := engineFloor(10_000); err != nil {
		t.Fatal(err)
	}
}

// A child's ru_maxrss is at least the harness's own peak: the sample says
// so instead of reporting the harness's memory as the child's.
func TestRSSMaskedByHarnessPeak(t *testing.T) {
	if harnessHWM() == 0 {
		t.Skip("no /proc/self/status VmHWM here")
	}
	big := make([]byte, 96<<20)
	for i := range big {
		big[i] = 1
	}
	s, _, err := runOnce(context.Background(), invocation{argv: []string{"true"}}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("true: ru_maxrss %d kB, harness peak %d kB", s.rssKB, s.hwmKB)
	c := &contender{samples: []sample{s}}
	if s.hwmKB < 96<<10 || !c.rssMasked() {
		t.Errorf("rss %d kB, harness peak %d kB: want the RSS marked as masked", s.rssKB, s.hwmKB)
	}
	runtime.KeepAlive(big)
}

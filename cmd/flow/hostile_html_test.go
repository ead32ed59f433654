package main

// The HTML report in a real browser: reports of real runs (the CLI in a
// process of its own, as in reliability_test.go) opened in headless
// Chromium. Each page must render without a console error, show the first
// failure, and draw its timeline (pixels read back from the canvas). The
// rendering time of the million-item report is measured and logged, not
// asserted.
//
// Screenshots land in the test's temporary directory, and in bench/out/
// when FLOW_SCREENSHOTS is set; FLOW_SCREENSHOTS=docs also refreshes the
// one docs/report.md shows (docs/report.md says how).

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/flowrun/flow/report/events"
)

// htmlBrowser is one headless Chromium shared by the subtests.
type htmlBrowser struct {
	ctx context.Context
}

func newHTMLBrowser(t *testing.T) *htmlBrowser {
	t.Helper()
	path := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium is not installed, and CI must run the browser tests: .ci/run installs it (apt-get install chromium)")
		}
		t.Skip("chromium is not installed: skipping the browser tests of the HTML report (apt-get install chromium to run them)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // CI runs as root
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// Start the browser now, so that its start is not counted as rendering.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting %s: %v", path, err)
	}
	return &htmlBrowser{ctx: ctx}
}

// htmlPageFacts is what a test reads from a rendered page.
type htmlPageFacts struct {
	Rendered   bool    `json:"rendered"`
	RenderMS   float64 `json:"renderMS"` // the page's script
	LoadMS     float64 `json:"loadMS"`   // navigation start to rendered
	Status     string  `json:"status"`
	Failure    string  `json:"failure"`
	Timeline   string  `json:"timeline"`
	Inked      int     `json:"inked"`  // coloured pixels on the timeline
	Tinted     int     `json:"tinted"` // pixels of the timeline in a shade of the succeeded green
	ChartInked int     `json:"chartInked"`
	Rows       int     `json:"rows"`
	RowsNote   string  `json:"rowsNote"`
	FirstRow   string  `json:"firstRow"`
}

// htmlFactsJS reads the page: the status badge, the first failure, and how
// many pixels of the timeline and of the charts are neither white nor
// grey (bars and areas are coloured; axes and lane backgrounds are grey).
const htmlFactsJS = `(() => {
  const inked = (cv) => {
    if (!cv || !cv.width) return 0;
    const d = cv.getContext("2d").getImageData(0, 0, cv.width, cv.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) {
      const r = d[i], g = d[i+1], b = d[i+2], a = d[i+3];
      if (a > 0 && Math.max(r, g, b) - Math.min(r, g, b) > 40) n++;
    }
    return n;
  };
  // Aggregated bins are shaded by how busy the worker was, so a run of
  // trivial items is drawn in pale green: tinted counts those pixels.
  const tinted = (cv) => {
    if (!cv || !cv.width) return 0;
    const d = cv.getContext("2d").getImageData(0, 0, cv.width, cv.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) {
      if (d[i+3] > 0 && d[i+1] - Math.max(d[i], d[i+2]) > 8) n++;
    }
    return n;
  };
  let charts = 0;
  document.querySelectorAll("canvas[data-chart]").forEach(c => charts += inked(c));
  const failure = document.getElementById("failure");
  const rows = document.querySelectorAll("#items tbody tr");
  return {
    rendered: document.body.dataset.rendered === "true",
    renderMS: window.flowRenderMS || 0,
    loadMS: window.flowRenderedAt || 0,
    status: (document.querySelector("#top .badge") || {}).textContent || "",
    failure: failure.hidden ? "" : failure.textContent,
    timeline: document.body.dataset.timeline || "",
    inked: inked(document.getElementById("timeline")),
    tinted: tinted(document.getElementById("timeline")),
    chartInked: charts,
    rows: rows.length,
    rowsNote: document.getElementById("items-note").textContent,
    firstRow: rows.length ? rows[0].textContent : "",
  };
})()`

// open renders file in the browser and reads it; it fails the test on any
// console message of type error or exception.
func (b *htmlBrowser) open(t *testing.T, file, shot string) *htmlPageFacts {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	defer cancel()
	ctx, stop := context.WithTimeout(ctx, relGuard)
	defer stop()
	var (
		mu   sync.Mutex
		errs []string
	)
	msgs := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleException {
				mu.Lock()
				errs = append(errs, fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line))
				mu.Unlock()
			}
		}
	}()
	if err := chromedp.Do(ctx, chromedp.Navigate("file://"+file)); err != nil {
		t.Fatalf("opening %s: %v", file, err)
	}
	// Wait for the page's script to finish, or to fail: an exception
	// ends the wait at once instead of at the guard.
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.body.dataset.rendered === "true"`))
		if err != nil {
			t.Fatalf("rendering %s: %v", file, err)
		}
		if ok {
			break
		}
		mu.Lock()
		e := errs
		mu.Unlock()
		if len(e) > 0 {
			t.Fatalf("%s did not render:\n%s", file, strings.Join(e, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	facts, err := chromedp.Run(ctx, chromedp.Evaluate[*htmlPageFacts](htmlFactsJS))
	if err != nil {
		t.Fatalf("reading the page: %v", err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	htmlSaveShot(t, shot, png)
	// Hovering the timeline must not throw either: its handler reads the
	// data under the pointer.
	// (An exception in a handler goes to the console, not to Evaluate.)
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => {
	  const cv = document.getElementById("timeline"), r = cv.getBoundingClientRect();
	  for (let y = 30; y < r.height; y += 9)
	    for (let x = 0; x < r.width; x += 23) cv.dispatchEvent(new MouseEvent("mousemove", {clientX: r.left + x, clientY: r.top + y, bubbles: true}));
	  cv.dispatchEvent(new WheelEvent("wheel", {clientX: r.left + r.width / 2, clientY: r.top + 40, deltaY: -400, bubbles: true, cancelable: true}));
	  cv.dispatchEvent(new MouseEvent("dblclick", {bubbles: true}));
	  return true;
	})()`)); err != nil {
		t.Errorf("hovering and zooming the timeline: %v", err)
	}
	// The console's messages come before the answer to a later call; give
	// the reader a moment to take them off the queue before it stops.
	_, _ = chromedp.Run(ctx, chromedp.Evaluate[int](`1`))
	time.Sleep(200 * time.Millisecond)
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(errs) > 0 {
		t.Errorf("console errors in %s:\n%s", file, strings.Join(errs, "\n"))
	}
	if !facts.Rendered {
		t.Errorf("the page did not finish rendering")
	}
	return facts
}

func htmlSaveShot(t *testing.T, name string, png []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s (%d KB)", path, len(png)/1024)
	if os.Getenv("FLOW_SCREENSHOTS") == "" {
		return
	}
	out := filepath.Join(repoRoot(t), "bench", "out")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// htmlRun runs pipeline with every output of a run asked for and returns
// the run and the paths of its HTML page and events file.
func htmlRun(t *testing.T, pipeline string, args ...string) (*relResult, string) {
	t.Helper()
	r := relRun(t, pipeline, append([]string{"--progress", "none", "--html", "report.html", "--events", "events.jsonl", "--metrics", "flow.prom"}, args...)...)
	page := filepath.Join(r.dir, "report.html")
	fi, err := os.Stat(page)
	if err != nil {
		t.Fatalf("exit %d and no HTML page: %v\nstderr:\n%s", r.code, err, r.stderr)
	}
	t.Logf("report.html: %d KB", fi.Size()/1024)
	if _, err := events.ReadFile(filepath.Join(r.dir, "events.jsonl")); err != nil {
		t.Fatalf("events file: %v", err)
	}
	if r.rep.FileSHA256 == "" || r.rep.Version == "" || r.rep.Events != "events.jsonl" {
		t.Errorf("report: sha256 %q, version %q, events %q", r.rep.FileSHA256, r.rep.Version, r.rep.Events)
	}
	return r, page
}

func htmlCheckDrawn(t *testing.T, f *htmlPageFacts) {
	t.Helper()
	if f.Timeline != "drawn" || (f.Inked < 200 && f.Tinted < 200) {
		t.Errorf("timeline %q with %d coloured and %d green-tinted pixels: want it drawn", f.Timeline, f.Inked, f.Tinted)
	}
	if f.ChartInked < 200 {
		t.Errorf("charts have %d coloured pixels: want them drawn", f.ChartInked)
	}
}

func TestHTMLReport(t *testing.T) {
	b := newHTMLBrowser(t)

	t.Run("small", func(t *testing.T) {
		r, page := htmlRun(t, `version: 1
name: small
stages:
  - name: numbers
    source: {range: {from: 1, to: 40}}
  - name: square
    step: compute
    workers: 4
    with: {value: "${ item * item }"}
  - name: out
    sink: {write: {path: out.jsonl}}
`)
		if r.code != 0 {
			t.Fatalf("exit %d\n%s", r.code, r.stderr)
		}
		f := b.open(t, page, "small.png")
		htmlCheckDrawn(t, f)
		if f.Status != "succeeded" || f.Failure != "" {
			t.Errorf("status %q, failure box %q", f.Status, f.Failure)
		}
		if f.Rows == 0 {
			t.Errorf("no item rows")
		}
		// Rendered later from the JSON report, which names its events file.
		later := filepath.Join(r.dir, "later.html")
		out, err := htmlCLI(t, r.dir, "report", "report.json", "--html", later)
		if err != nil {
			t.Fatalf("flow report: %v\n%s", err, out)
		}
		g := b.open(t, later, "small-later.png")
		htmlCheckDrawn(t, g)
		if g.Rows != f.Rows {
			t.Errorf("rendered later: %d rows, at the run's end %d", g.Rows, f.Rows)
		}
	})

	t.Run("failed", func(t *testing.T) {
		r, page := htmlRun(t, htmlFailedPipeline)
		if r.code != 1 {
			t.Fatalf("exit %d, want 1\n%s", r.code, r.stderr)
		}
		f := b.open(t, page, "failed.png")
		htmlCheckDrawn(t, f)
		first := r.rep.Failures[0]
		if f.Status != "failed" || !strings.Contains(f.Failure, fmt.Sprintf("item #%d", first.Index)) || !strings.Contains(f.Failure, "boom") {
			t.Errorf("status %q; failure box %q: want item #%d and its error", f.Status, f.Failure, first.Index)
		}
		if !strings.Contains(f.FirstRow, "boom") {
			t.Errorf("first row of the table %q: want a failure first", f.FirstRow)
		}
		if os.Getenv("FLOW_SCREENSHOTS") == "docs" {
			htmlDocShot(t, b, page)
		}
	})

	t.Run("million", func(t *testing.T) {
		if testing.Short() {
			t.Skip("a million items: not with -short")
		}
		r, page := htmlRun(t, `version: 1
name: million
stages:
  - name: numbers
    source: {range: {from: 1, to: 1000000}}
  - name: plus-one
    step: compute
    with: {value: "${ item + 1 }"}
  - name: out
    sink: {write: {path: out.jsonl}}
`)
		if r.code != 0 {
			t.Fatalf("exit %d\n%s", r.code, r.stderr)
		}
		fi, _ := os.Stat(page)
		// Binning and sampling keep the page small whatever the count.
		if fi.Size() > 4<<20 {
			t.Errorf("report.html is %d bytes for a million items: want a few MB at most", fi.Size())
		}
		f := b.open(t, page, "million.png")
		htmlCheckDrawn(t, f)
		if !strings.Contains(f.RowsNote, "1,000,000") && !strings.Contains(f.RowsNote, "3,000,000") {
			t.Errorf("the table's note %q does not say how many items there were", f.RowsNote)
		}
		t.Logf("timeline: %d coloured and %d green-tinted pixels, charts %d", f.Inked, f.Tinted, f.ChartInked)
		t.Logf("million-item report: %d KB; page script %.0f ms, navigation to rendered %.0f ms", fi.Size()/1024, f.RenderMS, f.LoadMS)
	})

	t.Run("process-killed-worker", func(t *testing.T) {
		r, page := htmlRun(t, `version: 1
name: killed-worker
stages:
  - name: src
    source: {range: {from: 1, to: 8}}
  - name: work
    step: exec
    mode: process
    workers: 2
    on_error: skip
    with:
      # Item 3 kills the worker process running it (the parent of sh).
      argv: ["sh", "-c", "if [ \"$1\" = 3 ]; then kill -9 $PPID; sleep 5; fi; echo $1", "sh", "${ item }"]
      capture: json
  - name: out
    sink: {write: {path: out.jsonl}}
`)
		if r.code != 0 {
			t.Fatalf("exit %d\n%s", r.code, r.stderr)
		}
		f := b.open(t, page, "process-killed.png")
		htmlCheckDrawn(t, f)
		if !strings.Contains(f.Failure, "crash") || !strings.Contains(f.Failure, "worker process") {
			t.Errorf("failure box %q: want the crash of the worker process", f.Failure)
		}
		ev, err := events.ReadFile(filepath.Join(r.dir, "events.jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range ev.Stages {
			if s.Name != "work" {
				continue
			}
			for _, l := range s.Lanes {
				if !strings.HasPrefix(l.Worker, "pid ") {
					t.Errorf("lane %q: want one lane per worker process", l.Worker)
				}
			}
		}
	})
}

// htmlFailedPipeline retries, skips, and then stops: a run with a bit of
// everything, for the picture in docs/report.md.
const htmlFailedPipeline = `version: 1
name: nightly-import
stages:
  - name: numbers
    source: {range: {from: 1, to: 240}}
  - name: fetch
    step: exec
    workers: 6
    on_error: skip
    max_errors: 4
    retry: {attempts: 2, backoff: 10ms}
    with:
      argv: ["sh", "-c", "sleep 0.0$(( $1 % 5 ))$(( $1 % 3 )); if [ $(( $1 % 29 )) = 0 ]; then echo boom: upstream said 503 >&2; exit 3; fi; echo $1", "sh", "${ item }"]
  - name: out
    sink: {write: {path: out.jsonl}}
`

// htmlDocShot refreshes docs/report.png: the top of the failed run's page at a
// size that reads well in the docs (and stays small).
func htmlDocShot(t *testing.T, b *htmlBrowser, page string) {
	ctx, cancel := chromedp.NewContext(b.ctx)
	defer cancel()
	if err := chromedp.Do(ctx,
		chromedp.EmulateViewport(1200, 1700),
		chromedp.Navigate("file://"+page),
		chromedp.WaitReady(`body[data-rendered="true"]`),
	); err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(repoRoot(t), "docs", "report.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d KB)", path, len(png)/1024)
}

// htmlCLI runs the CLI (this test binary as flow) in dir.
func htmlCLI(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), cliEnv+"=1")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// The metrics file of a real run parses and counts what the report counts.
func TestMetricsFile(t *testing.T) {
	r := relRun(t, htmlFailedPipeline, "--progress", "none", "--metrics", "flow.prom")
	b, err := os.ReadFile(filepath.Join(r.dir, "flow.prom"))
	if err != nil {
		t.Fatalf("exit %d and no metrics: %v\n%s", r.code, err, r.stderr)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(b)))
	if err != nil {
		t.Fatalf("Prometheus' parser refuses the metrics: %v\n%s", err, b)
	}
	if len(fams["flow_last_run_items"].GetMetric()) != 5*len(r.rep.Stages) {
		t.Errorf("want 5 outcomes for each of %d stages:\n%s", len(r.rep.Stages), b)
	}
	var want []string
	for _, s := range r.rep.Stages {
		want = append(want, fmt.Sprintf(`flow_last_run_items{pipeline="nightly-import",stage=%q,outcome="skipped"} %d`, s.Name, s.Skipped))
	}
	want = append(want, `flow_last_run_status{pipeline="nightly-import",status="failed"} 1`)
	for _, w := range want {
		if !strings.Contains(string(b), w+"\n") {
			t.Errorf("no line %s in\n%s", w, b)
		}
	}
}

// flow report: what it needs is said when missing, and a page is still
// drawn when the events file is gone.
func TestReportCommand(t *testing.T) {
	r := relRun(t, htmlFailedPipeline, "--progress", "none", "--events", "events.jsonl")
	exitCode := func(err error) int {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	}
	out, err := htmlCLI(t, r.dir, "report", "report.json")
	if exitCode(err) != 2 || !strings.Contains(out, "--html") {
		t.Errorf("without an output: exit %d, %q; want 2 naming --html", exitCode(err), out)
	}
	out, err = htmlCLI(t, r.dir, "report", "p.yaml", "--html", "x.html")
	if exitCode(err) != 2 || !strings.Contains(out, "not a run report") {
		t.Errorf("given a pipeline: exit %d, %q; want 2, not a run report", exitCode(err), out)
	}
	if err := os.Rename(filepath.Join(r.dir, "events.jsonl"), filepath.Join(r.dir, "moved.jsonl")); err != nil {
		t.Fatal(err)
	}
	out, err = htmlCLI(t, r.dir, "report", "report.json", "--html", "gone.html", "--metrics", "flow.prom")
	if exitCode(err) != 0 || !strings.Contains(out, "events.jsonl") || !strings.Contains(out, "--events") {
		t.Errorf("events file gone: exit %d, %q; want 0 and a note naming the file and --events", exitCode(err), out)
	}
	for _, f := range []string{"gone.html", "flow.prom"} {
		if _, err := os.Stat(filepath.Join(r.dir, f)); err != nil {
			t.Errorf("%s not written: %v", f, err)
		}
	}
	page, _ := os.ReadFile(filepath.Join(r.dir, "gone.html"))
	if !strings.Contains(string(page), `"events":null`) {
		t.Errorf("the page without events holds events")
	}
	out, err = htmlCLI(t, r.dir, "report", "report.json", "--events", "moved.jsonl", "--html", "moved.html")
	if exitCode(err) != 0 || out != "" {
		t.Errorf("--events given: exit %d, %q", exitCode(err), out)
	}
	page, _ = os.ReadFile(filepath.Join(r.dir, "moved.html"))
	if strings.Contains(string(page), `"events":null`) {
		t.Errorf("the page drawn with --events has no events")
	}
}

// The page, the events file and the metrics show no secret: items built
// from one, failing, kept in the table and in error examples, one long
// enough to be cut where the secret was.
func TestHTMLReportHidesSecrets(t *testing.T) {
	r := relRun(t, fmt.Sprintf(`version: 1
name: secretive
vars:
  amp: {default: %s, secret: true}
stages:
  - name: src
    source: {range: {from: 1, to: 30}}
  - name: mk
    step: compute
    with: {value: "${ (item %% 2 == 0 ? '%s' : 'k-') + vars.amp }"}
  - name: bad
    step: compute
    on_error: skip
    with: {value: "${ len(item) > 100 ? fail('refused ' + item) : item }"}
  - name: out
    sink: {write: {path: out.jsonl}}
`, relYAML(secAmp), strings.Repeat("x", 150)), "--progress", "none", "--html", "report.html", "--events", "events.jsonl", "--metrics", "flow.prom")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	if s := r.stage(t, "bad"); s.Skipped != 15 {
		t.Fatalf("bad: %d skipped, want the 15 long items", s.Skipped)
	}
	for _, f := range []string{"report.html", "events.jsonl", "flow.prom"} {
		b, err := os.ReadFile(filepath.Join(r.dir, f))
		if err != nil {
			t.Fatal(err)
		}
		secretLeaks(t, f, string(b), secAmp)
		if f != "flow.prom" && !strings.Contains(string(b), "k-***") {
			t.Errorf("%s does not show the items, redacted", f)
		}
	}
	secretScan(t, r, secAmp)
}

// With progress on, both the progress display and the recorder get every
// event (the CLI's fan-out sink).
func TestHTMLReportBesideProgress(t *testing.T) {
	r := relRun(t, `version: 1
stages:
  - name: src
    source: {range: {from: 1, to: 40}}
  - name: double
    step: compute
    with: {value: "${ item * 2 }"}
  - name: out
    sink: {write: {path: out.jsonl}}
`, "--events", "events.jsonl")
	if r.code != 0 || !strings.Contains(r.stderr, "40/40") {
		t.Fatalf("exit %d; want the plain progress to reach 40/40:\n%s", r.code, r.stderr)
	}
	ev, err := events.ReadFile(filepath.Join(r.dir, "events.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ev.Stages {
		if s.Outcomes["succeeded"] != 40 {
			t.Errorf("stage %s: %d succeeded recorded, want 40", s.Name, s.Outcomes["succeeded"])
		}
	}
}

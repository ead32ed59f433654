package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	_ "image/jpeg" // decode the outputs of the resize contenders
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/flowrun/flow/report"
)

// contender is one program doing a workload: flow, or a peer.
type contender struct {
	name  string
	peer  bool
	units float64 // work done per run, in the workload's unit
	note  string  // shown under the table: what exactly ran
	skip  string  // why it cannot run on this machine
	// prepare cleans what the previous run left and returns the command.
	prepare func() (invocation, error)
	// inproc, when set instead of prepare, runs inside the harness: a
	// floor to compare with rather than a program people would run.
	inproc func() (sample, error)
	// check verifies the output of a run, so that a fast wrong answer is
	// caught; it may fill s.extra.
	check func(s *sample, stderr string) error
	// borrow reports another contender's samples instead of running: the
	// Python map over ten million items would need tens of GB.
	borrow  *contender
	samples []sample
}

func (c *contender) results() []sample {
	if c.borrow != nil {
		return c.borrow.samples
	}
	return c.samples
}

func (c *contender) medianWall() time.Duration {
	var ds []time.Duration
	for _, s := range c.results() {
		ds = append(ds, s.wall)
	}
	return medianDur(ds)
}

// rate is units per second at the median wall time.
func (c *contender) rate() float64 {
	w := c.medianWall()
	if w == 0 {
		return math.NaN()
	}
	u := c.units
	if c.borrow != nil {
		u = c.borrow.units
	}
	return u / w.Seconds()
}

func (c *contender) medianCPU() time.Duration {
	var ds []time.Duration
	for _, s := range c.results() {
		ds = append(ds, s.cpu)
	}
	return medianDur(ds)
}

func (c *contender) peakRSSMB() float64 {
	var rs []int64
	for _, s := range c.results() {
		rs = append(rs, s.rssKB)
	}
	return float64(maxInt(rs)) / 1024
}

// rssMasked says the peak RSS is no more than the harness's own peak at
// the time (see sample.hwmKB): the child's true peak is lower or equal.
func (c *contender) rssMasked() bool {
	var top sample
	for _, s := range c.results() {
		if s.rssKB >= top.rssKB {
			top = s
		}
	}
	return top.rssKB > 0 && top.rssKB <= top.hwmKB
}

func (c *contender) medianExtra() float64 {
	var xs []float64
	for _, s := range c.results() {
		xs = append(xs, s.extra)
	}
	return medianFloat(xs)
}

type target struct {
	text     string // what is promised
	measured string
	met      bool
	na       bool // could not be evaluated (a peer missing, no samples)
}

type workload struct {
	id    string
	title string
	unit  string // what units counts: items, MB, images, requests
	setup func() error
	cs    []*contender
	// targets are evaluated after the runs.
	targets func() []target
}

func (w *workload) flow() *contender { return w.cs[0] }

func (w *workload) find(name string) *contender {
	for _, c := range w.cs {
		if c.name == name {
			return c
		}
	}
	return nil
}

// sizes of every workload; smoke mode shrinks them to seconds.
type sizes struct {
	engineN, memoryN          int
	logFiles                  int
	logSize                   int64
	smallFiles                int
	smallSize                 int64
	images, imgW, imgH        int
	fetchN, fetchRatedN       int
	fetchWorkers              int
	fetchDelay                time.Duration
	rate                      float64
	processN, processParallel int
	// processSlow is the item count of the peers that pay a round trip per
	// item (ProcessPoolExecutor with chunksize=1), clusterN that of the
	// cluster workload: both are compared by items/s.
	processSlow, clusterN int
}

var fullSizes = sizes{
	engineN: 1_000_000, memoryN: 10_000_000,
	logFiles: 64, logSize: 16 << 20,
	smallFiles: 10_000, smallSize: 4 << 10,
	images: 200, imgW: 1920, imgH: 1080,
	fetchN: 2000, fetchRatedN: 500, fetchWorkers: 50, fetchDelay: 20 * time.Millisecond, rate: 100,
	processN: 1_000_000, processParallel: 2_000, processSlow: 20_000, clusterN: 200_000,
}

var smokeSizes = sizes{
	engineN: 20_000, memoryN: 200_000,
	logFiles: 4, logSize: 256 << 10,
	smallFiles: 200, smallSize: 4 << 10,
	images: 4, imgW: 640, imgH: 360,
	fetchN: 100, fetchRatedN: 30, fetchWorkers: 50, fetchDelay: 20 * time.Millisecond, rate: 100,
	processN: 500, processParallel: 100, processSlow: 100, clusterN: 500,
}

// flowRun is the invocation of flow on one of bench/pipelines.
func (h *harness) flowRun(pipeline, reportName, stdout string, vars map[string]string) invocation {
	return h.flowRunBin(h.flowBin, pipeline, reportName, stdout, vars)
}

func (h *harness) flowRunBin(bin, pipeline, reportName, stdout string, vars map[string]string) invocation {
	argv := []string{bin, "run", filepath.Join(h.root, "bench", "pipelines", pipeline),
		"--progress", "none", "--no-state", "--report", filepath.Join(h.out, "reports", reportName)}
	for _, k := range sortedKeys(vars) {
		argv = append(argv, "--set", k+"="+vars[k])
	}
	return invocation{argv: argv, stdout: stdout, dir: h.root}
}

// flowCheck reads the report of a flow run: it must have succeeded with
// want items reaching the last stage.
func (h *harness) flowCheck(reportName string, want int) func(*sample, string) error {
	return func(_ *sample, stderr string) error {
		rep, err := readReport(filepath.Join(h.out, "reports", reportName))
		if err != nil {
			return err
		}
		if rep.Status != "succeeded" {
			return fmt.Errorf("flow run %s: %s (%s)\n%s", rep.Status, rep.Reason, reportName, tail(stderr, 2000))
		}
		last := rep.Stages[len(rep.Stages)-1]
		if last.Succeeded != int64(want) {
			return fmt.Errorf("flow: the last stage %q got %d items, want %d", last.Name, last.Succeeded, want)
		}
		for _, s := range rep.Stages {
			if !s.Balanced() {
				return fmt.Errorf("flow: stage %q does not account for its items: %+v", s.Name, *s)
			}
		}
		return nil
	}
}

func readReport(path string) (*report.Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the run report: %v", err)
	}
	var r report.Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if len(r.Stages) == 0 {
		return nil, fmt.Errorf("%s: no stages", path)
	}
	return &r, nil
}

// pyCheck reads the one-line JSON summary a Python baseline prints last on
// stderr and checks its count.
func pyCheck(key string, want int) func(*sample, string) error {
	return func(_ *sample, stderr string) error {
		m, err := lastJSON(stderr)
		if err != nil {
			return err
		}
		if got, _ := m[key].(float64); int(got) != want {
			return fmt.Errorf("python: %s = %v, want %d", key, m[key], want)
		}
		return nil
	}
}

func lastJSON(stderr string) (map[string]any, error) {
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &m); err != nil {
		return nil, fmt.Errorf("no JSON summary on stderr: %q", tail(stderr, 500))
	}
	return m, nil
}

func (h *harness) py(script string, args ...string) invocation {
	return invocation{argv: append([]string{h.python, filepath.Join(h.root, "bench", "python", script)}, args...), dir: h.root}
}

func (h *harness) workloads() []*workload {
	return []*workload{h.engineW(), h.memoryW(), h.logsW(), h.logsSmallW(), h.resizeW(), h.fetchW(), h.fetchRatedW(), h.processW(), h.clusterW()}
}

func (h *harness) engineW() *workload {
	n := h.sz.engineN
	w := &workload{id: "engine", title: fmt.Sprintf("Engine overhead: %s trivial items, 3 stages", thousands(n)), unit: "items"}
	flow := &contender{name: "flow", units: float64(n),
		note: "range -> compute `${ item + 1 }` -> compute `${ item + 1 }` -> print jsonl (stdout to /dev/null)",
		prepare: func() (invocation, error) {
			return h.flowRun("engine.yaml", "engine.json", "", map[string]string{"n": strconv.Itoa(n)}), nil
		},
		check: h.flowCheck("engine.json", n)}
	py := &contender{name: "ThreadPoolExecutor.map", peer: true, units: float64(n),
		note:    "bench/python/engine.py: `ex.map(inc, ex.map(inc, range(n)))`, each result written as a line (stdout to /dev/null)",
		prepare: func() (invocation, error) { return h.py("engine.py", strconv.Itoa(n)), nil },
		check:   pyCheck("items", n)}
	floor := &contender{name: "floor: hand-written Go (in the harness)", peer: true, units: float64(n),
		note:   "bench/enginefloor.go: a range, two pools of one goroutine per CPU (+1 each), a buffered JSON Lines writer to /dev/null, batches of 256 between them; no order, report, retries or cancellation, no process start: what flow's machinery costs is the gap",
		inproc: func() (sample, error) { return engineFloor(n) }}
	w.cs = []*contender{flow, py, floor}
	w.targets = func() []target {
		r := flow.rate()
		ratio := flow.rate() / py.rate()
		return []target{
			{text: ">= 1,000,000 items/s", measured: fmt.Sprintf("%s items/s", thousands(int(r))), met: r >= 1e6},
			{text: ">= 30x ThreadPoolExecutor.map", measured: fmt.Sprintf("%.1fx", ratio), met: ratio >= 30, na: math.IsNaN(ratio)},
		}
	}
	return w
}

func (h *harness) memoryW() *workload {
	n := h.sz.memoryN
	w := &workload{id: "memory", title: fmt.Sprintf("Memory: %s items, 3 stages", thousands(n)), unit: "items"}
	flow := &contender{name: "flow", units: float64(n),
		note: "bench/pipelines/engine.yaml with `--set n=` ten times larger",
		prepare: func() (invocation, error) {
			return h.flowRun("engine.yaml", "memory.json", "", map[string]string{"n": strconv.Itoa(n)}), nil
		},
		check: h.flowCheck("memory.json", n)}
	w.cs = []*contender{flow}
	// The Python map beside it is borrowed from the engine workload; see
	// selected.
	w.targets = func() []target {
		mb := flow.peakRSSMB()
		t := target{text: "peak RSS < 64 MB", measured: fmt.Sprintf("%.1f MB", mb), met: mb < 64 && mb > 0}
		if flow.rssMasked() {
			t.measured = fmt.Sprintf("<= %.1f MB (the harness's own peak; see the note)", mb)
		}
		if len(w.cs) > 1 && len(w.cs[1].results()) > 0 {
			t.measured += fmt.Sprintf(" (the Python map: %.0f MB at a tenth of the items)", w.cs[1].peakRSSMB())
		}
		return []target{t}
	}
	return w
}

func (h *harness) logsW() *workload {
	return h.logsWorkload("analyze-logs", h.sz.logFiles, h.sz.logSize, true)
}

// logsSmallW is analyze-logs over many small files, where what a file costs
// besides its bytes (open, stat, read, close, the pipeline's per-item work)
// decides.
func (h *harness) logsSmallW() *workload {
	return h.logsWorkload("analyze-logs-small", h.sz.smallFiles, h.sz.smallSize, false)
}

// logsWorkload is analyze-logs over files log files of about size bytes,
// beside ripgrep, the guide's Python program and a floor; withGrep adds
// the grep peers.
func (h *harness) logsWorkload(id string, files int, size int64, withGrep bool) *workload {
	dir := filepath.Join(h.out, "logs", fmt.Sprintf("%dx%d", files, size))
	totalMB := float64(int64(files)*size) / (1 << 20)
	w := &workload{id: id, title: fmt.Sprintf("analyze-logs: %s files x %d MB", thousands(files), size>>20), unit: "MB"}
	if size < 1<<20 {
		w.title = fmt.Sprintf("analyze-logs: %s files x %d KB", thousands(files), size>>10)
	}
	var want struct{ lines, errors int64 }
	w.setup = func() error {
		key := fmt.Sprintf("v%d %d %d", genVersion, files, size)
		if err := cached(dir, key, func(d string) error {
			fmt.Fprintf(os.Stderr, "bench: generating %d log files of %d bytes in %s\n", files, size, d)
			return genLogs(d, files, size, runtime.NumCPU())
		}); err != nil {
			return err
		}
		// Every contender reads from the page cache, the first one too.
		var err error
		want.lines, want.errors, err = warmAndCount(dir)
		totalMB = 0
		ents, _ := filepath.Glob(filepath.Join(dir, "*.log"))
		for _, e := range ents {
			st, _ := os.Stat(e)
			totalMB += float64(st.Size()) / (1 << 20)
		}
		for _, c := range w.cs {
			c.units = totalMB
		}
		return err
	}
	flowOut := filepath.Join(h.out, "tmp", id+".flow.jsonl")
	flow := &contender{name: "flow",
		note: "glob -> analyze-logs (ERROR then WARN, first match wins, and a line count), thread mode, workers: auto -> jsonl",
		prepare: func() (invocation, error) {
			return h.flowRun("analyze_logs.yaml", id+".json", flowOut, map[string]string{"log_dir": dir}), nil
		},
		check: func(s *sample, stderr string) error {
			if err := h.flowCheck(id+".json", files)(s, stderr); err != nil {
				return err
			}
			var lines, errs int64
			if err := eachJSONLine(flowOut, func(m map[string]any) {
				lines += int64(num(m["lines"]))
				errs += int64(num(m["errors"]))
			}); err != nil {
				return err
			}
			if lines != want.lines || errs != want.errors {
				return fmt.Errorf("flow counted %d lines and %d errors, want %d and %d", lines, errs, want.lines, want.errors)
			}
			return nil
		}}
	rgOut := filepath.Join(h.out, "tmp", id+".rg.txt")
	rg := &contender{name: "rg -c ERROR (ripgrep)", peer: true,
		note: "`rg -c --no-ignore ERROR DIR` (Debian's ripgrep; --no-ignore since bench/out is in .gitignore): one pattern, no line count, its own directory walk and one thread per CPU, reading into a reused buffer",
		prepare: func() (invocation, error) {
			return invocation{argv: []string{"rg", "-c", "--no-ignore", "ERROR", dir}, stdout: rgOut}, nil
		},
		check: func(*sample, string) error {
			got, err := sumCounts(rgOut)
			if err == nil && got != want.errors {
				err = fmt.Errorf("rg counted %d ERROR lines, want %d", got, want.errors)
			}
			return err
		}}
	if !h.haveRg {
		rg.skip = "ripgrep is missing (apt-get install ripgrep)"
	}
	grepOut := filepath.Join(h.out, "tmp", "analyze-logs.grep.txt")
	grep1 := &contender{name: "grep -c ERROR (xargs -P" + strconv.Itoa(runtime.NumCPU()) + ")", peer: true,
		note: "`find DIR -name '*.log' -print0 | xargs -0 -n1 -P$(nproc) grep -c ERROR`, LC_ALL=C: one pattern, one pass per file, no line count: less work than flow",
		prepare: func() (invocation, error) {
			return invocation{argv: []string{"bash", "-c",
				`find "$1" -name '*.log' -print0 | xargs -0 -n1 -P"$2" grep -c ERROR`, "_", dir, strconv.Itoa(runtime.NumCPU())},
				env: []string{"LC_ALL=C"}, stdout: grepOut}, nil
		},
		check: func(*sample, string) error {
			got, err := sumInts(grepOut, "")
			if err == nil && got != want.errors {
				err = fmt.Errorf("grep counted %d ERROR lines, want %d", got, want.errors)
			}
			return err
		}}
	grep2Out := filepath.Join(h.out, "tmp", "analyze-logs.grep2.txt")
	grep2 := &contender{name: "grep -c ERROR, grep -c WARN", peer: true,
		note: "the same with two greps per file (ERROR, then WARN): the same two counts as flow, except that a WARN line quoting an ERROR counts twice; two passes, no line count",
		prepare: func() (invocation, error) {
			return invocation{argv: []string{"bash", "-c",
				`find "$1" -name '*.log' -print0 | xargs -0 -n1 -P"$2" sh -c 'echo E $(grep -c ERROR "$1"); echo W $(grep -c WARN "$1")' _`,
				"_", dir, strconv.Itoa(runtime.NumCPU())},
				env: []string{"LC_ALL=C"}, stdout: grep2Out}, nil
		},
		check: func(*sample, string) error {
			got, err := sumInts(grep2Out, "E ")
			if err == nil && got != want.errors {
				err = fmt.Errorf("grep counted %d ERROR lines, want %d", got, want.errors)
			}
			return err
		}}
	py := &contender{name: "ThreadPoolExecutor (guide)", peer: true,
		note:    "bench/python/analyze_logs.py: the guide's analyze_log and summarize_logs, 8 threads",
		prepare: func() (invocation, error) { return h.py("analyze_logs.py", dir, "8"), nil },
		check: func(_ *sample, stderr string) error {
			m, err := lastJSON(stderr)
			if err != nil {
				return err
			}
			if int64(num(m["lines"])) != want.lines || int64(num(m["errors"])) != want.errors {
				return fmt.Errorf("python counted %v lines and %v errors, want %d and %d", m["lines"], m["errors"], want.lines, want.errors)
			}
			return nil
		}}
	floor := &contender{name: "floor: read and count line feeds (in the harness)", peer: true,
		note: "the least any program spends to see every byte: each file read(2) into a reused 256 KiB buffer and its line feeds counted with bytes.Count, one goroutine per CPU, inside the harness (no process start, no pipeline, no pattern); its CPU is the harness's own getrusage",
		inproc: func() (sample, error) {
			paths, err := filepath.Glob(filepath.Join(dir, "*.log"))
			if err != nil {
				return sample{}, err
			}
			s, lines, err := readFloor(paths, runtime.NumCPU())
			if err == nil && lines != want.lines {
				err = fmt.Errorf("the floor counted %d lines, want %d", lines, want.lines)
			}
			return s, err
		}}
	w.cs = []*contender{flow, rg}
	if withGrep {
		w.cs = append(w.cs, grep1, grep2)
	}
	w.cs = append(w.cs, py, floor)
	w.targets = func() []target {
		rr := flow.rate() / rg.rate()
		rp := flow.rate() / py.rate()
		fp := floor.rate() / py.rate()
		ts := []target{{text: ">= rg -c ERROR (issue 19)", measured: fmt.Sprintf("%.2fx", rr), met: rr >= 1, na: math.IsNaN(rr)}}
		if withGrep {
			r1 := flow.rate() / grep1.rate()
			r2 := flow.rate() / grep2.rate()
			ts = append(ts,
				target{text: ">= grep -c ERROR (one pattern)", measured: fmt.Sprintf("%.2fx", r1), met: r1 >= 1, na: math.IsNaN(r1)},
				target{text: ">= grep -c ERROR + grep -c WARN", measured: fmt.Sprintf("%.2fx", r2), met: r2 >= 1, na: math.IsNaN(r2)})
		}
		return append(ts, target{text: ">= 20x the Python program", measured: fmt.Sprintf("%.1fx (the floor: %.1fx)", rp, fp), met: rp >= 20, na: math.IsNaN(rp)})
	}
	return w
}

// warmAndCount reads every log once, which puts them in the page cache for
// the first contender as for the others, and counts what every contender
// must find: lines, and lines containing ERROR.
func warmAndCount(dir string) (lines, errs int64, err error) {
	ents, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil {
		return 0, 0, err
	}
	buf := make([]byte, 1<<20) // one for all files: see harnessHWM
	for _, p := range ents {
		f, err := os.Open(p)
		if err != nil {
			return 0, 0, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(buf, len(buf))
		for sc.Scan() {
			lines++
			if bytes.Contains(sc.Bytes(), []byte("ERROR")) {
				errs++
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return 0, 0, err
		}
	}
	return lines, errs, nil
}

func (h *harness) resizeW() *workload {
	n, iw, ih := h.sz.images, h.sz.imgW, h.sz.imgH
	src := filepath.Join(h.out, "images", fmt.Sprintf("%dx%dx%d", n, iw, ih))
	w := &workload{id: "resize", title: fmt.Sprintf("resize: %d JPEGs %dx%d to 800x600, Lanczos, q85", n, iw, ih), unit: "images"}
	w.setup = func() error {
		key := fmt.Sprintf("v%d %d %d %d", genVersion, n, iw, ih)
		if err := cached(src, key, func(d string) error {
			fmt.Fprintf(os.Stderr, "bench: generating %d JPEGs of %dx%d in %s\n", n, iw, ih, d)
			return genImages(d, n, iw, ih, runtime.NumCPU())
		}); err != nil {
			return err
		}
		_, _, err := warmAndCount(src)
		return err
	}
	outDir := func(who string) string { return filepath.Join(h.out, "resized", who) }
	fresh := func(who string) error {
		if err := os.RemoveAll(outDir(who)); err != nil {
			return err
		}
		return os.MkdirAll(outDir(who), 0o755)
	}
	flow := &contender{name: "flow", units: float64(n),
		note: "glob -> resize (fit: exact, filter: lanczos, quality: 85), thread mode, workers: auto -> jsonl",
		prepare: func() (invocation, error) {
			return h.flowRun("resize.yaml", "resize.json", "", map[string]string{"src_dir": src, "out_dir": outDir("flow")}), fresh("flow")
		},
		check: func(s *sample, stderr string) error {
			if err := h.flowCheck("resize.json", n)(s, stderr); err != nil {
				return err
			}
			return checkResized(outDir("flow"), n)
		}}
	// The resize step can decode and encode with libjpeg-turbo through cgo
	// (go build -tags libjpeg), as Pillow does; the default build is pure Go.
	flowLJ := &contender{name: "flow -tags libjpeg", units: float64(n),
		note: "the same pipeline, flow built with `-tags libjpeg` (cgo, libjpeg-turbo decodes and encodes, as in Pillow)",
		prepare: func() (invocation, error) {
			return h.flowRunBin(h.flowLibjpeg, "resize.yaml", "resize-libjpeg.json", "", map[string]string{"src_dir": src, "out_dir": outDir("flow-libjpeg")}), fresh("flow-libjpeg")
		},
		check: func(s *sample, stderr string) error {
			if err := h.flowCheck("resize-libjpeg.json", n)(s, stderr); err != nil {
				return err
			}
			return checkResized(outDir("flow-libjpeg"), n)
		}}
	if h.flowLibjpeg == "" {
		flowLJ.skip = "flow does not build with -tags libjpeg here: " + h.libjpegErr
	}
	pil := &contender{name: "Pillow, ProcessPoolExecutor", peer: true, units: float64(n),
		note: "bench/python/resize.py: the guide's resize_all (Image.LANCZOS, quality=85), one process per CPU",
		prepare: func() (invocation, error) {
			return h.py("resize.py", src, outDir("pillow")), fresh("pillow")
		},
		check: func(_ *sample, _ string) error { return checkResized(outDir("pillow"), n) }}
	if !h.havePIL {
		pil.skip = "Pillow is missing for " + h.python + " (apt-get install python3-pil)"
	}
	vips := &contender{name: fmt.Sprintf("vipsthumbnail (xargs -P%d)", runtime.NumCPU()), peer: true, units: float64(n),
		note: "`find SRC -name '*.jpg' -print0 | xargs -0 -n 8 -P$(nproc) vipsthumbnail -s '800x600!' -o 'OUT/%s.jpg[Q=85]'` (Debian's libvips-tools): libvips' own thumbnailer, libjpeg-turbo, Lanczos3; it decodes the JPEG at a reduced scale first (shrink-on-load), which flow and Pillow do not",
		prepare: func() (invocation, error) {
			return invocation{argv: []string{"bash", "-c",
				`find "$1" -name '*.jpg' -print0 | xargs -0 -n 8 -P"$2" vipsthumbnail -s '800x600!' -o "$3/%s.jpg[Q=85]"`,
				"_", src, strconv.Itoa(runtime.NumCPU()), outDir("vips")}}, fresh("vips")
		},
		check: func(_ *sample, _ string) error { return checkResized(outDir("vips"), n) }}
	if !h.haveVips {
		vips.skip = "vipsthumbnail is missing (apt-get install libvips-tools)"
	}
	w.cs = []*contender{flow, flowLJ, pil, vips}
	w.targets = func() []target {
		r := flow.rate() / pil.rate()
		ts := []target{{text: "images/s >= Pillow (ProcessPoolExecutor)", measured: fmt.Sprintf("%.2fx (%.1f vs %.1f images/s)", r, flow.rate(), pil.rate()), met: r >= 1, na: math.IsNaN(r)}}
		if rv := flow.rate() / vips.rate(); !math.IsNaN(rv) {
			ts = append(ts, target{text: "images/s against vipsthumbnail (reported, no set target)", measured: fmt.Sprintf("%.2fx (%.1f vs %.1f images/s)", rv, flow.rate(), vips.rate()), met: rv >= 1})
		}
		if len(flowLJ.samples) > 0 {
			r := flowLJ.rate() / pil.rate()
			ts = append(ts, target{text: "images/s >= Pillow, flow built with -tags libjpeg", measured: fmt.Sprintf("%.2fx (%.1f vs %.1f images/s)", r, flowLJ.rate(), pil.rate()), met: r >= 1, na: math.IsNaN(r)})
		}
		return ts
	}
	return w
}

func checkResized(dir string, n int) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(ents) != n {
		return fmt.Errorf("%s holds %d files, want %d", dir, len(ents), n)
	}
	f, err := os.Open(filepath.Join(dir, ents[0].Name()))
	if err != nil {
		return err
	}
	defer f.Close()
	cfg, format, err := image.DecodeConfig(f)
	if err != nil {
		return fmt.Errorf("%s: %v", f.Name(), err)
	}
	if cfg.Width != 800 || cfg.Height != 600 || format != "jpeg" {
		return fmt.Errorf("%s is a %dx%d %s, want an 800x600 jpeg", f.Name(), cfg.Width, cfg.Height, format)
	}
	return nil
}

func (h *harness) fetchW() *workload {
	n, workers, delay := h.sz.fetchN, h.sz.fetchWorkers, h.sz.fetchDelay
	ideal := time.Duration(n) * delay / time.Duration(workers)
	w := &workload{id: "fetch", title: fmt.Sprintf("fetch: %s requests, server answers after %s, %d workers", thousands(n), delay, workers), unit: "requests"}
	flow := &contender{name: "flow", units: float64(n),
		note: "range -> fetch `${ vars.base }/${ item }` (decode: text), workers: 50 -> jsonl",
		prepare: func() (invocation, error) {
			h.srv.reset()
			return h.flowRun("fetch.yaml", "fetch.json", "", map[string]string{"base": h.srv.url, "n": strconv.Itoa(n)}), nil
		},
		check: func(s *sample, stderr string) error {
			if err := h.flowCheck("fetch.json", n)(s, stderr); err != nil {
				return err
			}
			return h.srv.expect(n)
		}}
	py := &contender{name: "ThreadPoolExecutor (urllib)", peer: true, units: float64(n),
		note: "bench/python/fetch.py: urllib.request.urlopen in ThreadPoolExecutor(max_workers=50)",
		prepare: func() (invocation, error) {
			h.srv.reset()
			return h.py("fetch.py", h.srv.url, strconv.Itoa(n), strconv.Itoa(workers), "0"), nil
		},
		check: func(s *sample, stderr string) error {
			if err := pyCheck("ok", n)(s, stderr); err != nil {
				return err
			}
			return h.srv.expect(n)
		}}
	floor := &contender{name: "floor: Go net/http client in the harness", peer: true, units: float64(n),
		note: "50 goroutines looping over http.Get inside the harness process: no process start, no pipeline; what this machine allows at this moment (sleep overshoot and scheduling under load included)",
		inproc: func() (sample, error) {
			h.srv.reset()
			start := time.Now()
			err := httpLoop(h.srv.url, n, workers)
			s := sample{wall: time.Since(start)}
			if err == nil {
				err = h.srv.expect(n)
			}
			return s, err
		}}
	w.cs = []*contender{flow, py, floor}
	w.targets = func() []target {
		wall := flow.medianWall()
		off := (wall.Seconds() - ideal.Seconds()) / ideal.Seconds()
		fl := floor.medianWall()
		return []target{{text: fmt.Sprintf("wall within 10%% of %s", ideal),
			measured: fmt.Sprintf("%.3fs (%+.1f%%; the in-process floor took %.3fs, %+.1f%%)", wall.Seconds(), off*100, fl.Seconds(), (fl.Seconds()-ideal.Seconds())/ideal.Seconds()*100),
			met:      math.Abs(off) <= 0.10}}
	}
	return w
}

func (h *harness) fetchRatedW() *workload {
	n, workers, rate := h.sz.fetchRatedN, h.sz.fetchWorkers, h.sz.rate
	w := &workload{id: "fetch-rate", title: fmt.Sprintf("fetch with rate: %g/s: %s requests, %d workers", rate, thousands(n), workers), unit: "requests"}
	measured := func(s *sample) error {
		r, err := h.srv.rate()
		s.extra = r
		return err
	}
	flow := &contender{name: "flow", units: float64(n),
		note: "fetch.yaml with `rate: 100/s` (burst 1); the rate is measured at the server: (n-1) / (last arrival - first arrival)",
		prepare: func() (invocation, error) {
			h.srv.reset()
			return h.flowRun("fetch_rate.yaml", "fetch-rate.json", "", map[string]string{"base": h.srv.url, "n": strconv.Itoa(n)}), nil
		},
		check: func(s *sample, stderr string) error {
			if err := h.flowCheck("fetch-rate.json", n)(s, stderr); err != nil {
				return err
			}
			if err := h.srv.expect(n); err != nil {
				return err
			}
			return measured(s)
		}}
	py := &contender{name: "ThreadPoolExecutor (urllib) + pacing lock", peer: true, units: float64(n),
		note: "bench/python/fetch.py with a lock that spaces request starts 1/rate apart (concurrent.futures has no rate limiter)",
		prepare: func() (invocation, error) {
			h.srv.reset()
			return h.py("fetch.py", h.srv.url, strconv.Itoa(n), strconv.Itoa(workers), strconv.FormatFloat(rate, 'g', -1, 64)), nil
		},
		check: func(s *sample, stderr string) error {
			if err := pyCheck("ok", n)(s, stderr); err != nil {
				return err
			}
			if err := h.srv.expect(n); err != nil {
				return err
			}
			return measured(s)
		}}
	w.cs = []*contender{flow, py}
	w.targets = func() []target {
		r := flow.medianExtra()
		off := (r - rate) / rate
		return []target{{text: fmt.Sprintf("measured rate within 2%% of %g/s", rate), measured: fmt.Sprintf("%.2f/s (%+.2f%%)", r, off*100), met: math.Abs(off) <= 0.02}}
	}
	return w
}

func (h *harness) processW() *workload {
	n, np := h.sz.processN, h.sz.processParallel
	w := &workload{id: "process", title: fmt.Sprintf("process mode: %s tiny items", thousands(n)), unit: "items"}
	flow := &contender{name: "flow", units: float64(n),
		note: "range -> compute `${ item * 2 }` in `mode: process`, workers: auto -> jsonl",
		prepare: func() (invocation, error) {
			return h.flowRun("process.yaml", "process.json", "", map[string]string{"n": strconv.Itoa(n)}), nil
		},
		check: h.flowCheck("process.json", n)}
	parOut := filepath.Join(h.out, "tmp", "process.parallel.txt")
	par := &contender{name: fmt.Sprintf("GNU parallel (%s items)", thousands(np)), peer: true, units: float64(np),
		note: fmt.Sprintf("`seq %d | parallel -j$(nproc) echo`: one process per item, as parallel works; on %s items only, since it is slow: compare items/s", np, thousands(np)),
		prepare: func() (invocation, error) {
			return invocation{argv: []string{"bash", "-c", `seq 1 "$1" | parallel --will-cite -j"$2" echo`, "_", strconv.Itoa(np), strconv.Itoa(runtime.NumCPU())}, stdout: parOut}, nil
		},
		check: func(*sample, string) error {
			b, err := os.ReadFile(parOut)
			if err == nil && bytes.Count(b, []byte("\n")) != np {
				err = fmt.Errorf("parallel printed %d lines, want %d", bytes.Count(b, []byte("\n")), np)
			}
			return err
		}}
	// parallel --pipe is how GNU parallel batches: it cuts stdin into
	// blocks and pipes each block to a command. Two ways, as with
	// ProcessPoolExecutor's chunksize: a new process per block of 1,000
	// lines (-N1000), or --round-robin, where $(nproc) long-lived processes
	// take turns reading 16 KiB blocks, as flow's workers do. awk does the
	// doubling; the harness checks the count and the sum of the results.
	pipeOut := func(mode string) string { return filepath.Join(h.out, "tmp", "process.parallel-pipe-"+mode+".txt") }
	pipeCheck := func(mode string) func(*sample, string) error {
		return func(*sample, string) error {
			lines, sum, err := countSum(pipeOut(mode))
			if err == nil && (lines != int64(n) || sum != int64(n)*int64(n+1)) {
				err = fmt.Errorf("parallel --pipe printed %d lines summing to %d, want %d summing to %d", lines, sum, n, int64(n)*int64(n+1))
			}
			return err
		}
	}
	pipeRun := func(mode string, opts ...string) func() (invocation, error) {
		return func() (invocation, error) {
			script := `seq 1 "$1" | parallel --will-cite --pipe -j"$2" ` + strings.Join(opts, " ") + ` awk "'{print \$1*2}'"` // parallel hands the command to a shell: quoted twice
			return invocation{argv: []string{"bash", "-c", script, "_", strconv.Itoa(n), strconv.Itoa(runtime.NumCPU())}, stdout: pipeOut(mode)}, nil
		}
	}
	parN := &contender{name: "GNU parallel --pipe -N1000 (awk)", peer: true, units: float64(n),
		note:    "`seq N | parallel --pipe -N1000 -j$(nproc) awk '{print $1*2}'`: a new awk per block of 1,000 lines (like chunksize=1000, with a process start per chunk)",
		prepare: pipeRun("n1000", "-N1000"),
		check:   pipeCheck("n1000")}
	parRR := &contender{name: "GNU parallel --pipe --round-robin (awk)", peer: true, units: float64(n),
		note:    "`seq N | parallel --pipe --round-robin --block 16k -j$(nproc) awk '{print $1*2}'`: $(nproc) long-lived awk processes fed 16 KiB blocks of lines in turn; a byte stream, no per-item result, error or order",
		prepare: pipeRun("rr", "--round-robin", "--block", "16k"),
		check:   pipeCheck("rr")}
	if !h.haveParallel {
		par.skip = "GNU parallel is missing (apt-get install parallel)"
		parN.skip, parRR.skip = par.skip, par.skip
	}
	ns := h.sz.processSlow
	ppe := &contender{name: fmt.Sprintf("ProcessPoolExecutor.map (%s items)", thousands(ns)), peer: true, units: float64(ns),
		note:    fmt.Sprintf("bench/python/process.py: `ex.map(double, range(n))` with the default chunksize=1, as the guide writes it; on %s items only, since it is slow: compare items/s", thousands(ns)),
		prepare: func() (invocation, error) { return h.py("process.py", strconv.Itoa(ns), "1"), nil },
		check:   pyCheck("items", ns)}
	ppe1k := &contender{name: "ProcessPoolExecutor.map(chunksize=1000)", peer: true, units: float64(n),
		note:    "the same with chunksize=1000: items shipped to workers in batches",
		prepare: func() (invocation, error) { return h.py("process.py", strconv.Itoa(n), "1000"), nil },
		check:   pyCheck("items", n)}
	w.cs = []*contender{flow, par, parN, parRR, ppe, ppe1k}
	w.targets = func() []target {
		// Issue 19's target; the whole flow run is timed (process start,
		// worker start, pipeline parsing), not only the process stage.
		r := flow.rate()
		ts := []target{{text: ">= 1,000,000 items/s through a process stage on this machine (issue 19)", measured: fmt.Sprintf("%s items/s", thousands(int(r))), met: r >= 1_000_000}}
		for _, c := range w.cs[1:] {
			r := flow.rate() / c.rate()
			what := " (reported, no set target)"
			if c == ppe1k || c == parRR {
				what = " (issue 19: ahead of it)"
			}
			ts = append(ts, target{text: "items/s against " + c.name + what, measured: fmt.Sprintf("%.2fx", r), met: r >= 1, na: math.IsNaN(r)})
		}
		return ts
	}
	return w
}

// clusterW: trivial items through a mode: cluster stage (embedded NATS
// JetStream, in-process workers) beside the same stage in mode: process.
func (h *harness) clusterW() *workload {
	n := h.sz.clusterN
	w := &workload{id: "cluster", title: fmt.Sprintf("cluster mode: %s tiny items over JetStream", thousands(n)), unit: "items"}
	flow := &contender{name: "flow, mode: cluster", units: float64(n),
		note: "range -> compute `${ item * 2 }` in `mode: cluster`: an embedded NATS server, in-process workers, every item through the work and results streams",
		prepare: func() (invocation, error) {
			return h.flowRun("cluster.yaml", "cluster.json", "", map[string]string{"n": strconv.Itoa(n)}), nil
		},
		check: h.flowCheck("cluster.json", n)}
	proc := &contender{name: "flow, mode: process", peer: true, units: float64(n),
		note: "the same stage in `mode: process` (bench/pipelines/process.yaml)",
		prepare: func() (invocation, error) {
			return h.flowRun("process.yaml", "cluster-process.json", "", map[string]string{"n": strconv.Itoa(n)}), nil
		},
		check: h.flowCheck("cluster-process.json", n)}
	w.cs = []*contender{flow, proc}
	w.targets = func() []target {
		r := flow.rate()
		return []target{
			{text: ">= 100,000 items/s through a cluster stage (issue 15)", measured: fmt.Sprintf("%s items/s", thousands(int(r))), met: r >= 100_000},
			{text: "against mode: process (reported, no set target)", measured: fmt.Sprintf("%.2fx", r/proc.rate()), met: r >= proc.rate(), na: math.IsNaN(r / proc.rate())},
		}
	}
	return w
}

// httpLoop makes n GET requests on workers goroutines, reading each body.
func httpLoop(base string, n, workers int) error {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	defer client.CloseIdleConnections()
	next := make(chan int)
	errc := make(chan error, workers)
	for range workers {
		go func() {
			var first error
			for i := range next {
				resp, err := client.Get(fmt.Sprintf("%s/item/%d", base, i))
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err != nil && first == nil {
					first = err
				}
			}
			errc <- first
		}()
	}
	for i := 1; i <= n; i++ {
		next <- i
	}
	close(next)
	var first error
	for range workers {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func eachJSONLine(path string, fn func(map[string]any)) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return fmt.Errorf("%s: %v", path, err)
		}
		fn(m)
	}
	return sc.Err()
}

func num(v any) float64 {
	f, _ := v.(float64)
	return f
}

// countSum counts the lines of path and adds the integers they hold.
func countSum(path string) (lines, sum int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, err := strconv.ParseInt(strings.TrimSpace(sc.Text()), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %q is not an integer", path, sc.Text())
		}
		lines++
		sum += v
	}
	return lines, sum, sc.Err()
}

// sumCounts adds the counts of rg -c's "path:count" lines.
func sumCounts(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l == "" {
			continue
		}
		i := strings.LastIndexByte(l, ':')
		v, err := strconv.ParseInt(l[i+1:], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %q is not a path:count line", path, l)
		}
		sum += v
	}
	return sum, nil
}

// sumInts adds the integers of the lines of path that start with prefix.
func sumInts(path, prefix string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if !strings.HasPrefix(l, prefix) {
			continue
		}
		v, err := strconv.ParseInt(strings.TrimSpace(strings.TrimPrefix(l, prefix)), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %q is not a count", path, l)
		}
		sum += v
	}
	return sum, nil
}

func thousands(n int) string {
	s := strconv.Itoa(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

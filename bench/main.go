// Command bench runs flow and the programs people would use instead
// (Python concurrent.futures, GNU parallel, grep, Pillow) on the same work,
// alternately, on this machine, and reports medians and ratios:
//
//	go run ./bench              # every workload, 3 runs each (several minutes)
//	go run ./bench --runs 5 --only engine,resize
//	go run ./bench --smoke      # tiny sizes, one run: seconds; keeps the harness working in CI
//
// It builds flow into bench/out/flow, generates its inputs under bench/out
// (cached between runs) and writes the Markdown table to stdout and to
// bench/out/results.md.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

type harness struct {
	root, out string
	flowBin   string
	// flowLibjpeg is flow built with -tags libjpeg, "" when it does not
	// build (no cgo or no libjpeg headers); libjpegErr says why.
	flowLibjpeg, libjpegErr string
	python                  string
	sz                      sizes
	smoke                   bool
	srv                     *slowServer

	machine               machineInfo
	flowBuild             string // the go build command of the flow measured
	havePython            bool
	havePIL, haveParallel bool
	haveRg, haveVips      bool
	missing               []string
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	runs := flag.Int("runs", 3, "timed runs of every contender (alternating flow and its peers)")
	smoke := flag.Bool("smoke", false, "tiny sizes and one run: checks that every workload still works, in seconds; the numbers mean nothing")
	only := flag.String("only", "", "comma-separated workloads to run: engine, memory, analyze-logs, analyze-logs-small, resize, fetch, fetch-rate, process, cluster")
	install := flag.String("install", "auto", "install missing peers with apt-get: auto (yes unless --smoke), yes or no")
	flowBin := flag.String("flow", "", "use this flow binary instead of building ./cmd/flow")
	profile := flag.Bool("profile", false, "run flow built with a CPU profile (./bench/flowprof) and keep the last run's profile of every workload in bench/out/profiles/WORKLOAD.cpu, for go tool pprof")
	python := flag.String("python", "/usr/bin/python3", "the Python that runs the baselines (Debian's, where python3-pil installs Pillow)")
	flag.Parse()
	if *runs < 1 {
		return errors.New("--runs must be at least 1")
	}

	root, err := moduleRoot()
	if err != nil {
		return err
	}
	h := &harness{root: root, out: filepath.Join(root, "bench", "out"), python: *python, sz: fullSizes, smoke: *smoke}
	if *smoke {
		h.sz = smokeSizes
		if !isFlagSet("runs") {
			*runs = 1
		}
	}
	for _, d := range []string{"reports", "tmp"} {
		if err := os.MkdirAll(filepath.Join(h.out, d), 0o755); err != nil {
			return err
		}
	}

	doInstall := *install == "yes" || (*install == "auto" && !*smoke)
	h.findPeers(doInstall)

	// Chosen once to check --only and to know what to build, and again
	// once the builds are known (a contender is skipped when its build fails).
	ws, err := h.selected(*only)
	if err != nil {
		return err
	}

	if *flowBin != "" {
		h.flowBin = *flowBin
		h.flowBuild = "the binary given with --flow " + *flowBin
	} else {
		name, pkg := "flow", "./cmd/flow"
		if *profile {
			name, pkg = "flowprof", "./bench/flowprof"
			if err := os.MkdirAll(filepath.Join(h.out, "profiles"), 0o755); err != nil {
				return err
			}
		}
		h.flowBin = filepath.Join(h.out, name)
		if out, err := h.build(h.flowBin, pkg); err != nil {
			return fmt.Errorf("building flow: %v\n%s", err, out)
		}
		if findW(ws, "resize") != nil {
			lj := filepath.Join(h.out, name+"-libjpeg")
			if out, err := h.build(lj, pkg, "-tags", "libjpeg"); err != nil {
				h.libjpegErr = firstLine(string(out))
				fmt.Fprintf(os.Stderr, "bench: flow does not build with -tags libjpeg (%s): that contender is skipped\n", h.libjpegErr)
			} else {
				h.flowLibjpeg = lj
			}
		}
	}
	if ws, err = h.selected(*only); err != nil {
		return err
	}

	h.srv, err = startServer(h.sz.fetchDelay)
	if err != nil {
		return err
	}
	defer h.srv.close()

	h.machine = collectMachine(root)
	h.machine.Build = h.flowBuild
	h.machine.LoadStart = loadAvg()
	ctx := context.Background()
	timeout := 15 * time.Minute
	if *smoke {
		timeout = 2 * time.Minute
	}
	var failures []string
	for _, w := range ws {
		if w.setup != nil {
			if err := w.setup(); err != nil {
				return fmt.Errorf("%s: preparing the inputs: %v", w.id, err)
			}
		}
		for r := 1; r <= *runs; r++ {
			for _, c := range w.cs {
				if c.skip != "" || c.borrow != nil {
					continue
				}
				var (
					s      sample
					stderr string
					err    error // this run's: neither the error of the run before nor shadowed below
				)
				if c.inproc != nil {
					s, err = c.inproc()
				} else {
					var inv invocation
					inv, err = c.prepare()
					if err != nil {
						return fmt.Errorf("%s / %s: %v", w.id, c.name, err)
					}
					if inv.argv[0] == h.python && !h.havePython {
						c.skip = "python3 is missing"
						continue
					}
					if *profile && !c.peer {
						// The second flow contender (resize's libjpeg build)
						// must not overwrite the first one's profile.
						name := w.id
						if c != w.flow() {
							name += "-" + slug(c.name)
						}
						inv.env = append(inv.env, "FLOW_CPUPROFILE="+filepath.Join(h.out, "profiles", name+".cpu"))
					}
					s, stderr, err = runOnce(ctx, inv, timeout)
				}
				if err == nil && c.check != nil {
					err = c.check(&s, stderr)
				}
				if err != nil {
					// A wrong or failed run is not a measurement: report it
					// and drop the contender from this workload.
					failures = append(failures, fmt.Sprintf("%s / %s: %v", w.id, c.name, err))
					fmt.Fprintf(os.Stderr, "bench: %s / %s: FAILED: %v\n", w.id, c.name, err)
					c.skip = "failed: " + firstLine(err.Error())
					c.samples = nil
					continue
				}
				c.samples = append(c.samples, s)
				fmt.Fprintf(os.Stderr, "bench: %-12s run %d/%d  %-42s %8.3fs wall %8.3fs CPU %8.1f MB\n", w.id, r, *runs, c.name, s.wall.Seconds(), s.cpu.Seconds(), float64(s.rssKB)/1024)
			}
		}
	}

	h.machine.LoadEnd = loadAvg()
	var buf bytes.Buffer
	h.writeMarkdown(&buf, ws, *runs)
	os.Stdout.Write(buf.Bytes())
	if err := os.WriteFile(filepath.Join(h.out, "results.md"), buf.Bytes(), 0o644); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(h.out, "results.json"), h.results(ws, *runs)); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: wrote %s and %s\n", filepath.Join(h.out, "results.md"), filepath.Join(h.out, "results.json"))
	if len(failures) > 0 {
		return fmt.Errorf("%d contender(s) failed:\n  %s", len(failures), strings.Join(failures, "\n  "))
	}
	return nil
}

// build runs go build in the checkout, as the README's release build
// (`CGO_ENABLED=0 go build -trimpath -ldflags=-s`), so that the figures
// are those of the binary users are told to deploy: without cgo a flow
// process is static and starts about 4 ms sooner (no dynamic linker, no
// pthreads), which shows in every short run. Only -tags libjpeg needs cgo.
// The profiling build keeps its symbol table for pprof.
func (h *harness) build(out, pkg string, flags ...string) ([]byte, error) {
	cgo := "0"
	for _, f := range flags {
		if f == "libjpeg" {
			cgo = "1"
		}
	}
	ld := []string{"-trimpath", "-ldflags=-s"}
	if pkg != "./cmd/flow" {
		ld = ld[:1]
	}
	args := append(append(append([]string{"build"}, ld...), flags...), "-o", out, pkg)
	shown := append([]string(nil), args...)
	if rel, err := filepath.Rel(h.root, out); err == nil {
		shown[len(shown)-2] = rel // the checkout's path says nothing about the build
	}
	line := fmt.Sprintf("CGO_ENABLED=%s go %s", cgo, strings.Join(shown, " "))
	if h.flowBuild == "" {
		h.flowBuild = line
	}
	fmt.Fprintf(os.Stderr, "bench: %s\n", line)
	cmd := exec.Command("go", args...)
	cmd.Dir = h.root
	cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgo)
	return cmd.CombinedOutput()
}

// slug keeps the letters and digits of s, dashes for the rest.
func slug(s string) string {
	f := strings.FieldsFunc(strings.ToLower(s), func(r rune) bool { return !('a' <= r && r <= 'z' || '0' <= r && r <= '9') })
	return strings.Join(f, "-")
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func isFlagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// selected builds the workloads named by only (all when empty).
func (h *harness) selected(only string) ([]*workload, error) {
	ws := h.workloads()
	eng := findW(ws, "engine")
	if only != "" {
		var err error
		if ws, err = selectWorkloads(ws, only); err != nil {
			return nil, err
		}
	}
	// The Python map of the engine workload stands beside the memory figure:
	// at ten times the items it would need tens of GB. When the engine
	// workload is not selected its samples stay empty and the row says so.
	if mem := findW(ws, "memory"); mem != nil {
		mem.cs = append(mem.cs, &contender{name: "ThreadPoolExecutor.map (" + thousands(h.sz.engineN) + " items)", peer: true,
			borrow: eng.find("ThreadPoolExecutor.map"),
			note:   "the engine row's Python map, at a tenth of the items: it submits every item before the first result, so its memory grows with the input"})
	}
	return ws, nil
}

func findW(ws []*workload, id string) *workload {
	for _, w := range ws {
		if w.id == id {
			return w
		}
	}
	return nil
}

func selectWorkloads(all []*workload, only string) ([]*workload, error) {
	var out []*workload
	for _, id := range strings.Split(only, ",") {
		w := findW(all, strings.TrimSpace(id))
		if w == nil {
			var ids []string
			for _, w := range all {
				ids = append(ids, w.id)
			}
			return nil, fmt.Errorf("--only: no workload %q; choose among %s", id, strings.Join(ids, ", "))
		}
		out = append(out, w)
	}
	return out, nil
}

// moduleRoot finds the flow checkout from the working directory up, so the
// harness runs from anywhere inside it.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/flowrun/flow\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run from inside the flow checkout (no go.mod of github.com/flowrun/flow above the working directory)")
		}
		dir = parent
	}
}

// findPeers checks for the peers that are not part of a base system
// (Pillow, GNU parallel, ripgrep, libvips' vipsthumbnail) and, when allowed
// and possible (root with apt-get), installs the Debian packages that are
// missing. A peer still missing is skipped, and said so in the report:
// the harness never fails for want of one.
func (h *harness) findPeers(install bool) {
	if _, err := os.Stat(h.python); err != nil {
		if p, err := exec.LookPath("python3"); err == nil {
			h.python = p
		}
	}
	runs := func(name string, args ...string) bool {
		if _, err := exec.LookPath(name); err != nil {
			return false
		}
		return exec.Command(name, args...).Run() == nil
	}
	check := func() {
		pilOut, pilErr := exec.Command(h.python, "-c", "import PIL.Image").CombinedOutput()
		h.havePIL = pilErr == nil
		if pilErr != nil {
			fmt.Fprintf(os.Stderr, "bench: %s cannot import PIL.Image: %v %s\n", h.python, pilErr, pilOut)
		}
		out, _ := exec.Command("parallel", "--version").Output()
		h.haveParallel = bytes.Contains(out, []byte("GNU parallel"))
		h.haveRg = runs("rg", "--version")
		h.haveVips = runs("vipsthumbnail", "--vips-version")
	}
	check()
	var pkgs []string
	for _, p := range []struct {
		have bool
		pkg  string
	}{{h.havePIL, "python3-pil"}, {h.haveParallel, "parallel"}, {h.haveRg, "ripgrep"}, {h.haveVips, "libvips-tools"}} {
		if !p.have {
			pkgs = append(pkgs, p.pkg)
		}
	}
	if len(pkgs) > 0 && install {
		if _, err := exec.LookPath("apt-get"); err != nil || os.Geteuid() != 0 {
			fmt.Fprintf(os.Stderr, "bench: cannot install %s: needs root and apt-get\n", strings.Join(pkgs, " "))
		} else {
			fmt.Fprintf(os.Stderr, "bench: apt-get install -y %s\n", strings.Join(pkgs, " "))
			apt := func(args ...string) error {
				cmd := exec.Command("apt-get", args...)
				cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
				cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
				return cmd.Run()
			}
			if apt(append([]string{"install", "-y", "-q"}, pkgs...)...) != nil {
				// A fresh container has no package lists yet.
				_ = apt("update", "-q")
				_ = apt(append([]string{"install", "-y", "-q"}, pkgs...)...)
			}
			check()
		}
	}
	if !h.havePIL {
		h.missing = append(h.missing, "Pillow (python3-pil) for "+h.python+": the resize peer is skipped")
	}
	if !h.haveParallel {
		h.missing = append(h.missing, "GNU parallel: the process-mode peers are skipped")
	}
	if !h.haveRg {
		h.missing = append(h.missing, "ripgrep (rg): the analyze-logs peer rg -c is skipped")
	}
	if !h.haveVips {
		h.missing = append(h.missing, "libvips-tools (vipsthumbnail): that resize peer is skipped")
	}
	if _, err := os.Stat(h.python); err != nil {
		h.missing = append(h.missing, "python3: every Python peer is skipped")
	} else {
		h.havePython = true
	}
	for _, m := range h.missing {
		fmt.Fprintln(os.Stderr, "bench: MISSING", m)
	}
}

func (h *harness) writeMarkdown(w io.Writer, ws []*workload, runs int) {
	mode := fmt.Sprintf("%d run(s) per contender, alternating; wall and CPU time as median [min-max] over the runs, throughput and ratios at the median wall time; peak RSS is the largest single process (wait4 ru_maxrss), max over the runs", runs)
	if h.smoke {
		mode = "SMOKE: tiny sizes, the numbers mean nothing. " + mode
	}
	fmt.Fprintf(w, "# flow benchmarks\n\n%s (other work on the machine slows every contender alike, but adds noise; CPU time is steadier than wall time)\n\n%s.\n\n",
		h.machine.markdown(), mode)
	if len(h.missing) > 0 {
		fmt.Fprintf(w, "Missing peers: %s.\n\n", strings.Join(h.missing, "; "))
	}
	fmt.Fprintln(w, "| workload | contender | wall median [min-max] | CPU median [min-max] | throughput | peak RSS | peer/flow |")
	fmt.Fprintln(w, "| --- | --- | ---: | ---: | ---: | ---: | ---: |")
	var notes []string
	masked := false
	for _, wl := range ws {
		f := wl.flow()
		for _, c := range wl.cs {
			ratio := ""
			if c.peer && c.borrow == nil && len(c.results()) > 0 && len(f.results()) > 0 {
				// Per unit of work, so that a peer run on fewer items
				// compares fairly: >1 means flow is faster.
				ratio = fmt.Sprintf("%.2fx", f.rate()/c.rate())
			}
			if c.skip != "" || len(c.results()) == 0 {
				why := c.skip
				if why == "" {
					why = "not run"
				}
				fmt.Fprintf(w, "| %s | %s | %s | | | | |\n", wl.title, c.name, why)
				continue
			}
			ws, cs := spreadOf(c.walls()), spreadOf(c.cpus())
			wall := fmt.Sprintf("%.3fs [%.3f-%.3f]", ws.Median, ws.Min, ws.Max)
			cpu, rss := fmt.Sprintf("%.3fs [%.3f-%.3f]", cs.Median, cs.Min, cs.Max), fmt.Sprintf("%.1f MB", c.peakRSSMB())
			if c.rssMasked() {
				rss = fmt.Sprintf("<= %.1f MB", c.peakRSSMB())
				masked = true
			}
			if c.inproc != nil {
				rss = "-" // the harness's own
				if c.medianCPU() == 0 {
					cpu = "-"
				}
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s %s/s | %s | %s |\n", wl.title, c.name, wall, cpu, human(c.rate()), wl.unit, rss, ratio)
			if c.note != "" {
				notes = append(notes, fmt.Sprintf("- %s / %s: %s", wl.id, c.name, c.note))
			}
		}
	}
	if masked {
		fmt.Fprintln(w, "\n\"<= X MB\": the harness's own peak RSS was X MB when this contender started, and Linux carries the peak of the memory a child is started from (Go starts children with vfork) into the child's ru_maxrss: the contender's true peak is at most X.")
	}
	fmt.Fprintln(w, "\n| target | measured | met |")
	fmt.Fprintln(w, "| --- | --- | --- |")
	for _, wl := range ws {
		if wl.targets == nil || len(wl.flow().samples) == 0 {
			continue
		}
		for _, t := range wl.targets() {
			met := "no"
			switch {
			case t.na:
				met = "n/a (peer missing)"
				t.measured = "-"
			case t.met:
				met = "yes"
			}
			fmt.Fprintf(w, "| %s: %s | %s | %s |\n", wl.id, t.text, t.measured, met)
		}
	}
	fmt.Fprintf(w, "\nWhat ran:\n\n%s\n", strings.Join(notes, "\n"))
}

func human(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.1fk", v/1e3)
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.1f", v)
	}
}

// loadAvg is the 1, 5 and 15 minute load averages: a busy machine
// explains noisy figures, and the longer averages say whether it was busy
// before the harness started.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func goVersion() string {
	out, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		return runtime.Version()
	}
	return strings.TrimSpace(string(out))
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

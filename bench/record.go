package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// machineInfo is what a figure needs to be reproduced: the CPU, its vector
// extensions (the analyze-logs kernel needs AVX2), the kernel (read(2) and
// page-fault prices), the toolchain, the commit and whether the machine was
// idle.
type machineInfo struct {
	CPUModel   string   `json:"cpu_model"`
	CPUFlags   []string `json:"cpu_flags"` // the ones that matter here, of /proc/cpuinfo's
	CPUs       int      `json:"cpus"`
	GOMAXPROCS int      `json:"gomaxprocs"`
	Kernel     string   `json:"kernel"`
	OSArch     string   `json:"os_arch"`
	Go         string   `json:"go"`
	Commit     string   `json:"commit"`
	Dirty      bool     `json:"dirty"`
	Date       string   `json:"date"`
	LoadStart  string   `json:"load_start"` // /proc/loadavg's 1, 5 and 15 minute averages
	LoadEnd    string   `json:"load_end"`
	Build      string   `json:"build"` // how the flow binary measured was built
}

// flagsOfInterest are the CPU features the figures depend on.
var flagsOfInterest = []string{"sse4_2", "popcnt", "avx", "avx2", "bmi2", "avx512f", "avx512bw", "avx512vl", "hypervisor"}

func collectMachine(root string) machineInfo {
	m := machineInfo{CPUModel: "unknown", CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0),
		OSArch: runtime.GOOS + "/" + runtime.GOARCH, Go: goVersion(), Date: time.Now().UTC().Format(time.RFC3339)}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(l, ":")
			if !ok {
				continue
			}
			switch strings.TrimSpace(k) {
			case "model name":
				if m.CPUModel == "unknown" {
					m.CPUModel = strings.TrimSpace(v)
				}
			case "flags":
				if m.CPUFlags == nil {
					have := strings.Fields(v)
					m.CPUFlags = []string{}
					for _, f := range flagsOfInterest {
						if slices.Contains(have, f) {
							m.CPUFlags = append(m.CPUFlags, f)
						}
					}
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	} else if out, err := exec.Command("uname", "-r").Output(); err == nil {
		m.Kernel = strings.TrimSpace(string(out))
	}
	git := func(args ...string) string {
		cmd := exec.Command("git", args...)
		cmd.Dir = root
		out, err := cmd.Output()
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(out))
	}
	m.Commit = git("rev-parse", "HEAD")
	if m.Commit == "" {
		m.Commit = "unknown"
	}
	m.Dirty = git("status", "--porcelain", "--untracked-files=no") != ""
	return m
}

func (m machineInfo) markdown() string {
	dirty := ""
	if m.Dirty {
		dirty = " (with uncommitted changes)"
	}
	build := ""
	if m.Build != "" {
		build = ", flow built with `" + m.Build + "`"
	}
	return fmt.Sprintf("%d CPUs (%s; %s), GOMAXPROCS %d, %s, Linux kernel %s, %s, commit %s%s%s, %s; load average (1, 5, 15 min) %s at the start, %s at the end",
		m.CPUs, m.CPUModel, strings.Join(m.CPUFlags, " "), m.GOMAXPROCS, m.OSArch, m.Kernel, m.Go, shortCommit(m.Commit), dirty, build, m.Date, m.LoadStart, m.LoadEnd)
}

func shortCommit(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}

// spread is the minimum, median and maximum of a figure over its runs.
type spread struct {
	Min    float64 `json:"min"`
	Median float64 `json:"median"`
	Max    float64 `json:"max"`
}

func spreadOf(ds []time.Duration) spread {
	if len(ds) == 0 {
		return spread{math.NaN(), math.NaN(), math.NaN()}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return spread{s[0].Seconds(), medianDur(s).Seconds(), s[len(s)-1].Seconds()}
}

func (c *contender) walls() []time.Duration {
	var ds []time.Duration
	for _, s := range c.results() {
		ds = append(ds, s.wall)
	}
	return ds
}

func (c *contender) cpus() []time.Duration {
	var ds []time.Duration
	for _, s := range c.results() {
		ds = append(ds, s.cpu)
	}
	return ds
}

// jsonResults is bench/out/results.json: everything the Markdown table
// shows, and every run's figures.
type jsonResults struct {
	Machine   machineInfo    `json:"machine"`
	Runs      int            `json:"runs"`
	Smoke     bool           `json:"smoke"`
	Missing   []string       `json:"missing_peers"`
	Workloads []jsonWorkload `json:"workloads"`
}

type jsonWorkload struct {
	ID         string           `json:"id"`
	Title      string           `json:"title"`
	Unit       string           `json:"unit"`
	Contenders []jsonContender  `json:"contenders"`
	Targets    []map[string]any `json:"targets"`
}

type jsonContender struct {
	Name        string    `json:"name"`
	Peer        bool      `json:"peer"`
	InHarness   bool      `json:"in_harness,omitempty"`
	Skipped     string    `json:"skipped,omitempty"`
	Units       float64   `json:"units"`
	WallSeconds spread    `json:"wall_s"`
	CPUSeconds  spread    `json:"cpu_s"`
	RatePerSec  spread    `json:"rate_per_s"` // units per second at the max, median and min wall
	PeakRSSMB   float64   `json:"peak_rss_mb"`
	FlowRatio   float64   `json:"flow_ratio,omitempty"` // flow's rate over this peer's, at the medians
	Walls       []float64 `json:"walls_s"`
	CPUs        []float64 `json:"cpus_s"`
	Note        string    `json:"note,omitempty"`
}

func (h *harness) results(ws []*workload, runs int) jsonResults {
	out := jsonResults{Machine: h.machine, Runs: runs, Smoke: h.smoke, Missing: h.missing}
	for _, wl := range ws {
		jw := jsonWorkload{ID: wl.id, Title: wl.title, Unit: wl.unit}
		f := wl.flow()
		for _, c := range wl.cs {
			u := c.units
			if c.borrow != nil {
				u = c.borrow.units
			}
			jc := jsonContender{Name: c.name, Peer: c.peer, InHarness: c.inproc != nil, Skipped: c.skip, Units: u,
				WallSeconds: spreadOf(c.walls()), CPUSeconds: spreadOf(c.cpus()), PeakRSSMB: c.peakRSSMB(), Note: c.note}
			jc.RatePerSec = spread{u / jc.WallSeconds.Max, u / jc.WallSeconds.Median, u / jc.WallSeconds.Min}
			for _, d := range c.walls() {
				jc.Walls = append(jc.Walls, d.Seconds())
			}
			for _, d := range c.cpus() {
				jc.CPUs = append(jc.CPUs, d.Seconds())
			}
			if c.peer && len(c.results()) > 0 && len(f.results()) > 0 {
				jc.FlowRatio = f.rate() / c.rate()
			}
			jw.Contenders = append(jw.Contenders, jc)
		}
		if wl.targets != nil && len(f.samples) > 0 {
			for _, t := range wl.targets() {
				jw.Targets = append(jw.Targets, map[string]any{"target": t.text, "measured": t.measured, "met": t.met && !t.na, "evaluated": !t.na})
			}
		}
		out.Workloads = append(out.Workloads, jw)
	}
	return out
}

// writeJSON writes v; a figure without runs (NaN, which encoding/json
// refuses) is written as -1, a ratio without one as 0.
func writeJSON(path string, v jsonResults) error {
	b, err := json.MarshalIndent(noNaN(v), "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func noNaN(v jsonResults) jsonResults {
	for i := range v.Workloads {
		for j := range v.Workloads[i].Contenders {
			c := &v.Workloads[i].Contenders[j]
			for _, s := range []*spread{&c.WallSeconds, &c.CPUSeconds, &c.RatePerSec} {
				for _, f := range []*float64{&s.Min, &s.Median, &s.Max} {
					if math.IsNaN(*f) || math.IsInf(*f, 0) {
						*f = -1
					}
				}
			}
			if math.IsNaN(c.FlowRatio) || math.IsInf(c.FlowRatio, 0) {
				c.FlowRatio = 0
			}
		}
	}
	return v
}

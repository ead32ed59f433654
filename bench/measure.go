package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"
)

// sample is one timed run of one contender.
type sample struct {
	wall  time.Duration
	rssKB int64 // peak resident set of the largest process of the run
	// hwmKB is the harness's own peak resident set when the run started:
	// a child is started with vfork sharing the harness's memory, and
	// Linux carries that memory's peak into the child's ru_maxrss at exec,
	// so an rssKB at or below hwmKB only says "no more than this".
	hwmKB int64
	cpu   time.Duration // user + system time of the run and its waited-for descendants
	extra float64       // a workload-specific figure (the measured rate of a rated fetch)
}

// invocation is one command to time. Stdout goes to a file (or /dev/null)
// so that writing results costs every contender the same; stderr is kept
// for error messages and for the summaries the Python programs print.
type invocation struct {
	argv   []string
	env    []string
	dir    string
	stdout string // path; "" means /dev/null
}

// runOnce starts inv, waits for it and reads the peak RSS from the wait4
// rusage: ru_maxrss covers the child and every descendant it waited for, so
// for a shell pipeline it is the largest single process, not the sum.
func runOnce(ctx context.Context, inv invocation, timeout time.Duration) (sample, string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, inv.argv[0], inv.argv[1:]...)
	cmd.Dir = inv.dir
	cmd.Env = append(os.Environ(), inv.env...)
	// Killing the whole group on timeout: xargs and parallel fork children.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	out := os.DevNull
	if inv.stdout != "" {
		out = inv.stdout
	}
	f, err := os.Create(out)
	if err != nil {
		return sample{}, "", err
	}
	defer f.Close()
	cmd.Stdout = f
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	hwm := harnessHWM()
	start := time.Now()
	err = cmd.Run()
	wall := time.Since(start)
	s := sample{wall: wall, hwmKB: hwm}
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			s.rssKB = ru.Maxrss // kilobytes on Linux
			s.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	if ctx.Err() == context.DeadlineExceeded {
		return s, stderr.String(), fmt.Errorf("killed after %s: %s", timeout, strings.Join(inv.argv, " "))
	}
	if err != nil {
		return s, stderr.String(), fmt.Errorf("%s: %v\n%s", strings.Join(inv.argv, " "), err, tail(stderr.String(), 2000))
	}
	return s, stderr.String(), nil
}

// harnessHWM is the harness's peak resident set so far, in kB (VmHWM), or
// 0 where /proc does not say.
func harnessHWM() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
			return kb
		}
	}
	return 0
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// median of the durations; the upper middle for an even count, so that two
// runs report the slower one rather than a flattering mean.
func medianDur(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func medianFloat(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func maxInt(xs []int64) int64 {
	var m int64
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

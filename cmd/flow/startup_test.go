package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkStartup is the price of a flow process that does next to
// nothing: package init, the runtime's start, the command line, and for
// run the set-up and tear-down of a one-item pipeline. cpu-ms/op is user
// plus system time of the process and the worker processes it waited for;
// on a shared machine it is steadier than ns/op (wall). The process is
// this test binary acting as flow, which links a little more than flow;
// build it as the harness and README build flow (CGO_ENABLED=0: without the
// dynamic loader and libc every process starts 2-4 ms sooner), or compare
// like with like.
//
//	CGO_ENABLED=0 go test -run '^$' -bench Startup -benchtime 50x ./cmd/flow
func BenchmarkStartup(b *testing.B) {
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.log"), []byte("a ERROR\nb WARN\nc\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	logs := filepath.Join(dir, "logs.yaml")
	// bench/pipelines/analyze_logs.yaml over one file.
	src, err := os.ReadFile("../../bench/pipelines/analyze_logs.yaml")
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(logs, bytes.Replace(src, []byte("log_dir: ../out/logs"), []byte("log_dir: ."), 1), 0o644); err != nil {
		b.Fatal(err)
	}
	proc := filepath.Join(dir, "proc.yaml")
	// bench/pipelines/process.yaml with one item: the parent and its two
	// workers start.
	if err := os.WriteFile(proc, []byte(`version: 1
name: startup-process
stages:
  - name: numbers
    source: {range: {from: 1, to: 1}}
  - name: double
    step: compute
    mode: process
    workers: 2
    with: {value: "${ item * 2 }"}
  - name: out
    sink: {print: jsonl}
`), 0o644); err != nil {
		b.Fatal(err)
	}
	bench := []string{"--progress", "none", "--no-state", "--report", filepath.Join(dir, "report.json")}
	for _, bc := range []struct {
		name string
		args []string
	}{
		{"help", []string{"--help"}},
		{"run", append([]string{"run", logs}, bench...)},
		{"run-state", []string{"run", logs, "--progress", "none"}},
		{"run-process", append([]string{"run", proc}, bench...)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var cpu time.Duration
			for b.Loop() {
				cmd := exec.Command(os.Args[0], bc.args...)
				cmd.Dir = dir
				cmd.Env = append(os.Environ(), cliEnv+"=1")
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("%v: %v\n%s", bc.args, err, out)
				}
				cpu += cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
			}
			b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
		})
	}
}

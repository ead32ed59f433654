package cli

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// startupPipeline is the benchmark harness's analyze-logs pipeline
// (bench/pipelines/analyze_logs.yaml) over one small file: what a run does
// before and after its items, with next to nothing in between.
const startupPipeline = `version: 1
name: startup
vars:
  log_dir: .
stages:
  - name: files
    source: {glob: "${ vars.log_dir }/*.log"}
  - name: analyze
    step: analyze-logs
    workers: auto
    order: completion
    with:
      patterns:
        - {name: errors, match: ERROR}
        - {name: warnings, match: WARN}
  - name: out
    sink: {print: jsonl}
`

// BenchmarkRunStartup is `flow run` of a one-item pipeline in this
// process: parsing and checking the file, setting the run up, the item,
// the report and the history. Package init and the runtime's start are
// not in it: cmd/flow's BenchmarkStartup measures whole processes.
//
//	go test -run '^$' -bench RunStartup -benchmem ./internal/cli
func BenchmarkRunStartup(b *testing.B) {
	dir := b.TempDir()
	p := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(p, []byte(startupPipeline), 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "a.log"), []byte("a ERROR\nb WARN\nc\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		args []string
	}{
		// As the benchmark harness runs flow.
		{"bench", []string{"--progress", "none", "--no-state", "--report", filepath.Join(dir, "report.json")}},
		// As a person does: the run recorded in .flow/state.db.
		{"default", nil},
	} {
		b.Run(bc.name, func(b *testing.B) {
			args := append([]string{"run", p}, bc.args...)
			var stderr strings.Builder
			for b.Loop() {
				stderr.Reset()
				if code := Run(args, strings.NewReader(""), io.Discard, &stderr); code != ExitOK {
					b.Fatalf("exit %d: %s", code, stderr.String())
				}
			}
		})
	}
}

package cli

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// startupPipeline is the benchmark harness's analyze-logs pipeline
// (bench/pipelines/analyze_logs.yaml, read from the repository so the two
// cannot drift apart) over the directory it is written to: what a run does
// before and after its items, with next to nothing in between.
func startupPipeline(b *testing.B) []byte {
	src, err := os.ReadFile("../../bench/pipelines/analyze_logs.yaml")
	if err != nil {
		b.Fatal(err)
	}
	out := bytes.Replace(src, []byte("log_dir: ../out/logs"), []byte("log_dir: ."), 1)
	if bytes.Equal(out, src) {
		b.Fatal("bench/pipelines/analyze_logs.yaml no longer sets log_dir: ../out/logs")
	}
	return out
}

// BenchmarkRunStartup is `flow run` of a one-item pipeline in this
// process: parsing and checking the file, setting the run up, the item,
// the report and the history. Package init and the runtime's start are
// not in it: cmd/flow's BenchmarkStartup measures whole processes.
//
//	go test -run '^$' -bench RunStartup -benchmem ./internal/cli
func BenchmarkRunStartup(b *testing.B) {
	dir := b.TempDir()
	p := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(p, startupPipeline(b), 0o644); err != nil {
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

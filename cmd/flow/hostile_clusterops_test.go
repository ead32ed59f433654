package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A pipeline written for a cluster, with labels: and transfer: true, runs
// as it is on one machine: without --nats, the run's own workers offer
// every label, and files travel through the embedded server's Object Store.
func TestHostileClusterLabelsAndTransferOnALaptop(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"a", "b", "c"} {
		relWrite(t, filepath.Join(dir, "logs", n+".log"), []byte("ERROR x\nWARN y\nok\n"))
		relWrite(t, filepath.Join(dir, "logs", n+".png"), relPNG(t, 40, 30))
	}
	cmd := relCommand(t, dir, `version: 1
stages:
  - {name: src, source: {glob: "logs/*.log"}}
  - {name: count, step: analyze-logs, mode: cluster, labels: [gpu], transfer: true}
  - {name: thumb, step: resize, mode: cluster, labels: [gpu, big], transfer: true,
     with: {src: "${ replace(item.path, '.log', '.png') }", width: 20, out_dir: thumbs}}
  - {name: out, sink: {write: {path: out.jsonl}}}
`, "--local-slots", "2")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := relCollect(t, dir, relWait(t, cmd), stdout.String(), stderr.String())
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	out, _ := os.ReadFile(filepath.Join(dir, "out.jsonl"))
	if n := strings.Count(string(out), "\n"); n != 3 || !strings.Contains(string(out), filepath.Join(dir, "thumbs", "a.png")) {
		t.Fatalf("out.jsonl:\n%s", out)
	}
	for _, n := range []string{"a", "b", "c"} {
		if _, err := os.Stat(filepath.Join(dir, "thumbs", n+".png")); err != nil {
			t.Errorf("thumbnail: %v", err)
		}
	}
	for _, s := range r.rep.Stages[1:3] {
		if s.ByWorker["local"] != 3 {
			t.Errorf("stage %s ran on %v", s.Name, s.ByWorker)
		}
	}
}

// A worker's labels are checked before it connects anywhere.
func TestHostileClusterWorkerLabelSyntax(t *testing.T) {
	cmd := exec.Command(os.Args[0], "worker", "--label", "a.b", "--nats", "nats://127.0.0.1:1")
	cmd.Env = append(os.Environ(), cliEnv+"=1")
	out, _ := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(out), `--label "a.b": a label is`) {
		t.Fatalf("exit %d: %s", cmd.ProcessState.ExitCode(), out)
	}
}

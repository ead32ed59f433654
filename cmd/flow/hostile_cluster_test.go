package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowrun/flow/cluster"
	"github.com/flowrun/flow/report"
)

// clusterResumePipeline runs 40 items on flow workers; each run of an item
// leaves a line in marks (the side channel counting executions) and takes
// long enough for a parent to die with items out.
const clusterResumePipeline = `version: 1
stages:
  - {name: src, source: {range: {from: 1, to: 40}}}
  - name: calc
    step: exec
    mode: cluster
    workers: 4
    with:
      shell: true
      command: 'echo "$1" >> marks; sleep 0.3; echo "$1"'
      argv: ["${ item }"]
`

// flowWorker starts `flow worker` in a process of its own, until the test
// ends.
func flowWorker(t *testing.T, url, name string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "worker", "--nats", url, "--slots", "2", "--ack-wait", "2s", "--name", name)
	cmd.Env = append(os.Environ(), cliEnv+"=1")
	errPipe, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, _ := bufio.NewReader(errPipe).ReadString('\n')
	if !strings.Contains(line, "serving") {
		t.Fatalf("worker %s did not start: %q", name, line)
	}
	go func() { _, _ = bufio.NewReader(errPipe).WriteTo(os.Stderr) }()
}

func clusterRunCmd(t *testing.T, dir, url string, args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], append([]string{"run", "p.yaml", "--nats", url, "--ack-wait", "2s", "--progress", "none", "--report", "report.json"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), cliEnv+"=1")
	return cmd
}

func clusterLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// The machine running flow run dies (SIGKILL of the parent) while workers
// hold its items; `flow run --resume` takes the dead run's answers from
// FLOW_RESULTS: no item finished before or after the kill runs twice, the
// output is an uninterrupted run's, and no work of either run is left in
// the work stream.
func TestHostileClusterParentKilledResume(t *testing.T) {
	if testing.Short() {
		t.Skip("real worker processes")
	}
	srv, stop, err := cluster.Embedded{Listen: "127.0.0.1:0"}.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	url := srv.ClientURL()
	flowWorker(t, url, "a")
	flowWorker(t, url, "b")

	// The reference: the same pipeline, uninterrupted, in a directory of
	// its own.
	ref := t.TempDir()
	os.WriteFile(filepath.Join(ref, "p.yaml"), []byte(clusterResumePipeline), 0o644)
	var refOut, refErr bytes.Buffer
	cmd := clusterRunCmd(t, ref, url)
	cmd.Stdout, cmd.Stderr = &refOut, &refErr
	if err := cmd.Run(); err != nil {
		t.Fatalf("uninterrupted run: %v\n%s", err, refErr.String())
	}

	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "p.yaml"), []byte(clusterResumePipeline), 0o644)
	marks := filepath.Join(dir, "marks")
	first := clusterRunCmd(t, dir, url)
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	guard := time.Now().Add(time.Minute)
	for len(clusterLines(t, marks)) < 10 {
		if time.Now().After(guard) {
			first.Process.Kill()
			t.Fatal("the first run did not start 10 items")
		}
		time.Sleep(20 * time.Millisecond)
	}
	first.Process.Signal(syscall.SIGKILL)
	first.Wait()
	atKill := len(clusterLines(t, marks))
	// Items out on the workers go on: some finish after the parent died.
	time.Sleep(300 * time.Millisecond)

	var out, errOut bytes.Buffer
	resumed := clusterRunCmd(t, dir, url, "--resume")
	resumed.Stdout, resumed.Stderr = &out, &errOut
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- resumed.Run() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("resumed run: %v\n%s", err, errOut.String())
		}
	case <-ctx.Done():
		resumed.Process.Kill()
		t.Fatal("the resumed run hung")
	}

	got := clusterLines(t, marks)
	seen := map[string]int{}
	for _, l := range got {
		seen[l]++
	}
	for item, n := range seen {
		if n > 1 {
			t.Errorf("item %s ran %d times", item, n)
		}
	}
	if len(seen) != 40 {
		keys := make([]string, 0, len(seen))
		for k := range seen {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		t.Errorf("%d items ran, want 40: %v", len(seen), keys)
	}
	if out.String() != refOut.String() {
		t.Errorf("the resumed run's output differs from an uninterrupted run's:\n%s\nwant:\n%s", out.String(), refOut.String())
	}
	var rep report.Report
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	calc := rep.Stages[1]
	if rep.Status != report.StatusSucceeded || calc.Succeeded != 40 {
		t.Fatalf("resumed run: %s, calc %+v", rep.Status, *calc)
	}
	// Every item started before the kill finished on its worker, after
	// the kill for some, and came back from the results stream.
	if calc.Cached < int64(atKill) {
		t.Errorf("%d items taken from the dead run's answers, yet %d had started before the kill", calc.Cached, atKill)
	}
	t.Logf("%d items started before the kill; the resumed run took %d from the stream and ran %d", atKill, calc.Cached, calc.Succeeded-calc.Cached)

	// No orphaned work: the work stream empties (the last acks are on
	// their way when the run ends).
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	for i := 0; ; i++ {
		s, err := js.Stream(ctx, "FLOW_WORK")
		if err != nil {
			t.Fatal(err)
		}
		if n := s.CachedInfo().State.Msgs; n == 0 {
			break
		} else if i > 100 {
			t.Fatalf("%d batches left in the work stream after the resumed run", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

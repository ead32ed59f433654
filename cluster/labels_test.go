package cluster

import (
	"bytes"
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps/all"
)

// startLabelled starts one in-process worker offering labels.
func startLabelled(t testing.TB, srv *server.Server, name string, slots int, labels ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := NewWorker(ctx, dial(t, Conn{Embedded: srv}), WorkerConfig{Name: name, Slots: slots, Labels: labels, Registry: all.Registry(), Settings: testSettings})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); w.Serve(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// A labelled stage's items reach only the workers offering every label it
// requires; an unlabelled stage's reach every worker, the labelled ones too.
func TestClusterLabelsRouteItems(t *testing.T) {
	srv := startServer(t, "")
	startLabelled(t, srv, "plain", 2)
	startLabelled(t, srv, "gpu", 2, "gpu", "fast")
	rep, out := runCluster(t, srv, `version: 1
stages:
  - {name: src, source: {range: {from: 1, to: 400}}}
  - {name: any, step: compute, mode: cluster, workers: 4, with: {value: "${ sleep(0.002) ?? item }"}}
  - {name: gpu, step: compute, mode: cluster, labels: [gpu], with: {value: "${ item * 2 }"}}
  - {name: both, step: compute, mode: cluster, labels: [fast, gpu], with: {value: "${ item + 1 }"}}
`, nil)
	if rep.Status != report.StatusSucceeded {
		t.Fatalf("status %s: %s", rep.Status, rep.Reason)
	}
	if got := lines(out); len(got) != 400 || got[0] != "3" || got[399] != "801" {
		t.Fatalf("%d results, first %q, last %q", len(got), got[0], got[len(got)-1])
	}
	byName := map[string]*report.Stage{}
	for _, s := range rep.Stages {
		byName[s.Name] = s
	}
	for _, st := range []string{"gpu", "both"} {
		bw := byName[st].ByWorker
		if bw["gpu"] != 400 || len(bw) != 1 {
			t.Errorf("stage %s ran on %v; want all 400 on the worker labelled gpu", st, bw)
		}
	}
	if bw := byName["any"].ByWorker; bw["plain"] == 0 || bw["gpu"] == 0 || bw["plain"]+bw["gpu"] != 400 {
		t.Errorf("the unlabelled stage ran on %v; want both workers", bw)
	}
}

// A worker with labels keeps serving unlabelled work while a labelled
// stage has much queued: neither starves.
func TestClusterLabelledWorkerServesBoth(t *testing.T) {
	srv := startServer(t, "")
	startLabelled(t, srv, "gpu", 2, "gpu")
	rep, _ := runCluster(t, srv, `version: 1
stages:
  - {name: src, source: {range: {from: 1, to: 300}}}
  - {name: plain, step: compute, mode: cluster, order: completion, with: {value: "${ item }"}}
  - {name: gpu, step: compute, mode: cluster, order: completion, labels: [gpu], with: {value: "${ item }"}}
`, nil)
	if rep.Status != report.StatusSucceeded || rep.Stages[2].Succeeded != 300 {
		t.Fatalf("status %s (%s), %+v", rep.Status, rep.Reason, *rep.Stages[2])
	}
}

// A stage whose labels no live worker offers warns on stderr naming them,
// then fails its items once Unreachable has passed: it never hangs.
func TestClusterLabelsNobodyOffers(t *testing.T) {
	srv := startServer(t, "")
	startLabelled(t, srv, "plain", 2)
	reg := all.Registry()
	p, err := spec.Parse("p.yaml", []byte(`version: 1
stages:
  - {name: src, source: {range: {from: 1, to: 5}}}
  - {name: gpu, step: compute, mode: cluster, labels: [gpu, tpu], on_error: skip, with: {value: "${ item }"}}
`), spec.Options{}, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := NewClient(ctx, dial(t, Conn{Embedded: srv}), testSettings)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var stderr syncBuffer
	rep, err := engine.Run(ctx, p, engine.Options{Registry: reg, Runners: engine.Runners{spec.ModeCluster: c.Factory},
		Stdout: io.Discard, Stderr: &stderr})
	if err != nil {
		t.Fatal(err)
	}
	gpu := rep.Stages[1]
	if gpu.Skipped != 5 || !gpu.Balanced() {
		t.Fatalf("stage %+v", *gpu)
	}
	for _, f := range rep.Failures {
		if f.Class != "no_worker" || !strings.Contains(f.Error, "gpu, tpu") {
			t.Errorf("failure %s: %s", f.Class, f.Error)
		}
	}
	if s := stderr.String(); !strings.Contains(s, `stage "gpu" needs a worker labelled gpu, tpu`) {
		t.Errorf("stderr: %q", s)
	}
}

// The validation of labels: and its place.
func TestLabelsValidation(t *testing.T) {
	reg := all.Registry()
	for _, c := range []struct{ text, want string }{
		{"  - {name: s, step: compute, labels: [gpu], with: {value: 1}}\n", "p.yaml:4:30: labels: applies only with mode: cluster"},
		{"  - {name: s, step: compute, mode: cluster, labels: [gpu, a.b], with: {value: 1}}\n", `p.yaml:4:59: label "a.b": a label is 1 to 64`},
		{"  - {name: s, step: compute, transfer: true, with: {value: 1}}\n", "p.yaml:4:30: transfer: applies only with mode: cluster"},
	} {
		_, err := spec.Parse("p.yaml", []byte("version: 1\nstages:\n  - {name: src, source: {items: [1]}}\n"+c.text), spec.Options{}, reg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %s", c.text, err, c.want)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A worker offers a set of labels when it has every one, or "*".
func TestOffers(t *testing.T) {
	for _, c := range []struct {
		labels []string
		key    string
		want   bool
	}{
		{nil, "", true},
		{nil, "gpu", false},
		{[]string{"gpu"}, "fast+gpu", false},
		{[]string{"gpu", "fast", "x"}, labelKey([]string{"gpu", "fast", "gpu"}), true},
		{[]string{"*"}, "fast+gpu", true},
	} {
		if got := offers(c.labels, c.key); got != c.want {
			t.Errorf("offers(%v, %q) = %v", c.labels, c.key, got)
		}
	}
}

// A worker with labels asks each of its consumers first in turn: the
// shared one and that of its labels alternate, so neither starves.
func TestPullFromRotates(t *testing.T) {
	srv := startServer(t, "")
	ctx := context.Background()
	w, err := NewWorker(ctx, dial(t, Conn{Embedded: srv}), WorkerConfig{Name: "g", Slots: 1, Labels: []string{"gpu"}, Registry: all.Registry(), Settings: testSettings})
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"gpu", "fast+gpu"} {
		if err := ensureLabelConsumer(ctx, w.st, key); err != nil {
			t.Fatal(err)
		}
	}
	firsts := map[string]int{}
	for range 6 {
		cons := w.pullFrom(ctx)
		if len(cons) != 2 {
			t.Fatalf("%d consumers, want the shared one and gpu's (not fast+gpu's)", len(cons))
		}
		firsts[cons[0].CachedInfo().Name]++
	}
	if firsts[workConsumer] != 3 || firsts[labelConsumer("gpu")] != 3 {
		t.Errorf("asked first: %v", firsts)
	}
}

package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps/all"
)

// testSettings keep the bounds short, so that a dead worker's batch comes
// back within seconds.
var testSettings = Settings{AckWait: 2 * time.Second, MaxDeliver: 3, RunTTL: 3 * time.Second, Unreachable: 2 * time.Second}

func startServer(t testing.TB, listen string) *server.Server {
	t.Helper()
	srv, stop, err := Embedded{Listen: listen}.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return srv
}

func dial(t testing.TB, c Conn) *nats.Conn {
	t.Helper()
	nc, err := c.Dial()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// startWorkers starts n in-process workers with slots each.
func startWorkers(t testing.TB, srv *server.Server, n, slots int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range n {
		w, err := NewWorker(ctx, dial(t, Conn{Embedded: srv}), WorkerConfig{Name: fmt.Sprintf("w%d", i), Slots: slots, Registry: all.Registry(), Settings: testSettings})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); w.Serve(ctx) }()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
}

type attempts struct {
	mu      sync.Mutex
	workers map[string]int
	redeliv int
	n       int
	// firstDone, when set, is closed as the first item of calc is done:
	// workers are busy from then on, however long the run took to start.
	firstDone chan struct{}
}

func (a *attempts) StageStarted(string, int, int64) {}
func (a *attempts) StageDone(string)                {}
func (a *attempts) ItemDone(ev *engine.ItemEvent) {
	if ev.Stage != "calc" {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, x := range ev.Attempts {
		a.workers[x.Worker]++
		a.redeliv += x.Redelivered
		a.n++
	}
	if a.firstDone != nil {
		close(a.firstDone)
		a.firstDone = nil
	}
}

func runCluster(t testing.TB, srv *server.Server, text string, ev engine.EventSink) (*report.Report, string) {
	t.Helper()
	return runClusterOn(t, Conn{Embedded: srv}, text, ev)
}

// runClusterOn runs text with its cluster stages through conn.
func runClusterOn(t testing.TB, conn Conn, text string, ev engine.EventSink) (*report.Report, string) {
	t.Helper()
	return runClusterThen(t, conn, text, ev, nil)
}

// runClusterThen is runClusterOn, calling after (when set) with the run's
// client once the run is over, before the client closes.
func runClusterThen(t testing.TB, conn Conn, text string, ev engine.EventSink, after func(*Client)) (*report.Report, string) {
	t.Helper()
	reg := all.Registry()
	p, err := spec.Parse("p.yaml", []byte(text), spec.Options{}, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := NewClient(ctx, dial(t, conn), testSettings)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var out bytes.Buffer
	rep, err := engine.Run(ctx, p, engine.Options{Registry: reg, Runners: engine.Runners{spec.ModeCluster: c.Factory},
		Stdout: &out, Stderr: io.Discard, Events: ev})
	if err != nil {
		t.Fatal(err)
	}
	if after != nil {
		after(c)
	}
	for _, s := range rep.Stages {
		if !s.Balanced() {
			t.Errorf("stage %s does not account for every item: %+v", s.Name, *s)
		}
	}
	return rep, out.String()
}

func lines(s string) []string { return strings.Split(strings.TrimSpace(s), "\n") }

// Items of a cluster stage come back in input order, each once, with the
// worker that ran it named in its attempt.
func TestClusterStageKeepsOrderAndNamesWorkers(t *testing.T) {
	srv := startServer(t, "")
	startWorkers(t, srv, 2, 4)
	ev := &attempts{workers: map[string]int{}}
	rep, out := runCluster(t, srv, `version: 1
stages:
  - {name: src, source: {range: {from: 1, to: 2000}}}
  - {name: calc, step: compute, mode: cluster, with: {value: "${ item * 2 }"}}
`, ev)
	if rep.Status != report.StatusSucceeded {
		t.Fatalf("status %s: %s", rep.Status, rep.Reason)
	}
	got := lines(out)
	if len(got) != 2000 {
		t.Fatalf("%d results, want 2000", len(got))
	}
	for i, l := range got {
		if l != fmt.Sprint(2*(i+1)) {
			t.Fatalf("result %d is %s, want %d: order: input must hold across workers", i, l, 2*(i+1))
		}
	}
	if ev.n != 2000 || ev.redeliv != 0 {
		t.Errorf("%d attempts, %d redelivered", ev.n, ev.redeliv)
	}
	for w := range ev.workers {
		if w != "w0" && w != "w1" {
			t.Errorf("attempt ran on %q", w)
		}
	}
}

// Errors keep their class and permanence across the cluster, and a stage's
// retry policy runs in the parent: counted once.
func TestClusterErrorsAndRetries(t *testing.T) {
	srv := startServer(t, "")
	startWorkers(t, srv, 1, 2)
	rep, out := runCluster(t, srv, `version: 1
stages:
  - {name: src, source: {items: [1, 0, 2]}}
  - name: calc
    step: compute
    mode: cluster
    with: {value: "${ item == 0 ? fail('zero') : item }"}
    retry: {attempts: 2, backoff: 1ms}
    on_error: skip
`, nil)
	calc := rep.Stages[1]
	if calc.Succeeded != 2 || calc.Skipped != 1 {
		t.Fatalf("calc %+v\n%s", *calc, out)
	}
	if len(rep.Failures) != 1 || rep.Failures[0].Index != 1 {
		t.Fatalf("failures %+v", rep.Failures)
	}
}

// A pipeline with secrets refuses a connection anyone could read.
func TestSecretsNeedAPrivateConnection(t *testing.T) {
	srv := startServer(t, "127.0.0.1:0")
	nc := dial(t, Conn{URL: srv.ClientURL()})
	if !Private(nc) {
		t.Fatalf("loopback %s not private", nc.ConnectedUrl())
	}
	if !Private(dial(t, Conn{Embedded: srv})) {
		t.Fatal("an in-process connection is not private")
	}
}

// The NATS server goes away mid-run and does not come back: the items out
// fail with class connection once it has been unreachable past the bound,
// and the run ends with every item accounted; it never hangs.
func TestClusterServerGoneFailsCleanly(t *testing.T) {
	srv := startServer(t, "127.0.0.1:0")
	startWorkers(t, srv, 1, 4)
	// The server goes once the first item is done: mid-run, with 39 items
	// and about 2 s of work left, however long the run took to start.
	first := make(chan struct{})
	go func() {
		select {
		case <-first:
			srv.Shutdown()
		case <-t.Context().Done():
		}
	}()
	rep, _ := runCluster(t, srv, `version: 1
stages:
  - {name: src, source: {range: {from: 1, to: 40}}}
  - {name: calc, step: compute, mode: cluster, workers: 8, on_error: skip, with: {value: "${ sleep(0.2) ?? item }"}}
`, &attempts{workers: map[string]int{}, firstDone: first})
	calc := rep.Stages[1]
	if rep.Status == report.StatusInterrupted || calc.Skipped == 0 {
		t.Fatalf("status %s (%s), calc %+v", rep.Status, rep.Reason, *calc)
	}
	for _, f := range rep.Failures {
		if f.Class != "connection" {
			t.Errorf("failure of class %q, want connection: %s", f.Class, f.Error)
		}
	}
	t.Logf("calc %d in: %d succeeded before the server went, %d failed with it", calc.In, calc.Succeeded, calc.Skipped)
}

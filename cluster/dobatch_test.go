package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/steps/all"
)

// batchedItems is how many items stage idx's runner took through DoBatch.
func batchedItems(c *Client, idx int) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.runners[idx]; r != nil {
		return r.batched.Load()
	}
	return -1
}

// A plain cluster stage takes the engine's batch path: every item's first
// attempt is handed over by DoBatch (no goroutine of the engine waits on
// each), and the items still cross many per message.
func TestClusterBatchPath(t *testing.T) {
	srv := startServer(t, "")
	startWorkers(t, srv, 2, 2)
	const n = 10000
	var batched int64
	var msgs uint64
	rep, out := runClusterThen(t, Conn{Embedded: srv}, fmt.Sprintf(`version: 1
stages:
  - {name: src, source: {range: {from: 1, to: %d}}}
  - {name: calc, step: compute, mode: cluster, with: {value: "${ item + 1 }"}}
`, n), nil, func(c *Client) {
		batched = batchedItems(c, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		info, err := c.st.work.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		msgs = info.State.LastSeq
	})
	if rep.Status != report.StatusSucceeded || rep.Stages[1].Succeeded != n {
		t.Fatalf("status %s: %+v", rep.Status, *rep.Stages[1])
	}
	if got := lines(out); len(got) != n || got[0] != "2" || got[n-1] != fmt.Sprint(n+1) {
		t.Fatalf("%d lines out, first %q", len(got), got[0])
	}
	if batched != n {
		t.Errorf("%d of %d items went through DoBatch: the stage runs a goroutine per item", batched, n)
	}
	if msgs == 0 || msgs*2 > n {
		t.Errorf("%d work messages for %d items: items should cross many per message", msgs, n)
	}
	t.Logf("%d work messages for %d items", msgs, n)
}

// When the caller's ctx ends, DoBatch answers every item at once, once,
// with an error wrapping ctx.Err(): queued ones dropped, those a worker
// holds withdrawn (and cancelled there), as Do does.
func TestClusterDoBatchContextEnds(t *testing.T) {
	srv := startServer(t, "")
	startWorkers(t, srv, 1, 2)
	reg := all.Registry()
	p, err := spec.Parse("p.yaml", []byte(`version: 1
stages:
  - {name: src, source: {range: {from: 1, to: 3}}}
  - {name: calc, step: compute, mode: cluster, with: {value: "${ sleep(30) ?? item }"}}
`), spec.Options{}, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := NewClient(ctx, dial(t, Conn{Embedded: srv}), testSettings)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	run, err := c.Factory(engine.StageRun{Pipeline: p, Stage: p.Stages[1], Workers: 4, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer run.Close()
	br, ok := run.(engine.BatchRunner)
	if !ok {
		t.Fatalf("the runner of a cluster stage (%T) is not an engine.BatchRunner", run)
	}
	const n = 50
	items := make([]engine.BatchItem, n)
	ats := make([]engine.Attempt, n)
	for i := range items {
		items[i] = engine.BatchItem{In: steps.Input{Index: int64(i), Item: int64(i)}, At: &ats[i]}
	}
	var mu sync.Mutex
	answers := make([]int, n)
	var errs []error
	c.mu.Lock()
	r := c.runners[1]
	c.mu.Unlock()
	bctx, stop := context.WithCancel(ctx)
	go func() {
		// Until a worker holds some: the rest wait in the queue.
		for r.outstanding.Load()+r.pubs.Load() == 0 {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond)
		stop()
	}()
	br.DoBatch(bctx, items, func(i int, v any, err error) {
		mu.Lock()
		defer mu.Unlock()
		answers[i]++
		errs = append(errs, err)
	})
	for i, a := range answers {
		if a != 1 {
			t.Errorf("item %d answered %d times", i, a)
		}
	}
	for _, err := range errs {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("answer %v, want one wrapping context.Canceled", err)
		}
	}
	r.mu.Lock()
	left := len(r.sent)
	r.mu.Unlock()
	if left != 0 {
		t.Errorf("%d withdrawn items are still recorded as out on workers", left)
	}
}

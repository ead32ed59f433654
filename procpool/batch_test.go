package procpool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/protocol"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/stagehost"
	"github.com/flowrun/flow/steps"
)

// doBatch runs items in one DoBatch call and returns their outcomes and
// attempts in input order, checking that each is answered exactly once.
func doBatch(t *testing.T, ctx context.Context, p *Pool, items []any) ([]outcomeAt, []engine.Attempt) {
	t.Helper()
	batch := make([]engine.BatchItem, len(items))
	ats := make([]engine.Attempt, len(items))
	for i, it := range items {
		batch[i] = engine.BatchItem{In: steps.Input{Index: int64(i), Item: it}, At: &ats[i]}
	}
	out := make([]outcomeAt, len(items))
	answered := make([]atomic.Int32, len(items))
	p.DoBatch(ctx, batch, func(i int, v any, err error) {
		if answered[i].Add(1) > 1 {
			t.Errorf("item %d answered twice", i)
		}
		out[i] = outcomeAt{v, err}
	})
	for i := range answered {
		if answered[i].Load() != 1 {
			t.Errorf("item %d answered %d times when DoBatch returned", i, answered[i].Load())
		}
	}
	return out, ats
}

func TestDoBatchCallsShareTheWorkers(t *testing.T) {
	// Many calls at once, many after another: every item gets its own
	// result and the worker that ran it, though the calls' memory is
	// reused (run with -race).
	pool, _ := newTestPool(t, "", nil, Config{Workers: 2})
	var wg sync.WaitGroup
	for c := range 4 {
		wg.Go(func() {
			for round := range 20 {
				items := make([]any, 1+(c*37+round*11)%300)
				for i := range items {
					items[i] = fmt.Sprintf("echo:%d.%d.%d", c, round, i)
				}
				out, ats := doBatch(t, context.Background(), pool, items)
				for i, o := range out {
					if o.err != nil {
						t.Errorf("item %v: %v", items[i], o.err)
						return
					}
					m := o.v.(map[string]any)
					if m["item"] != items[i] || m["index"] != int64(i) || ats[i].Worker != "pid "+strconv.FormatInt(m["pid"].(int64), 10) {
						t.Errorf("item %v got %#v, attempt %+v", items[i], m, ats[i])
						return
					}
				}
			}
		})
	}
	wg.Wait()
}

func TestDoBatchItemThatCannotBeSent(t *testing.T) {
	pool, _ := newTestPool(t, "", nil, Config{Workers: 1})
	out, _ := doBatch(t, context.Background(), pool, []any{"echo:a", math.Inf(1), "echo:b"})
	var se *steps.Error
	if !errors.As(out[1].err, &se) || !se.Permanent || !strings.Contains(out[1].err.Error(), "cannot be sent") {
		t.Errorf("infinite number: got %v, want a permanent error", out[1].err)
	}
	if out[0].err != nil || out[2].err != nil {
		t.Errorf("the others: %v, %v", out[0].err, out[2].err)
	}
}

func TestDoBatchWorkerKilledMidBatch(t *testing.T) {
	// One call holds the items around the one whose worker is killed: that
	// item fails with class crash, the others run again elsewhere, with
	// their redelivery counted on their attempt.
	pool, _ := newTestPool(t, "", nil, Config{Workers: 1, BatchLatency: time.Hour})
	pidFile := filepath.Join(t.TempDir(), "pid")
	items := []any{}
	for range 10 {
		items = append(items, "echo")
	}
	items = append(items, "pidfile:"+pidFile)
	for range 20 {
		items = append(items, "echo")
	}
	go func() {
		var pid int
		for deadline := time.Now().Add(30 * time.Second); pid == 0 && time.Now().Before(deadline); {
			b, _ := os.ReadFile(pidFile)
			pid, _ = strconv.Atoi(string(b))
			time.Sleep(5 * time.Millisecond)
		}
		if pid != 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}()
	out, ats := doBatch(t, context.Background(), pool, items)
	killed := ats[10].Worker
	if steps.ClassOf(out[10].err) != "crash" || !strings.Contains(out[10].err.Error(), "signal 9") {
		t.Errorf("killed item: %v", out[10].err)
	}
	again := 0
	for i, o := range out {
		if i == 10 {
			continue
		}
		if o.err != nil {
			t.Errorf("item %d: %v", i, o.err)
			continue
		}
		if i > 10 && ats[i].Worker == killed {
			t.Errorf("item %d, after the killed one, claims the killed worker (%s) ran it", i, killed)
		}
		again += ats[i].Redelivered
	}
	if again < 20 {
		t.Errorf("%d redeliveries counted, want at least the 20 items after the killed one", again)
	}
}

func TestDoBatchContextEnds(t *testing.T) {
	pool, _ := newTestPool(t, "", nil, Config{Workers: 2, KillGrace: 500 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	items := make([]any, 40)
	for i := range items {
		items[i] = "sleep:1h"
	}
	go func() {
		for pool.Started() < 2 {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	out, _ := doBatch(t, ctx, pool, items)
	for i, o := range out {
		if !errors.Is(o.err, context.Canceled) {
			t.Errorf("item %d: got %v, want context.Canceled", i, o.err)
		}
	}
	// The pool serves on with fresh workers.
	out, _ = doBatch(t, context.Background(), pool, []any{"echo", "echo", "echo"})
	for _, o := range out {
		if o.err != nil {
			t.Errorf("after cancelling: %v", o.err)
		}
	}
}

// A Cancel that reaches the item running in a worker ends that item's
// context, and only that item's: the worker runs item after item in one
// context until a Cancel, then the next item gets a fresh one.
func TestCancelOfTheRunningItemSparesTheNext(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pipeline.yaml")
	if err := os.WriteFile(file, []byte(testPipeline), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := spec.Parse(file, []byte(testPipeline), spec.Options{}, testRegistry())
	if err != nil {
		t.Fatal(err)
	}
	hello, err := stagehost.HelloFor(p, p.Stages[1], 1)
	if err != nil {
		t.Fatal(err)
	}
	built, err := stagehost.Build(&hello, testRegistry(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer built.Close()
	wp := startInProcessWorker(t, runningPage{}, built.Step, nil)
	w := wp.w
	if err := wp.send.Write(&protocol.Items{{ID: 1, Value: "sleep:1h"}, {ID: 2, Index: 1, Value: "sleep:1ms"}, {ID: 3, Index: 2, Value: "echo"}}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		if w.runningID() == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("item 1 never started")
		}
	}
	if err := wp.send.Write(&protocol.Cancel{1}); err != nil {
		t.Fatal(err)
	}
	wp.in.Close() // the worker finishes what it holds, then exits
	got := map[uint64]protocol.Result{}
	for _, res := range wp.collect(t) {
		got[res.ID] = res
	}
	if len(got) != 3 {
		t.Fatalf("%d results, want 3: %+v", len(got), got)
	}
	if e := got[1].Err; e == nil || !strings.Contains(e.Message, "context canceled") {
		t.Errorf("cancelled running item: %+v", got[1])
	}
	for _, id := range []uint64{2, 3} {
		if got[id].Err != nil {
			t.Errorf("item %d after the cancelled one: %s", id, got[id].Err.Message)
		}
	}
	if code := <-wp.exited; code != 0 {
		t.Errorf("worker exited with %d", code)
	}
}

package procpool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/flowrun/flow/stagehost"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
)

// testMark is put in the environment of every worker the tests start, and
// inherited by what the workers start: finding it in /proc after Close
// means an orphan.
var testMark = fmt.Sprintf("FLOW_PROCPOOL_TEST_MARK=%d.%d", os.Getpid(), time.Now().UnixNano())

const testPipeline = `version: 1
vars:
  tag: default
stages:
  - name: src
    source: {range: {from: 1, to: 3}}
  - name: work
    step: test
    mode: process
    with:
      tag: "${ vars.tag }"
`

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

// newTestPool starts a pool for stage "work" of text (testPipeline when
// empty); Close and the orphan check run at cleanup.
func newTestPool(t testing.TB, text string, set map[string]string, cfg Config) (*Pool, *syncBuffer) {
	t.Helper()
	if text == "" {
		text = testPipeline
	}
	file := filepath.Join(t.TempDir(), "pipeline.yaml")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := spec.Parse(file, []byte(text), spec.Options{Set: set}, testRegistry())
	if err != nil {
		t.Fatal(err)
	}
	var st *spec.Stage
	for _, s := range p.Stages {
		if s.Name == "work" {
			st = s
		}
	}
	if cfg.Workers == 0 {
		cfg.Workers = 1
	}
	hello, err := stagehost.HelloFor(p, st, cfg.Workers)
	if err != nil {
		t.Fatal(err)
	}
	stderr := &syncBuffer{}
	cfg.Stderr = stderr
	cfg.Env = append(cfg.Env, testMark)
	pool, err := New(hello, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pool.Close()
		checkNoOrphans(t)
		if t.Failed() {
			t.Logf("worker output:\n%s", stderr)
		}
	})
	return pool, stderr
}

// checkNoOrphans fails the test if a process carrying testMark is still
// alive. Killed processes take a moment to go, hence the bounded wait.
func checkNoOrphans(t testing.TB) {
	t.Helper()
	var left []string
	for deadline := time.Now().Add(10 * time.Second); ; {
		left = markedProcesses()
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Errorf("orphan processes left behind: %s", strings.Join(left, "; "))
	}
}

func markedProcesses() []string {
	var out []string
	for pid, pi := range readProcs() {
		if pi.zombie {
			continue
		}
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil || !bytes.Contains(env, []byte(testMark+"\x00")) {
			continue
		}
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		out = append(out, fmt.Sprintf("pid %d (%s)", pid, strings.ReplaceAll(string(cmd), "\x00", " ")))
	}
	return out
}

func alive(pid int) bool {
	pi, ok := readProc(pid)
	return ok && !pi.zombie
}

// waitGone waits for pid to end; a bounded wait, not a timing assertion.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); alive(pid); {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still alive", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type outcomeAt struct {
	v   any
	err error
}

// doAll runs items concurrently and returns their outcomes in input order.
func doAll(ctx context.Context, p *Pool, items []any) []outcomeAt {
	out := make([]outcomeAt, len(items))
	var wg sync.WaitGroup
	for i, it := range items {
		wg.Go(func() {
			v, err := p.Do(ctx, steps.Input{Index: int64(i), Item: it}, nil)
			out[i] = outcomeAt{v, err}
		})
	}
	wg.Wait()
	return out
}

func pidOf(t *testing.T, v any) int64 {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("want an echo result, got %#v", v)
	}
	return m["pid"].(int64)
}

func TestItemsRoundTripWithVarsAndTypes(t *testing.T) {
	pool, _ := newTestPool(t, "", map[string]string{"tag": "overridden"}, Config{Workers: 2})
	ctx := context.Background()
	v, err := pool.Do(ctx, steps.Input{Index: 41, Item: "echo:x"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := v.(map[string]any)
	if m["tag"] != "overridden" || m["index"] != int64(41) || m["item"] != "echo:x" {
		t.Errorf("echo result %#v: want tag from --set, index 41, the item back", m)
	}
	if m["pid"] == int64(os.Getpid()) {
		t.Errorf("the item ran in the test process, not in a worker")
	}
	v, err = pool.Do(ctx, steps.Input{Index: 1, Item: "types"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"int": int64(3), "float": 3.0, "list": []any{1.5, int64(-2)}, "nil": nil, "in": "types"}
	if !reflect.DeepEqual(v, want) {
		t.Errorf("got %#v, want %#v (int64 and float64 must survive)", v, want)
	}
}

func TestManyItemsAllAccounted(t *testing.T) {
	pool, _ := newTestPool(t, "", nil, Config{Workers: 2, InFlight: 64})
	items := make([]any, 2000)
	for i := range items {
		items[i] = fmt.Sprintf("echo:%d", i)
	}
	pids := map[int64]bool{}
	for i, o := range doAll(context.Background(), pool, items) {
		if o.err != nil {
			t.Fatalf("item %d: %v", i, o.err)
		}
		m := o.v.(map[string]any)
		if m["item"] != items[i] || m["index"] != int64(i) {
			t.Fatalf("item %d got the result of another: %#v", i, m)
		}
		pids[m["pid"].(int64)] = true
	}
	if len(pids) > 2 || pool.Started() != int64(len(pids)) {
		t.Errorf("%d distinct pids, %d workers started; want at most 2 and no restarts", len(pids), pool.Started())
	}
}

func TestErrorsKeepClassPermanenceAndRetryAfter(t *testing.T) {
	pool, _ := newTestPool(t, "", nil, Config{Workers: 1})
	ctx := context.Background()
	_, err := pool.Do(ctx, steps.Input{Item: "fail"}, nil)
	var se *steps.Error
	if !errors.As(err, &se) || se.Class != "http_429" || se.Permanent || se.RetryAfter != 1500*time.Millisecond || se.Error() != "rate limited" {
		t.Errorf("got %#v, want the step's *steps.Error rebuilt", err)
	}
	_, err = pool.Do(ctx, steps.Input{Item: "permanent:x"}, nil)
	if !errors.As(err, &se) || se.Class != "decode" || !se.Permanent {
		t.Errorf("got %#v, want a permanent decode error", err)
	}
	_, err = pool.Do(ctx, steps.Input{Item: "nan"}, nil)
	if !errors.As(err, &se) || !se.Permanent || !strings.Contains(err.Error(), "cannot be sent back") {
		t.Errorf("NaN result: got %v, want a permanent error saying it cannot cross", err)
	}
	if pool.Started() != 1 {
		t.Errorf("item errors restarted the worker: %d started", pool.Started())
	}
}

func TestPanicFailsOnlyItsItem(t *testing.T) {
	pool, stderr := newTestPool(t, "", nil, Config{Workers: 1})
	ctx := context.Background()
	_, err := pool.Do(ctx, steps.Input{Index: 7, Item: "panic"}, nil)
	if steps.ClassOf(err) != "crash" || !strings.Contains(err.Error(), "panicked: boom") {
		t.Fatalf("got %v (class %s), want a crash error saying the step panicked", err, steps.ClassOf(err))
	}
	if _, err := pool.Do(ctx, steps.Input{Item: "echo"}, nil); err != nil {
		t.Fatalf("after a panic: %v", err)
	}
	if pool.Started() != 1 {
		t.Errorf("a recovered panic cost a worker: %d started", pool.Started())
	}
	if !strings.Contains(stderr.String(), "panic running item 7: boom") {
		t.Errorf("the stack trace was not forwarded; stderr:\n%s", stderr)
	}
}

func TestWorkerDeathFailsOnlyItsItem(t *testing.T) {
	cases := map[string]string{
		"gopanic": "exited with status 2",
		"exit:3":  "exited with status 3",
		"exit:0":  "exited with status 0",
	}
	for item, want := range cases {
		t.Run(item, func(t *testing.T) {
			pool, _ := newTestPool(t, "", nil, Config{Workers: 2})
			items := []any{item, "echo:a", "echo:b", "echo:c"}
			out := doAll(context.Background(), pool, items)
			err := out[0].err
			if steps.ClassOf(err) != "crash" || !strings.Contains(err.Error(), want) {
				t.Errorf("got %v (class %s), want a crash error saying %q", err, steps.ClassOf(err), want)
			}
			if item == "gopanic" && !strings.Contains(err.Error(), "boom in a goroutine") {
				t.Errorf("the crash error lacks the worker's last output: %v", err)
			}
			for i, o := range out[1:] {
				if o.err != nil {
					t.Errorf("item %v failed with the crash of another: %v", items[i+1], o.err)
				}
			}
			if _, err := pool.Do(context.Background(), steps.Input{Item: "echo"}, nil); err != nil {
				t.Errorf("the pool did not recover: %v", err)
			}
		})
	}
}

func TestSIGKILLMidItemRequeuesTheRest(t *testing.T) {
	// A latency budget of an hour makes the window as wide as it goes once
	// one item is measured, whatever a loaded machine makes that item
	// cost: the test needs many items queued in the worker behind the one
	// that will be killed.
	pool, _ := newTestPool(t, "", nil, Config{Workers: 1, InFlight: 64, BatchLatency: time.Hour})
	ctx := context.Background()
	for i := range 50 {
		if _, err := pool.Do(ctx, steps.Input{Index: int64(i), Item: "echo"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if pool.window() != pool.cfg.MaxWindow {
		t.Fatalf("window %d after cheap items, want %d: the test needs items queued in the worker", pool.window(), pool.cfg.MaxWindow)
	}
	pidFile := filepath.Join(t.TempDir(), "pid")
	blocked := make(chan error, 1)
	go func() {
		_, err := pool.Do(ctx, steps.Input{Item: "pidfile:" + pidFile}, nil)
		blocked <- err
	}()
	var pid int
	for pid == 0 {
		b, _ := os.ReadFile(pidFile)
		pid, _ = strconv.Atoi(string(b))
		time.Sleep(5 * time.Millisecond)
	}
	rest := make(chan []outcomeAt, 1)
	items := make([]any, 20)
	for i := range items {
		items[i] = "echo"
	}
	go func() { rest <- doAll(ctx, pool, items) }()
	// Wait until the others sit in the worker behind the blocked item.
	for deadline := time.Now().Add(30 * time.Second); ; {
		if time.Now().After(deadline) {
			t.Fatal("no item was queued in the worker behind the blocked one")
		}
		pool.mu.Lock()
		n := 0
		for w := range pool.procs {
			w.mu.Lock()
			n += len(w.outstanding)
			w.mu.Unlock()
		}
		pool.mu.Unlock()
		if n > 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := <-blocked
	if steps.ClassOf(err) != "crash" || !strings.Contains(err.Error(), "signal 9") || !strings.Contains(err.Error(), strconv.Itoa(pid)) {
		t.Errorf("killed item: got %v, want a crash error naming pid %d and signal 9", err, pid)
	}
	for i, o := range <-rest {
		if o.err != nil {
			t.Errorf("item %d queued behind the killed one failed: %v", i, o.err)
		} else if pidOf(t, o.v) == int64(pid) {
			t.Errorf("item %d claims to have run in the killed worker", i)
		}
	}
	if pool.Started() != 2 {
		t.Errorf("%d workers started, want 2 (the first and its replacement)", pool.Started())
	}
}

// heldItems is how many items the pool holds: queued, or sent to a worker
// and not answered.
func heldItems(p *Pool) int {
	n := p.queue.Len()
	p.mu.Lock()
	defer p.mu.Unlock()
	for w := range p.procs {
		w.mu.Lock()
		n += len(w.outstanding)
		w.mu.Unlock()
	}
	return n
}

// doInOrder starts Do for each item in turn, each once the one before is
// held by the pool, so that they reach the worker in this order.
func doInOrder(ctx context.Context, t *testing.T, p *Pool, items []any) func() []outcomeAt {
	t.Helper()
	out := make([]outcomeAt, len(items))
	var wg sync.WaitGroup
	base := heldItems(p)
	for i, it := range items {
		wg.Go(func() {
			v, err := p.Do(ctx, steps.Input{Index: int64(i), Item: it}, nil)
			out[i] = outcomeAt{v, err}
		})
		for deadline := time.Now().Add(30 * time.Second); heldItems(p) < base+i+1; {
			if time.Now().After(deadline) {
				t.Fatalf("item %d (%v) never reached the pool", i, it)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	return func() []outcomeAt {
		wg.Wait()
		return out
	}
}

// A worker holds many items when it dies: some done but not yet reported,
// the one it runs, some not started. Only the running one may fail. Here
// the items done before each crash are the same every time, through four
// workers dying in a row: blame that counted them as suspects would fail
// them in the end.
func TestWorkerDeathBlamesOnlyTheRunningItem(t *testing.T) {
	pool, stderr := newTestPool(t, "", nil, Config{Workers: 1, InFlight: 256, BatchLatency: time.Hour})
	ctx := context.Background()
	// Once an item's time is measured, the window is as wide as it goes:
	// every item below crosses to each worker in one frame.
	if _, err := pool.Do(ctx, steps.Input{Item: "echo"}, nil); err != nil {
		t.Fatal(err)
	}
	if pool.window() != pool.cfg.MaxWindow {
		t.Fatalf("window %d, want %d", pool.window(), pool.cfg.MaxWindow)
	}
	gate := filepath.Join(t.TempDir(), "gate")
	var items []any
	items = append(items, "gate:"+gate)
	for range 8 {
		items = append(items, "echo:before")
	}
	const crashes = 4
	for range crashes {
		items = append(items, "exit:3")
	}
	for range 8 {
		items = append(items, "echo:after")
	}
	// The gate holds the worker until every item is queued behind it.
	wait := doInOrder(ctx, t, pool, items)
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	out := wait()
	pids := map[int64]bool{}
	for i, o := range out {
		switch it := items[i].(string); {
		case it == "exit:3":
			if steps.ClassOf(o.err) != "crash" || !strings.Contains(o.err.Error(), "exited with status 3") {
				t.Errorf("item %d (%s): got %v, want the crash error of its worker", i, it, o.err)
			}
		case o.err != nil:
			t.Errorf("item %d (%s) failed with the crash of another item: %v", i, it, o.err)
		case it != items[0]:
			pids[pidOf(t, o.v)] = true
		}
	}
	if len(pids) != 1 {
		t.Errorf("the innocent items report %d workers, want the last one alone: results of dead workers were used", len(pids))
	}
	if pool.Started() != crashes+1 {
		t.Errorf("%d workers started, want %d", pool.Started(), crashes+1)
	}
	if !strings.Contains(stderr.String(), "run again in another worker") {
		t.Errorf("the log does not say the held items run again:\n%s", stderr)
	}
}

func TestTimeoutStopsSpinningItem(t *testing.T) {
	pool, _ := newTestPool(t, "", nil, Config{Workers: 1, KillGrace: 200 * time.Millisecond})
	first, err := pool.Do(context.Background(), steps.Input{Item: "echo"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = pool.Do(ctx, steps.Input{Item: "spin"}, nil)
	if !errors.Is(err, context.DeadlineExceeded) || steps.ClassOf(err) != "timeout" || !strings.Contains(err.Error(), "stopped worker process") {
		t.Fatalf("got %v, want a timeout that stopped the worker", err)
	}
	waitGone(t, int(pidOf(t, first)))
	v, err := pool.Do(context.Background(), steps.Input{Item: "echo"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if pidOf(t, v) == pidOf(t, first) {
		t.Errorf("the item after the timeout ran in the stopped worker")
	}
}

func TestTimeoutKillsGrandchildren(t *testing.T) {
	pool, _ := newTestPool(t, "", nil, Config{Workers: 1, KillGrace: 300 * time.Millisecond})
	pidFile := filepath.Join(t.TempDir(), "child")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := pool.Do(ctx, steps.Input{Item: "spawn:" + pidFile}, nil)
		done <- err
	}()
	var child int
	for child == 0 {
		b, _ := os.ReadFile(pidFile)
		child, _ = strconv.Atoi(string(b))
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	// The grandchild is in a process group of its own, out of reach of a
	// kill of the worker's group: only the descendant walk finds it.
	waitGone(t, child)
}

func TestMemoryLimit(t *testing.T) {
	for _, item := range []string{"hog", "childhog"} {
		t.Run(item, func(t *testing.T) {
			pool, _ := newTestPool(t, "", nil, Config{Workers: 1, Memory: 100 << 20, MemoryPoll: 20 * time.Millisecond})
			_, err := pool.Do(context.Background(), steps.Input{Item: item}, nil)
			if steps.ClassOf(err) != "memory" || !strings.Contains(err.Error(), "exceeded the memory limit of 100MiB") {
				t.Fatalf("got %v (class %s), want a memory error naming the 100MiB limit", err, steps.ClassOf(err))
			}
			if _, err := pool.Do(context.Background(), steps.Input{Item: "echo"}, nil); err != nil {
				t.Errorf("after the kill: %v", err)
			}
		})
	}
}

func TestCancelAllInFlight(t *testing.T) {
	pool, _ := newTestPool(t, "", nil, Config{Workers: 3, InFlight: 12, KillGrace: 500 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	items := make([]any, 12)
	for i := range items {
		items[i] = "sleep:1h"
	}
	if i := 5; true {
		items[i] = "spin" // one that ignores the cancel
	}
	res := make(chan []outcomeAt, 1)
	go func() { res <- doAll(ctx, pool, items) }()
	for pool.Started() < 3 {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	for i, o := range <-res {
		if !errors.Is(o.err, context.Canceled) {
			t.Errorf("item %d: got %v, want context.Canceled", i, o.err)
		}
	}
	// The pool serves on with fresh workers.
	out := doAll(context.Background(), pool, []any{"echo", "echo", "echo"})
	for _, o := range out {
		if o.err != nil {
			t.Errorf("after cancelling: %v", o.err)
		}
	}
}

func TestMaxTasksPerChildRecycles(t *testing.T) {
	pool, _ := newTestPool(t, "", nil, Config{Workers: 1, MaxTasksPerChild: 3})
	count := map[int64]int{}
	var order []int64
	for i := range 10 {
		v, err := pool.Do(context.Background(), steps.Input{Index: int64(i), Item: "echo"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		pid := pidOf(t, v)
		if count[pid] == 0 {
			order = append(order, pid)
		}
		count[pid]++
	}
	if len(order) != 4 {
		t.Fatalf("10 items at 3 per worker ran in %d workers (%v), want 4", len(order), count)
	}
	for _, pid := range order[:3] {
		if count[pid] != 3 {
			t.Errorf("worker %d ran %d items, want 3", pid, count[pid])
		}
		waitGone(t, int(pid))
	}
}

func TestBuildErrorFailsEveryItem(t *testing.T) {
	text := strings.Replace(testPipeline, `tag: "${ vars.tag }"`, "fail_build: true", 1)
	pool, _ := newTestPool(t, text, nil, Config{Workers: 2})
	out := doAll(context.Background(), pool, []any{"echo", "echo", "echo"})
	for _, o := range out {
		var se *steps.Error
		if !errors.As(o.err, &se) || !se.Permanent || !strings.Contains(o.err.Error(), "fail_build is set") {
			t.Errorf("got %v, want a permanent error with the build failure", o.err)
		}
	}
	if _, err := pool.Do(context.Background(), steps.Input{Item: "echo"}, nil); err == nil {
		t.Errorf("a broken pool accepted an item")
	}
}

func TestProgramWithoutWorkerRole(t *testing.T) {
	pool, _ := newTestPool(t, "", nil, Config{Workers: 1, Command: []string{"/bin/sh", "-c", "echo usage: flow run FILE >&2; exit 2"}})
	_, err := pool.Do(context.Background(), steps.Input{Item: "echo"}, nil)
	if err == nil || !strings.Contains(err.Error(), "procpool.IsWorker") || !strings.Contains(err.Error(), "usage: flow run FILE") || !strings.Contains(err.Error(), "status 2") {
		t.Fatalf("got %v, want an error explaining the worker role, with the program's output", err)
	}
}

// A worker that answers in another protocol version (the flow binary was
// replaced during the run) is refused with a message that says so, and the
// stage's items fail instead of being sent in a form it does not read.
func TestWorkerOfAnotherProtocolVersion(t *testing.T) {
	pool, _ := newTestPool(t, "", nil, Config{Workers: 1, Command: []string{os.Args[0]}, Env: []string{childEnv + "=v1worker"}})
	// The fake worker answers no item: the guard only keeps a broken
	// build from hanging.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := pool.Do(ctx, steps.Input{Item: "echo"}, nil)
	var se *steps.Error
	if err == nil || !errors.As(err, &se) || !se.Permanent || !strings.Contains(err.Error(), "protocol version 1, this flow 2") || !strings.Contains(err.Error(), "binary changed during the run") {
		t.Fatalf("got %v, want a permanent error naming both protocol versions", err)
	}
}

func TestWorkerOutputIsForwarded(t *testing.T) {
	pool, stderr := newTestPool(t, "", nil, Config{Workers: 1})
	if _, err := pool.Do(context.Background(), steps.Input{Item: "print:hello"}, nil); err != nil {
		t.Fatal(err)
	}
	pool.Close()
	for _, want := range []string{"worker ", ": printed to stdout: hello", ": printed to stderr: hello"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
}

func TestHungWorkerIsKilled(t *testing.T) {
	// A timeout well above the heartbeat, so that a healthy worker starved
	// of CPU on a loaded machine (-race) is not the one taken for hung.
	pool, _ := newTestPool(t, "", nil, Config{Workers: 1, Heartbeat: 100 * time.Millisecond, HeartbeatTimeout: 2 * time.Second})
	first, err := pool.Do(context.Background(), steps.Input{Item: "echo"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pid := int(pidOf(t, first))
	done := make(chan error, 1)
	go func() {
		_, err := pool.Do(context.Background(), steps.Input{Item: "sleep:1h"}, nil)
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	err = <-done
	if steps.ClassOf(err) != "crash" || !strings.Contains(err.Error(), "sent nothing") {
		t.Fatalf("got %v, want a crash error for a silent worker", err)
	}
}

func TestCloseFailsWaitingItems(t *testing.T) {
	pool, _ := newTestPool(t, "", nil, Config{Workers: 1, InFlight: 4, KillGrace: 200 * time.Millisecond})
	res := make(chan []outcomeAt, 1)
	go func() { res <- doAll(context.Background(), pool, []any{"sleep:1h", "sleep:1h", "sleep:1h"}) }()
	for pool.Started() < 1 {
		time.Sleep(5 * time.Millisecond)
	}
	pool.Close()
	for i, o := range <-res {
		if o.err == nil {
			t.Errorf("item %d succeeded after Close", i)
		}
	}
	if _, err := pool.Do(context.Background(), steps.Input{Item: "echo"}, nil); err == nil {
		t.Errorf("Do after Close succeeded")
	}
}

func TestParentDeathStopsWorkers(t *testing.T) {
	dir := t.TempDir()
	file, pidFile := filepath.Join(dir, "pipeline.yaml"), filepath.Join(dir, "pid")
	if err := os.WriteFile(file, []byte(testPipeline), 0o644); err != nil {
		t.Fatal(err)
	}
	parent := exec.Command(os.Args[0])
	parent.Env = append(os.Environ(), childEnv+"=parent", "FLOW_PROCPOOL_TEST_PIPELINE="+file,
		"FLOW_PROCPOOL_TEST_PIDFILE="+pidFile, "FLOW_PROCPOOL_TEST_WORKER_MARK="+testMark)
	var stderr syncBuffer
	parent.Stderr = &stderr
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	var worker int
	for deadline := time.Now().Add(30 * time.Second); worker == 0; {
		if time.Now().After(deadline) {
			parent.Process.Kill()
			parent.Wait()
			t.Fatalf("the worker never started; parent output:\n%s", stderr.String())
		}
		b, _ := os.ReadFile(pidFile)
		worker, _ = strconv.Atoi(string(b))
		time.Sleep(5 * time.Millisecond)
	}
	if err := parent.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	parent.Wait()
	waitGone(t, worker)
	checkNoOrphans(t)
}

package cluster

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/steps/all"
)

// The test binary is also a worker process: with testWorkerEnv set to a
// NATS URL it serves until SIGTERM, as `flow worker` does.
const testWorkerEnv = "FLOW_CLUSTER_TEST_WORKER"

// testProfileEnv, set to a path prefix, makes each worker process write a
// CPU profile there (PREFIX.NAME).
const testProfileEnv = "FLOW_CLUSTER_TEST_CPUPROFILE"

func TestMain(m *testing.M) {
	if url := os.Getenv(testWorkerEnv); url != "" {
		os.Exit(workerMain(url))
	}
	os.Exit(m.Run())
}

func workerMain(url string) int {
	nc, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, os.Interrupt)
	go func() { <-sigs; cancel() }()
	slots, _ := strconv.Atoi(os.Getenv("FLOW_CLUSTER_TEST_SLOTS"))
	w, err := NewWorker(ctx, nc, WorkerConfig{Name: os.Getenv("FLOW_CLUSTER_TEST_NAME"), Slots: max(slots, 1), Registry: all.Registry(), Settings: testSettings, Log: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if path := os.Getenv(testProfileEnv); path != "" {
		// Benchmarks profile their worker processes: one file each,
		// written when the worker is stopped with SIGTERM.
		f, err := os.Create(path + "." + os.Getenv("FLOW_CLUSTER_TEST_NAME"))
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer f.Close()
			defer pprof.StopCPUProfile()
		}
	}
	fmt.Println("ready")
	w.Serve(ctx)
	return 0
}

// workerProc is a worker process of a test, restarted when it dies if
// keep is set (as systemd would).
type workerProc struct {
	t    testing.TB
	url  string
	name string
	mu   sync.Mutex
	cmd  *exec.Cmd
	keep bool
	done chan struct{}
}

func startProc(t testing.TB, url, name string, slots int, keep bool) *workerProc {
	w := &workerProc{t: t, url: url, name: name, keep: keep, done: make(chan struct{})}
	w.start(slots)
	t.Cleanup(func() {
		w.mu.Lock()
		w.keep = false
		w.mu.Unlock()
		// A restart may be under way: kill whatever process is current
		// until the last one is gone.
		for {
			w.mu.Lock()
			c := w.cmd
			w.mu.Unlock()
			c.Process.Signal(syscall.SIGCONT)
			if os.Getenv(testProfileEnv) != "" {
				c.Process.Signal(syscall.SIGTERM) // writes the profile
				select {
				case <-w.done:
					return
				case <-time.After(3 * time.Second):
				}
			}
			c.Process.Kill()
			select {
			case <-w.done:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
	return w
}

func (w *workerProc) start(slots int) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), testWorkerEnv+"="+w.url, "FLOW_CLUSTER_TEST_NAME="+w.name, "FLOW_CLUSTER_TEST_SLOTS="+strconv.Itoa(slots))
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	// Ready once it has connected and made sure of the streams.
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		w.t.Fatalf("worker %s did not start: %q", w.name, line)
	}
	w.mu.Lock()
	w.cmd = cmd
	w.mu.Unlock()
	go func() {
		cmd.Wait()
		w.mu.Lock()
		again := w.keep
		w.mu.Unlock()
		if again {
			w.start(slots)
			return
		}
		close(w.done)
	}()
}

func (w *workerProc) signal(s syscall.Signal) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.cmd.Process.Signal(s)
}

func sortedUnique(t *testing.T, out string) []int {
	t.Helper()
	seen := map[int]bool{}
	var got []int
	for _, l := range lines(out) {
		n, err := strconv.Atoi(l)
		if err != nil {
			t.Fatalf("output line %q", l)
		}
		if seen[n] {
			t.Errorf("item %d came out twice", n)
		}
		seen[n] = true
		got = append(got, n)
	}
	sort.Ints(got)
	return got
}

const slowPipeline = `version: 1
stages:
  - {name: src, source: {range: {from: 1, to: 24}}}
  - {name: calc, step: compute, mode: cluster, workers: 24, with: {value: "${ sleep(0.4) ?? item }"}}
`

// A worker SIGKILLed mid-item: the batches it held come back to the other
// worker after the ack wait, and every item comes out exactly once. The items
// reach the runner by DoBatch, by the dozen: a worker dies mid-batch.
func TestClusterWorkerKilledMidItem(t *testing.T) {
	srv := startServer(t, "127.0.0.1:0")
	url := srv.ClientURL()
	a := startProc(t, url, "a", 4, false)
	startProc(t, url, "b", 4, false)
	first := make(chan struct{})
	ev := &attempts{workers: map[string]int{}, firstDone: first}
	go func() {
		// The first items are done at 0.4 s of work, and each worker has
		// taken its next ones; a kill half an item later finds a holding
		// them, however long the run took to start.
		<-first
		time.Sleep(200 * time.Millisecond)
		a.signal(syscall.SIGKILL)
	}()
	var batched int64
	rep, out := runClusterThen(t, Conn{Embedded: srv}, slowPipeline, ev, func(c *Client) { batched = batchedItems(c, 1) })
	if rep.Status != report.StatusSucceeded {
		t.Fatalf("status %s: %s", rep.Status, rep.Reason)
	}
	if batched != 24 {
		t.Errorf("%d items went through DoBatch, want all 24: the guarantee is tested on another path than the one runs take", batched)
	}
	got := sortedUnique(t, out)
	if len(got) != 24 || got[0] != 1 || got[23] != 24 {
		t.Fatalf("items out: %v", got)
	}
	if ev.redeliv == 0 {
		t.Errorf("no attempt records a redelivery, yet worker a died holding items (workers %v)", ev.workers)
	}
	if calc := rep.Stages[1]; calc.Retries != 0 {
		t.Errorf("a worker's death counted %d retries against the items' budget", calc.Retries)
	}
}

// A worker that hangs (SIGSTOP) loses its batches to the others; when it
// comes back its late answers are ignored: each item is counted once.
func TestClusterHungWorkerIsFenced(t *testing.T) {
	srv := startServer(t, "127.0.0.1:0")
	url := srv.ClientURL()
	a := startProc(t, url, "a", 4, false)
	startProc(t, url, "b", 4, false)
	go func() {
		time.Sleep(600 * time.Millisecond)
		a.signal(syscall.SIGSTOP)
	}()
	var batched int64
	rep, out := runClusterThen(t, Conn{Embedded: srv}, slowPipeline, nil, func(c *Client) { batched = batchedItems(c, 1) })
	a.signal(syscall.SIGCONT)
	if rep.Status != report.StatusSucceeded {
		t.Fatalf("status %s: %s", rep.Status, rep.Reason)
	}
	if batched != 24 {
		t.Errorf("%d items went through DoBatch, want all 24", batched)
	}
	if got := sortedUnique(t, out); len(got) != 24 {
		t.Fatalf("items out: %v", got)
	}
	if calc := rep.Stages[1]; calc.Succeeded != 24 || calc.In != 24 {
		t.Errorf("calc %+v", *calc)
	}
}

// An item that kills every worker that runs it fails after MaxDeliver
// deliveries, with class crash; the items around it succeed.
func TestClusterPoisonItem(t *testing.T) {
	srv := startServer(t, "127.0.0.1:0")
	url := srv.ClientURL()
	startProc(t, url, "a", 2, true)
	startProc(t, url, "b", 2, true)
	rep, out := runCluster(t, srv, `version: 1
stages:
  - {name: src, source: {items: [one, two, poison, three, four]}}
  - name: calc
    step: exec
    mode: cluster
    workers: 1
    on_error: skip
    with:
      argv: [sh, -c, 'if [ "$1" = poison ]; then kill -9 $PPID; sleep 5; fi; echo "$1"', sh, "${ item }"]
`, nil)
	calc := rep.Stages[1]
	if calc.Succeeded != 4 || calc.Skipped != 1 {
		t.Fatalf("calc %+v\n%s", *calc, out)
	}
	if len(rep.Failures) != 1 || rep.Failures[0].Item != "poison" || rep.Failures[0].Class != "crash" || !strings.Contains(rep.Failures[0].Error, "delivered to workers 3 times") {
		t.Fatalf("failures %+v", rep.Failures)
	}
}

// Twenty workers SIGKILLed at random moments of one run (each restarted,
// as systemd would): no item is lost, none comes out twice.
func TestClusterTwentyKills(t *testing.T) {
	if testing.Short() {
		t.Skip("kills twenty worker processes: about half a minute")
	}
	srv := startServer(t, "127.0.0.1:0")
	url := srv.ClientURL()
	ws := []*workerProc{startProc(t, url, "a", 4, true), startProc(t, url, "b", 4, true)}
	done := make(chan struct{})
	kills := 0
	go func() {
		defer close(done)
		rng := rand.New(rand.NewPCG(1, 2))
		for kills < 20 {
			time.Sleep(time.Duration(100+rng.IntN(400)) * time.Millisecond)
			ws[rng.IntN(len(ws))].signal(syscall.SIGKILL)
			kills++
		}
	}()
	rep, out := runCluster(t, srv, `version: 1
stages:
  - {name: src, source: {range: {from: 1, to: 600}}}
  - {name: calc, step: compute, mode: cluster, workers: 16, with: {value: "${ sleep(0.02) ?? item }"}}
`, nil)
	<-done
	if rep.Status != report.StatusSucceeded {
		t.Fatalf("status %s: %s", rep.Status, rep.Reason)
	}
	got := sortedUnique(t, out)
	if len(got) != 600 || got[0] != 1 || got[599] != 600 {
		t.Fatalf("%d items out after %d kills", len(got), kills)
	}
	t.Logf("600 items, each once, through %d worker kills", kills)
}

// The NATS server restarts mid-run (same port, same JetStream files):
// the run and its worker processes reconnect, and every item comes out
// once.
func TestClusterServerRestart(t *testing.T) {
	dir := t.TempDir()
	srv, stop, err := Embedded{Listen: "127.0.0.1:0", StoreDir: dir}.Start()
	if err != nil {
		t.Fatal(err)
	}
	// The server chose its port; the restart comes back on the same one.
	addr := srv.Addr().String()
	url := srv.ClientURL()
	startProc(t, url, "a", 4, false)
	startProc(t, url, "b", 4, false)
	type restart struct {
		stop func()
		err  error
	}
	restarted := make(chan restart, 1)
	go func() {
		time.Sleep(700 * time.Millisecond)
		stop()
		time.Sleep(500 * time.Millisecond)
		_, stop2, err := Embedded{Listen: addr, StoreDir: dir}.Start()
		restarted <- restart{stop2, err}
	}()
	rep, out := runClusterOn(t, Conn{URL: url}, slowPipeline, nil)
	r := <-restarted
	if r.err != nil {
		t.Fatalf("restarting the server on %s: %v", addr, r.err)
	}
	defer r.stop()
	if rep.Status != report.StatusSucceeded {
		t.Fatalf("status %s: %s", rep.Status, rep.Reason)
	}
	if got := sortedUnique(t, out); len(got) != 24 {
		t.Fatalf("items out: %v", got)
	}
}

package main

// End-to-end tests of the shared cache (flow run --cache-store nats): two
// flow processes, each with its own directory and state database (two
// machines), against one NATS server, counting each item's executions on
// the fetch stage's server.

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/flowrun/flow/cluster"
)

// sharedNATS starts a NATS server with JetStream on a loopback port, as a
// cluster's server would be, and returns its URL.
func sharedNATS(t *testing.T) string {
	t.Helper()
	// ":0" is any free port, taken by the server itself: nothing can
	// take it between a probe and the server's listen.
	srv, stop, err := cluster.Embedded{Listen: "127.0.0.1:0"}.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return srv.ClientURL()
}

const sharedItems = 400

func sharedPipeline(base string) string {
	return fmt.Sprintf(`version: 1
name: shared
stages:
  - name: nums
    source: {range: {from: 1, to: %d}}
  - name: get
    step: fetch
    workers: 8
    cache: on
    with:
      url: "%s/n/${ item }"
      decode: json
  - name: body
    step: compute
    with: {value: "${ item.body }"}
  - name: out
    sink: {write: {path: out.jsonl}}
`, sharedItems, base)
}

// sharedCounter answers /n/N after a short pause (so that the two runs
// meet on items in flight) and counts the requests per item.
type sharedCounter struct {
	mu    sync.Mutex
	hits  map[int]int
	onHit func(n, count int)
}

func (c *sharedCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/n/"))
	if err != nil {
		http.Error(w, "bad path", http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	c.hits[n]++
	count := c.hits[n]
	c.mu.Unlock()
	if c.onHit != nil {
		c.onHit(n, count)
	}
	time.Sleep(10 * time.Millisecond)
	fmt.Fprintf(w, `{"n": %d}`, n)
}

func (c *sharedCounter) count(n int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits[n]
}

type sharedRun struct {
	cmd            *exec.Cmd
	dir            string
	stdout, stderr bytes.Buffer
}

func startShared(t *testing.T, pipeline, natsURL string, args ...string) *sharedRun {
	t.Helper()
	r := &sharedRun{dir: t.TempDir()}
	r.cmd = relCommand(t, r.dir, pipeline, append([]string{"--nats", natsURL, "--cache-store", "nats"}, args...)...)
	r.cmd.Stdout, r.cmd.Stderr = &r.stdout, &r.stderr
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *sharedRun) wait(t *testing.T) *relResult {
	t.Helper()
	return relCollect(t, r.dir, relWait(t, r.cmd), r.stdout.String(), r.stderr.String())
}

// Two runs of one pipeline at once on two "machines" sharing the cache:
// every item is fetched once in total, and both runs write every output.
func TestSharedCacheTwoRunsComputeEachItemOnce(t *testing.T) {
	counter := &sharedCounter{hits: map[int]int{}}
	srv := httptest.NewServer(counter)
	defer srv.Close()
	url := sharedNATS(t)
	pipeline := sharedPipeline(srv.URL)

	a := startShared(t, pipeline, url)
	b := startShared(t, pipeline, url)
	ra, rb := a.wait(t), b.wait(t)
	for name, r := range map[string]*relResult{"a": ra, "b": rb} {
		if r.code != 0 {
			t.Fatalf("run %s: exit %d\n%s", name, r.code, r.stderr)
		}
		if got := r.stage(t, "get").Succeeded; got != sharedItems {
			t.Errorf("run %s: %d succeeded, want %d", name, got, sharedItems)
		}
	}
	outA, outB := relLines(t, filepath.Join(a.dir, "out.jsonl")), relLines(t, filepath.Join(b.dir, "out.jsonl"))
	if len(outA) != sharedItems || strings.Join(outA, "\n") != strings.Join(outB, "\n") {
		t.Fatalf("outputs differ or are short: %d and %d lines", len(outA), len(outB))
	}
	for n := 1; n <= sharedItems; n++ {
		if c := counter.count(n); c != 1 {
			t.Fatalf("item %d fetched %d times across the two runs, want once", n, c)
		}
		if outA[n-1] != fmt.Sprintf(`{"n":%d}`, n) {
			t.Fatalf("line %d: %s", n, outA[n-1])
		}
	}
	ca, cb := ra.stage(t, "get").Cached, rb.stage(t, "get").Cached
	if ca+cb != sharedItems {
		t.Errorf("cached %d + %d, want %d: each item computed by one run and answered to the other", ca, cb, sharedItems)
	}
	t.Logf("run a computed %d, run b %d", sharedItems-ca, sharedItems-cb)

	// explain --nats: with this machine's entries removed, a local miss
	// and a hit in the shared cache.
	if code, _, stderr := flowCmd(t, a.dir, "cache", "rm", "--all"); code != 0 {
		t.Fatalf("cache rm: exit %d\n%s", code, stderr)
	}
	code, stdout, stderr := flowCmd(t, a.dir, "cache", "explain", "get", "p.yaml", "--item", "7", "--nats", url)
	if code != 0 || !strings.Contains(stdout, "miss: ") || !strings.Contains(stdout, "shared: hit: ") {
		t.Errorf("explain --nats: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, _ = flowCmd(t, a.dir, "cache", "explain", "get", "p.yaml", "--item", "7000", "--nats", url)
	if code != 0 || !strings.Contains(stdout, "shared: miss: ") {
		t.Errorf("explain --nats, an item never run: exit %d\n%s", code, stdout)
	}

	// A third run, another machine with an empty state database: all of it
	// from the shared cache.
	rc := startShared(t, pipeline, url).wait(t)
	if rc.code != 0 || rc.stage(t, "get").Cached != sharedItems {
		t.Errorf("third run: exit %d, cached %d, want %d\n%s", rc.code, rc.stage(t, "get").Cached, sharedItems, rc.stderr)
	}
}

// A run SIGKILLed while it holds claims: another run waits for them to
// expire (--cache-claim-ttl), takes them over and finishes the work.
func TestSharedCacheDeadRunsClaimsAreTakenOver(t *testing.T) {
	var victim atomic.Pointer[os.Process]
	killed := make(chan struct{})
	var once sync.Once
	counter := &sharedCounter{hits: map[int]int{}}
	counter.onHit = func(n, count int) {
		if n == 50 && count == 1 {
			if p := victim.Load(); p != nil {
				_ = p.Signal(syscall.SIGKILL)
				once.Do(func() { close(killed) })
			}
		}
	}
	srv := httptest.NewServer(counter)
	defer srv.Close()
	url := sharedNATS(t)
	pipeline := sharedPipeline(srv.URL)

	a := startShared(t, pipeline, url, "--cache-claim-ttl", "1s")
	victim.Store(a.cmd.Process)
	select {
	case <-killed:
	case <-time.After(relGuard):
		t.Fatal("the first run never reached item 50")
	}
	if code := relWait(t, a.cmd); code != -int(syscall.SIGKILL) {
		t.Fatalf("first run: exit %d\n%s", code, a.stderr.String())
	}
	b := startShared(t, pipeline, url, "--cache-claim-ttl", "1s").wait(t)
	if b.code != 0 || b.stage(t, "get").Succeeded != sharedItems {
		t.Fatalf("second run: exit %d, %d succeeded\n%s", b.code, b.stage(t, "get").Succeeded, b.stderr)
	}
	if c := counter.count(50); c != 2 {
		t.Errorf("item 50 (the dead run's claim) fetched %d times, want 2: once by the dead run, once by the one that took it over", c)
	}
	for n := 1; n <= sharedItems; n++ {
		if c := counter.count(n); c < 1 || c > 2 {
			t.Errorf("item %d fetched %d times", n, c)
		}
	}
}

package main

// End-to-end tests of resume and the result cache (docs/state.md, "Resume
// and the result cache"), with the real binary: runs SIGKILLed at random
// moments and resumed, and what a change of options or files re-runs.

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
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

	"github.com/flowrun/flow/store"
)

// cacheItems is the size of the resumed pipeline.
const cacheItems = 10000

// cacheResumePipeline: a cheap compute, then a fetch per item whose
// requests the test server counts (the side channel: each request is one
// execution of the item), then a compute keeping the body only, into
// out.jsonl in input order. Every stage stores its results on every run
// and reuses them with --resume: fetch GET by default, compute with
// cache: resume.
func cacheResumePipeline(base string) string {
	return fmt.Sprintf(`version: 1
name: resume
stages:
  - name: nums
    source: {range: {from: 1, to: %d}}
  - name: triple
    step: compute
    cache: resume
    with: {value: "${ item * 3 }"}
  - name: get
    step: fetch
    workers: 8
    with:
      url: "%s/n/${ item }"
      decode: json
  - name: body
    step: compute
    cache: resume
    with: {value: "${ item.body }"}
  - name: out
    sink: {write: {path: out.jsonl}}
`, cacheItems, base)
}

// cacheCounter is the fetch stage's server: it counts the requests per
// item and, when armed, kills the flow process after a number of them.
type cacheCounter struct {
	mu     sync.Mutex
	hits   map[int]int
	total  atomic.Int64
	killAt atomic.Int64 // kill when total reaches it; 0: never
	proc   atomic.Pointer[os.Process]
	killed atomic.Bool
}

func (c *cacheCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/n/"))
	if err != nil {
		http.Error(w, "bad path", http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	c.hits[n]++
	c.mu.Unlock()
	if t := c.total.Add(1); t == c.killAt.Load() {
		if p := c.proc.Load(); p != nil {
			// SIGKILL: nothing of the process gets to run after it, no
			// deferred write, no flush; other requests are still in flight.
			_ = p.Signal(syscall.SIGKILL)
			c.killed.Store(true)
		}
	}
	fmt.Fprintf(w, `{"n": %d, "half": %d}`, n, n/2)
}

func (c *cacheCounter) snapshot() map[int]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[int]int, len(c.hits))
	for k, v := range c.hits {
		m[k] = v
	}
	return m
}

// storedItems opens the state database of dir and returns the inputs of
// stage whose success is recorded.
func storedItems(t *testing.T, dir, stage string) map[int]bool {
	t.Helper()
	db, err := store.Open(filepath.Join(dir, store.DirName, store.FileName), store.Options{MustExist: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	l, err := db.List(context.Background(), store.CacheFilter{Stage: stage})
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]bool{}
	for _, e := range l {
		n, err := strconv.Atoi(string(e.Parts.Item))
		if err != nil {
			t.Fatalf("entry %s: item %q", e.Key, e.Parts.Item)
		}
		out[n] = true
	}
	return out
}

// A pipeline of 10,000 items SIGKILLed at 20 random moments and resumed
// each time with --resume: the final output is byte for byte that of an
// uninterrupted run, and no item whose success was recorded before a run
// started is executed again by it.
func TestHostileCacheResumeAfterSIGKILL(t *testing.T) {
	counter := &cacheCounter{hits: map[int]int{}}
	srv := httptest.NewServer(counter)
	defer srv.Close()
	pipeline := cacheResumePipeline(srv.URL)

	// The reference: one uninterrupted run, in a directory of its own.
	ref := relRun(t, pipeline, "--no-state")
	if ref.code != 0 {
		t.Fatalf("reference run: exit %d\n%s", ref.code, ref.stderr)
	}
	want, err := os.ReadFile(filepath.Join(ref.dir, "out.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(want, []byte("\n")); n != cacheItems {
		t.Fatalf("reference output has %d lines, want %d", n, cacheItems)
	}

	dir := t.TempDir()
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	t.Logf("seed %d", seed)
	const kills = 20
	killedMidRun := 0
	for i := 0; i <= kills; i++ {
		var recorded map[int]bool
		if i > 0 {
			recorded = storedItems(t, dir, "get")
		}
		before := counter.snapshot()
		start := counter.total.Load()
		last := i == kills
		if !last {
			// A random moment, counted in requests so that it falls
			// while this run still has items to fetch.
			left := int64(cacheItems - len(recorded))
			counter.killAt.Store(start + 1 + rng.Int64N(max(1, left/(kills-int64(i)+1))))
		} else {
			counter.killAt.Store(0)
		}
		counter.killed.Store(false)
		cmd := relCommand(t, dir, pipeline, "--resume")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		counter.proc.Store(cmd.Process)
		code := relWait(t, cmd)
		counter.proc.Store(nil)
		if counter.killed.Load() {
			killedMidRun++
			if code != -int(syscall.SIGKILL) {
				t.Fatalf("run %d: exit %d after SIGKILL\n%s", i, code, stderr.String())
			}
		} else if code != 0 {
			t.Fatalf("run %d: exit %d\n%s", i, code, stderr.String())
		}
		after := counter.snapshot()
		for n := range recorded {
			if after[n] != before[n] {
				t.Fatalf("run %d: item %d was stored as a success before the run, and fetched again by it (%d -> %d requests)", i, n, before[n], after[n])
			}
		}
		if last {
			r := relCollect(t, dir, code, stdout.String(), stderr.String())
			if got := r.stage(t, "get").Cached; got != int64(len(recorded)) {
				t.Errorf("final run: get cached %d, want the %d stored before it", got, len(recorded))
			}
			if r.stage(t, "get").Succeeded != cacheItems {
				t.Errorf("final run: get succeeded %d, want %d", r.stage(t, "get").Succeeded, cacheItems)
			}
		}
	}
	if killedMidRun < kills {
		t.Errorf("%d of %d runs were killed mid-run", killedMidRun, kills)
	}
	got, err := os.ReadFile(filepath.Join(dir, "out.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("the resumed output differs from the uninterrupted run's (%d vs %d bytes)", len(got), len(want))
	}
	// Every item was fetched once by the reference run and at least once
	// by the resumed ones; more only when a kill came between the request
	// and the storing of its result.
	hits := counter.snapshot()
	extra := 0
	for n := 3; n <= 3*cacheItems; n += 3 {
		if hits[n] < 2 {
			t.Fatalf("item %d fetched %d times", n, hits[n])
		}
		extra += hits[n] - 2
	}
	t.Logf("%d kills mid-run; %d fetches beyond one per item for the resumed runs (in flight when killed)", killedMidRun, extra)
}

// What a change re-runs: an option of stage 2 re-runs stage 2 and what
// follows, not stage 1; touching an input file re-runs nothing; changing
// its content re-runs that file's items only.
func TestHostileCacheInvalidation(t *testing.T) {
	dir := t.TempDir()
	logs := filepath.Join(dir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	const files = 5
	for i := range files {
		relWrite(t, filepath.Join(logs, fmt.Sprintf("%d.log", i)), []byte(strings.Repeat("ERROR x\n", i+1)+"INFO y\n"))
	}
	pipeline := func(factor int) string {
		return fmt.Sprintf(`version: 1
name: invalidation
stages:
  - name: files
    source: {glob: "logs/*.log"}
  - name: scan
    step: analyze-logs
  - name: weigh
    step: compute
    cache: resume
    with: {value: "${ item.errors * %d }"}
  - name: label
    step: compute
    cache: resume
    with: {value: "${ string(item) + '!' }"}
  - name: out
    sink: {write: {path: out.jsonl}}
`, factor)
	}
	run := func(factor int) *relResult {
		t.Helper()
		cmd := relCommand(t, dir, pipeline(factor), "--resume")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		r := relCollect(t, dir, relWait(t, cmd), stdout.String(), stderr.String())
		if r.code != 0 {
			t.Fatalf("exit %d\n%s", r.code, r.stderr)
		}
		return r
	}
	cached := func(r *relResult) string {
		var parts []string
		for _, s := range []string{"scan", "weigh", "label"} {
			st := r.stage(t, s)
			if st.Succeeded != files {
				t.Fatalf("stage %s: %d succeeded, want %d\n%s", s, st.Succeeded, files, r.raw)
			}
			parts = append(parts, fmt.Sprintf("%s %d", s, st.Cached))
		}
		return strings.Join(parts, ", ")
	}
	expect := func(what string, r *relResult, want string) {
		t.Helper()
		if got := cached(r); got != want {
			t.Errorf("%s: cached %s, want %s", what, got, want)
		}
	}
	// Factors 2 and 7 give no count in common: every item of label changes.
	expect("first run", run(2), "scan 0, weigh 0, label 0")
	expect("same again", run(2), "scan 5, weigh 5, label 5")
	expect("weigh's option changed", run(7), "scan 5, weigh 0, label 0")

	later := time.Now().Add(time.Hour)
	for i := range files {
		if err := os.Chtimes(filepath.Join(logs, fmt.Sprintf("%d.log", i)), later, later); err != nil {
			t.Fatal(err)
		}
	}
	expect("every file touched", run(7), "scan 5, weigh 5, label 5")

	// Ten errors: a count no other file has, so that what follows sees a
	// new item too (an item equal to another file's would be a hit: the
	// cache is content-addressed).
	relWrite(t, filepath.Join(logs, "2.log"), []byte(strings.Repeat("ERROR changed\n", 10)))
	expect("one file changed", run(7), "scan 4, weigh 4, label 4")
	out := relLines(t, filepath.Join(dir, "out.jsonl"))
	if len(out) != files || out[2] != `"70!"` {
		t.Errorf("output after the change: %q, want 5 lines, the third \"70!\"", out)
	}
}

// SIGINT mid-run: every success of the run is in the store when it exits
// (the queued results are committed on the way out), so that a --resume
// runs only what had not succeeded.
func TestHostileCacheInterruptKeepsEverySuccess(t *testing.T) {
	const answered = 500
	var n atomic.Int64
	reached := make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) > answered {
			once.Do(func() { close(reached) })
			<-r.Context().Done() // held until flow gives up on it
			return
		}
		fmt.Fprint(w, `{"ok": true}`)
	}))
	defer srv.Close()
	dir := t.TempDir()
	cmd := relCommand(t, dir, cacheResumePipeline(srv.URL))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-reached:
	case <-time.After(relGuard):
		_ = cmd.Process.Kill()
		t.Fatalf("the run never got past %d requests\n%s", answered, stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	r := relCollect(t, dir, relWait(t, cmd), stdout.String(), stderr.String())
	if r.code != 130 {
		t.Fatalf("exit %d, want 130\n%s", r.code, r.stderr)
	}
	// Every success the report counts is stored; so are items that
	// succeeded but were still held for order: input when the run stopped
	// (counted cancelled), never more than the server answered.
	ok := r.stage(t, "get").Succeeded
	got := int64(len(storedItems(t, dir, "get")))
	if got < ok || got > answered {
		t.Errorf("%d results stored; want at least the %d successes and at most the %d answered", got, ok, answered)
	}
	t.Logf("answered %d, succeeded %d, stored %d", answered, ok, got)
}

// flowCmd runs the flow binary with args in dir and returns its exit
// code, stdout and stderr.
func flowCmd(t *testing.T, dir string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), cliEnv+"=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return relWait(t, cmd), stdout.String(), stderr.String()
}

// flow cache explain, by --item and by --index N of the last run: a hit,
// a miss naming the option that changed, and an error that says what to
// do for each way --index can fail.
func TestHostileCacheExplainByIndex(t *testing.T) {
	dir := t.TempDir()
	pipeline := func(expr string) string {
		return fmt.Sprintf(`version: 1
name: explain
stages:
  - name: nums
    source: {range: {from: 0, to: 9}}
  - name: odd
    step: compute
    when: "${ item %% 2 == 1 }"
    cache: resume
    with: {value: "${ item }"}
  - name: square
    step: compute
    cache: resume
    with: {value: "%s"}
  - name: plain
    step: compute
    with: {value: "${ item }"}
  - name: ranked
    step: sort
    with: {by: "${ item }"}
  - name: out
    sink: {write: {path: out.jsonl}}
`, expr)
	}
	explain := func(args ...string) (int, string, string) {
		t.Helper()
		return flowCmd(t, dir, append([]string{"cache", "explain"}, args...)...)
	}
	relWrite(t, filepath.Join(dir, "p.yaml"), []byte(pipeline("${ item * item }")))
	if code, _, stderr := explain("square", "p.yaml", "--index", "3"); code != 2 || !strings.Contains(stderr, "no run of p.yaml is recorded") || !strings.Contains(stderr, "--item JSON") {
		t.Errorf("before any run: exit %d, %s", code, stderr)
	}
	if code, _, stderr := flowCmd(t, dir, "run", "p.yaml", "--quiet"); code != 0 {
		t.Fatalf("run: exit %d\n%s", code, stderr)
	}

	code, stdout, stderr := explain("square", "p.yaml", "--index", "3")
	if code != 0 || !strings.Contains(stdout, "item 3 of run ") || !strings.Contains(stdout, "in stage square: 3\n") || !strings.Contains(stdout, "hit: ") {
		t.Errorf("--index 3 after the run: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, stdout, _ := explain("square", "p.yaml", "--item", "3"); code != 0 || !strings.HasPrefix(stdout, "hit: ") {
		t.Errorf("--item 3: exit %d\n%s", code, stdout)
	}
	code, stdout, _ = explain("square", "p.yaml", "--index", "5", "--json")
	var x struct {
		Hit   bool   `json:"hit"`
		Run   string `json:"run"`
		Index int64  `json:"index"`
		Item  any    `json:"item"`
	}
	if err := json.Unmarshal([]byte(stdout), &x); code != 0 || err != nil || !x.Hit || x.Run == "" || x.Index != 5 || x.Item != float64(5) {
		t.Errorf("--index 5 --json: exit %d, %v: %s", code, err, stdout)
	}

	// The option changed since: a miss that says which.
	relWrite(t, filepath.Join(dir, "p.yaml"), []byte(pipeline("${ item * item + 1 }")))
	code, stdout, _ = explain("square", "p.yaml", "--index", "3")
	if code != 0 || !strings.Contains(stdout, "miss: ") || !strings.Contains(stdout, `option value changed: "${ item * item }" -> "${ item * item + 1 }"`) {
		t.Errorf("after the change: exit %d\n%s", code, stdout)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"square", "p.yaml", "--index", "10"}, "--index 10 is out of range: the last run"},
		{[]string{"square", "p.yaml", "--index", "4"}, "stored no success of item 4 in stage square"}, // filtered out by odd
		{[]string{"plain", "p.yaml", "--index", "3"}, "stage plain is not cached"},
		{[]string{"ranked", "p.yaml", "--index", "3"}, `no step stage "ranked" whose results are cached`},
		{[]string{"square", "p.yaml", "--index", "3", "--item", "3"}, "give one"},
		{[]string{"square", "p.yaml"}, "--item JSON"},
	} {
		code, _, stderr := explain(c.args...)
		if code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("explain %s: exit %d, stderr %q, want exit 2 and %q", strings.Join(c.args, " "), code, stderr, c.want)
		}
	}
}

// Two runs of one pipeline at once, both storing thousands of results in
// one state database named with --state: both succeed without a warning
// (a SQLITE_BUSY that escaped the writer's retries would be one), both are
// recorded, every result is stored once, and the database passes SQLite's
// integrity check. A third run with --resume answers every item from it.
func TestHostileCacheConcurrentRunsOneStore(t *testing.T) {
	const items = 5000
	dir := t.TempDir()
	state := filepath.Join(t.TempDir(), "state")
	pipeline := fmt.Sprintf(`version: 1
name: twice
stages:
  - name: nums
    source: {range: {from: 1, to: %d}}
  - name: square
    step: compute
    cache: resume
    workers: 4
    with: {value: "${ item * item }"}
  - name: out
    sink: {write: {path: out.jsonl}}
`, items)
	const n = 2
	cmds := make([]*exec.Cmd, n)
	stderrs := make([]bytes.Buffer, n)
	for i := range cmds {
		cmds[i] = relCommand(t, dir, pipeline, "--state", state)
		cmds[i].Stderr = &stderrs[i]
	}
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i, cmd := range cmds {
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); codes[i] = relWait(t, cmd) }()
	}
	wg.Wait()
	for i := range n {
		if codes[i] != 0 || strings.Contains(stderrs[i].String(), "warning") || strings.Contains(stderrs[i].String(), "SQLITE_BUSY") {
			t.Errorf("run %d: exit %d\n%s", i, codes[i], stderrs[i].String())
		}
	}
	db, err := store.Open(filepath.Join(state, store.FileName), store.Options{MustExist: true})
	if err != nil {
		t.Fatal(err)
	}
	l, err := db.List(context.Background(), store.CacheFilter{Stage: "square"})
	if err != nil {
		t.Fatal(err)
	}
	runs, err := db.Runs(context.Background(), store.RunFilter{})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(l) != items {
		t.Errorf("%d results stored, want %d", len(l), items)
	}
	if len(runs) != n || runs[0].Status != "succeeded" || runs[1].Status != "succeeded" {
		t.Errorf("runs recorded: %+v", runs)
	}
	sq, err := sql.Open("sqlite", filepath.Join(state, store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	var check string
	if err := sq.QueryRow("PRAGMA integrity_check").Scan(&check); err != nil || check != "ok" {
		t.Errorf("integrity check: %q, %v", check, err)
	}
	sq.Close()

	cmd := relCommand(t, dir, pipeline, "--state", state, "--resume")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := relCollect(t, dir, relWait(t, cmd), stdout.String(), stderr.String())
	if r.code != 0 || r.stage(t, "square").Cached != items {
		t.Errorf("resumed: exit %d, cached %d, want %d\n%s", r.code, r.stage(t, "square").Cached, items, r.stderr)
	}
}

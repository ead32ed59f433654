package main

// Reliability tests: the real CLI in a process of its own (this test binary
// with cliEnv set), against faults injected from local servers and the file
// system, checking what docs/reliability.md promises: the documented exit
// code, a complete report whatever happens, every item of every stage
// accounted for (in = succeeded + failed + skipped + cancelled + filtered),
// and an output file that is either the old one or the complete new one.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/report"
)

// relGuard only keeps a broken build from hanging the test run; no test
// asserts how fast anything is.
const relGuard = 2 * time.Minute

// relOld is the content of the output file before each run: a failed or
// interrupted run must leave exactly this behind.
const relOld = "{\"old\":true}\n"

type relResult struct {
	code           int
	stdout, stderr string
	rep            *report.Report
	raw            []byte // the report as written
	dir            string
}

// relCommand prepares `flow run p.yaml --report report.json --progress
// plain ARGS...` in dir, with the pipeline text written to dir/p.yaml and
// the old output in dir/out.jsonl.
func relCommand(t *testing.T, dir, pipeline string, args ...string) *exec.Cmd {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "p.yaml"), []byte(pipeline), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "out.jsonl"), []byte(relOld), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], append([]string{"run", "p.yaml", "--report", "report.json", "--progress", "plain"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), cliEnv+"=1")
	return cmd
}

// relRun runs a pipeline to its end and reads what it left.
func relRun(t *testing.T, pipeline string, args ...string) *relResult {
	t.Helper()
	dir := t.TempDir()
	cmd := relCommand(t, dir, pipeline, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	code := relWait(t, cmd)
	return relCollect(t, dir, code, stdout.String(), stderr.String())
}

func relWait(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			return 0
		}
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("wait: %v", err)
		}
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return -int(ws.Signal())
		}
		return ee.ExitCode()
	case <-time.After(relGuard):
		_ = cmd.Process.Kill()
		t.Fatalf("flow did not finish within %v", relGuard)
		return -1
	}
}

func relCollect(t *testing.T, dir string, code int, stdout, stderr string) *relResult {
	t.Helper()
	r := &relResult{code: code, stdout: stdout, stderr: stderr, dir: dir}
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatalf("exit %d and no report: %v\nstderr:\n%s", code, err, stderr)
	}
	r.raw = b
	r.rep = new(report.Report)
	if err := json.Unmarshal(b, r.rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, b)
	}
	return r
}

// check asserts the exit code, a complete and balanced report, and the
// state of out.jsonl: the old content after a failed run (wantOut nil), or
// exactly wantOut lines after a successful one.
func (r *relResult) check(t *testing.T, wantCode int, stages int, wantOut []string) {
	t.Helper()
	ctx := fmt.Sprintf("\nstderr:\n%s\nreport:\n%s", r.stderr, r.raw)
	if r.code != wantCode {
		t.Fatalf("exit code %d, want %d%s", r.code, wantCode, ctx)
	}
	if r.rep.ExitCode != wantCode {
		t.Errorf("report exit_code %d, want %d", r.rep.ExitCode, wantCode)
	}
	if r.rep.Status == "" || r.rep.End.IsZero() || (wantCode != 0 && r.rep.Reason == "") {
		t.Errorf("report incomplete: status %q, end %v, reason %q", r.rep.Status, r.rep.End, r.rep.Reason)
	}
	if len(r.rep.Stages) != stages {
		t.Fatalf("report has %d stages, want %d%s", len(r.rep.Stages), stages, ctx)
	}
	failed := int64(0)
	for _, s := range r.rep.Stages {
		if !s.Balanced() {
			t.Errorf("stage %s loses items: in %d != %d ok + %d failed + %d skipped + %d cancelled + %d filtered%s",
				s.Name, s.In, s.Succeeded, s.Failed, s.Skipped, s.Cancelled, s.Filtered, ctx)
		}
		failed += s.Failed + s.Skipped
	}
	if failed > 0 && len(r.rep.Failures) == 0 {
		t.Errorf("%d items failed and the report lists none", failed)
	}
	for i := 1; i < len(r.rep.Stages); i++ {
		up, s := r.rep.Stages[i-1], r.rep.Stages[i]
		if s.In > up.Out {
			t.Errorf("stage %s received %d items, more than the %d %s passed on", s.Name, s.In, up.Out, up.Name)
		}
	}
	got, err := os.ReadFile(filepath.Join(r.dir, "out.jsonl"))
	if err != nil {
		t.Fatalf("out.jsonl: %v", err)
	}
	if wantOut == nil {
		if string(got) != relOld {
			t.Errorf("a failed run changed out.jsonl:\n%s", got)
		}
	} else {
		lines := strings.Split(strings.TrimSuffix(string(got), "\n"), "\n")
		if strings.Join(lines, "\n") != strings.Join(wantOut, "\n") {
			t.Errorf("out.jsonl:\n%s\nwant:\n%s", got, strings.Join(wantOut, "\n"))
		}
	}
	relNoTemp(t, r.dir)
}

// relNoTemp fails if a temporary file of an atomic write is left in dir.
func relNoTemp(t *testing.T, dir string) {
	t.Helper()
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && strings.Contains(filepath.Base(p), ".tmp") {
			t.Errorf("temporary file left behind: %s", p)
		}
		return nil
	})
}

// stage returns the named stage of the report.
func (r *relResult) stage(t *testing.T, name string) *report.Stage {
	t.Helper()
	for _, s := range r.rep.Stages {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no stage %q in the report:\n%s", name, r.raw)
	return nil
}

// failure returns the first failure of stage, which must exist.
func (r *relResult) failure(t *testing.T, stage string) report.Failure {
	t.Helper()
	for _, f := range r.rep.Failures {
		if f.Stage == stage {
			return f
		}
	}
	t.Fatalf("no failure of stage %q in the report:\n%s", stage, r.raw)
	return report.Failure{}
}

// relYAML quotes s as a YAML scalar.
func relYAML(s string) string {
	b, _ := yaml.Marshal(s)
	return strings.TrimSpace(string(b))
}

// relLines reads a JSON Lines file into its lines.
func relLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// ---- HTTP faults

// relFetch is a pipeline fetching URL BASE/ITEM for each item, with the
// stage options given, into out.jsonl.
func relFetch(base string, items string, stageOpts string, with string) string {
	return fmt.Sprintf(`version: 1
name: faults
stages:
  - name: src
    source: {items: %s}
  - name: get
    step: fetch
    workers: 2
%s
    with:
      url: "%s/${ item }"
%s
  - name: out
    sink: {write: {path: out.jsonl}}
`, items, indent(stageOpts, "    "), base, indent(with, "      "))
}

func indent(s, by string) string {
	if s == "" {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := range lines {
		lines[i] = by + lines[i]
	}
	return strings.Join(lines, "\n")
}

func TestFaultHTTP5xx(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Error(w, "upstream down", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	r := relRun(t, relFetch(srv.URL, "[a]", "retry: {attempts: 3, backoff: 10ms}", ""))
	r.check(t, 1, 3, nil)
	get := r.stage(t, "get")
	if get.Failed != 1 || get.Retries != 2 || hits.Load() != 3 {
		t.Errorf("get: failed %d retries %d, server hit %d times; want 1, 2, 3", get.Failed, get.Retries, hits.Load())
	}
	if f := r.failure(t, "get"); f.Class != "http_5xx" || f.Attempts != 3 || !strings.Contains(f.Error, "503") {
		t.Errorf("failure %+v, want class http_5xx after 3 attempts naming 503", f)
	}
}

func TestFault429RetryAfter(t *testing.T) {
	var mu sync.Mutex
	first := map[string]time.Time{}
	var waited []time.Duration
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if t0, ok := first[r.URL.Path]; ok {
			waited = append(waited, time.Since(t0))
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"path": %q}`, r.URL.Path)
			return
		}
		first[r.URL.Path] = time.Now()
		w.Header().Set("Retry-After", "1")
		http.Error(w, "slow down", http.StatusTooManyRequests)
	}))
	defer srv.Close()
	// The backoff alone (10ms) is far shorter than Retry-After: only
	// honouring the header makes the retries wait a second.
	r := relRun(t, relFetch(srv.URL, "[a, b]", "retry: {attempts: 3, backoff: 10ms}", ""))
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	lines := relLines(t, filepath.Join(r.dir, "out.jsonl"))
	if len(lines) != 2 || !strings.Contains(lines[0], `"/a"`) || !strings.Contains(lines[1], `"/b"`) {
		t.Errorf("out.jsonl: %q", lines)
	}
	r.check(t, 0, 3, lines)
	if get := r.stage(t, "get"); get.Succeeded != 2 || get.Retries != 2 {
		t.Errorf("get: %d ok, %d retries; want 2 and 2", get.Succeeded, get.Retries)
	}
	for _, w := range waited {
		if w < 900*time.Millisecond { // a lower bound: slowness cannot break it
			t.Errorf("retried %v after a 429 with Retry-After: 1", w)
		}
	}
}

func TestFaultConnectionReset(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/bad" {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.(*net.TCPConn).SetLinger(0) // RST, not FIN
				conn.Close()
			}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"ok": true}`)
	}))
	defer srv.Close()
	r := relRun(t, relFetch(srv.URL, "[good, bad, fine]", "on_error: skip\nretry: {attempts: 2, backoff: 10ms}", ""))
	lines := relLines(t, filepath.Join(r.dir, "out.jsonl"))
	r.check(t, 0, 3, lines)
	if len(lines) != 2 {
		t.Errorf("out.jsonl has %d results, want the 2 good ones", len(lines))
	}
	get := r.stage(t, "get")
	if get.Succeeded != 2 || get.Skipped != 1 || get.Retries != 1 {
		t.Errorf("get: %d ok %d skipped %d retries, want 2, 1, 1", get.Succeeded, get.Skipped, get.Retries)
	}
	if f := r.failure(t, "get"); f.Class != "connection" || f.Outcome != "skipped" {
		t.Errorf("failure %+v, want class connection, outcome skipped", f)
	}
}

func TestFaultStallMidBody(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "1000")
		w.Write([]byte(`{"partial": "`))
		w.(http.Flusher).Flush()
		select { // stall with the body half sent
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	r := relRun(t, relFetch(srv.URL, "[a]", "timeout: 300ms", ""))
	r.check(t, 1, 3, nil)
	get := r.stage(t, "get")
	if get.Failed != 1 || get.TimedOut != 1 {
		t.Errorf("get: failed %d, timed out %d; want 1 and 1", get.Failed, get.TimedOut)
	}
	if f := r.failure(t, "get"); f.Class != "timeout" {
		t.Errorf("failure %+v, want class timeout", f)
	}
}

// relHugeBody serves an endless body (declared as 1 GiB) in 64 KiB chunks
// and counts what it managed to send: a client that buffered it all would
// be seen sending far more than its limit.
// Without a declared length (chunked), the client cannot refuse it up front
// and must cut the stream at its limit.
func relHugeBody(sent *atomic.Int64, declared bool) *httptest.Server {
	chunk := make([]byte, 64<<10)
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		if declared {
			w.Header().Set("Content-Length", fmt.Sprint(1<<30))
		}
		for n := 0; n < 1<<30; n += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			sent.Add(int64(len(chunk)))
		}
	}))
}

func TestFaultHugeBodyMaxBytes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		with     string
		limit    int64
		declared bool
	}{
		{"1MiB declared", "max_bytes: 1MiB", 1 << 20, true},
		{"1MiB chunked", "max_bytes: 1MiB", 1 << 20, false},
		// The safe default: without max_bytes a 1 GiB body still fails.
		{"default chunked", "", 10 << 20, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sent atomic.Int64
			srv := relHugeBody(&sent, tc.declared)
			defer srv.Close()
			r := relRun(t, relFetch(srv.URL, "[big]", "", tc.with+"\ndecode: bytes"))
			r.check(t, 1, 3, nil)
			f := r.failure(t, "get")
			if f.Class != "too_large" {
				t.Errorf("failure %+v, want class too_large", f)
			}
			srv.CloseClientConnections()
			// Socket buffers hold a few MiB beyond what the client read.
			if s := sent.Load(); s > tc.limit+64<<20 {
				t.Errorf("the server sent %d MiB for a %d MiB limit: the body was not cut off", s>>20, tc.limit>>20)
			}
		})
	}
}

func TestFaultInvalidJSON(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"truncated": [1, 2`)
	}))
	defer srv.Close()
	r := relRun(t, relFetch(srv.URL, "[a]", "retry: {attempts: 3, backoff: 10ms}", ""))
	r.check(t, 1, 3, nil)
	// A body that is not JSON will not become JSON on a retry.
	if f := r.failure(t, "get"); f.Class != "decode" || f.Attempts != 1 || hits.Load() != 1 {
		t.Errorf("failure %+v after %d requests, want class decode after 1 attempt", f, hits.Load())
	}
}

func TestFaultRedirectLoop(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path == "/a" {
			http.Redirect(w, r, "/b", http.StatusFound)
		} else {
			http.Redirect(w, r, "/a", http.StatusFound)
		}
	}))
	defer srv.Close()
	r := relRun(t, relFetch(srv.URL, "[a]", "", ""))
	r.check(t, 1, 3, nil)
	f := r.failure(t, "get")
	if f.Class != "redirects" || !strings.Contains(f.Error, "redirect") {
		t.Errorf("failure %+v, want class redirects", f)
	}
	if hits.Load() > 11 {
		t.Errorf("%d requests for a two-step loop: it was not cut short", hits.Load())
	}
}

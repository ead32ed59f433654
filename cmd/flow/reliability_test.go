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
	"image"
	"image/color"
	"image/png"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
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

// ---- file system faults

func relPNG(t *testing.T, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.RGBA{uint8(x * 7), uint8(y * 5), uint8(x + y), 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func relWrite(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFaultCorruptAndTruncatedImages(t *testing.T) {
	dir := t.TempDir()
	good := relPNG(t, 64, 48)
	relWrite(t, filepath.Join(dir, "imgs", "a-good.png"), good)
	relWrite(t, filepath.Join(dir, "imgs", "b-truncated.png"), good[:len(good)/2])
	relWrite(t, filepath.Join(dir, "imgs", "c-corrupt.jpg"), append([]byte{0xff, 0xd8, 0xff, 0xe0}, bytes.Repeat([]byte("garbage!"), 64)...))
	relWrite(t, filepath.Join(dir, "imgs", "d-empty.png"), nil)
	cmd := relCommand(t, dir, `version: 1
stages:
  - name: src
    source: {glob: "imgs/*"}
  - name: resize
    step: resize
    on_error: skip
    with: {width: 16, height: 12, out_dir: resized}
  - name: out
    sink: {write: {path: out.jsonl}}
`)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := relCollect(t, dir, relWait(t, cmd), stdout.String(), stderr.String())
	lines := relLines(t, filepath.Join(dir, "out.jsonl"))
	r.check(t, 0, 3, lines)
	rs := r.stage(t, "resize")
	if rs.Succeeded != 1 || rs.Skipped != 3 || len(lines) != 1 {
		t.Fatalf("resize: %d ok, %d skipped, %d results; want 1, 3, 1\n%s", rs.Succeeded, rs.Skipped, len(lines), r.raw)
	}
	for _, f := range r.rep.Failures {
		if !strings.Contains(f.Error, "imgs/") {
			t.Errorf("failure does not name the file: %+v", f)
		}
	}
	// Only the good image has an output, and it is a whole image.
	outs, _ := os.ReadDir(filepath.Join(dir, "resized"))
	if len(outs) != 1 {
		t.Fatalf("resized/ holds %d files, want 1", len(outs))
	}
	f, err := os.Open(filepath.Join(dir, "resized", outs[0].Name()))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if cfg, _, err := image.DecodeConfig(f); err != nil || cfg.Width != 16 || cfg.Height != 12 {
		t.Errorf("resized image: %+v %v", cfg, err)
	}
}

// A directory where a file is expected cannot be read even by root; a file
// deleted between the listing and the work has vanished.
func TestFaultUnreadableAndVanishedFiles(t *testing.T) {
	dir := t.TempDir()
	relWrite(t, filepath.Join(dir, "logs", "a.log"), []byte("INFO start\nERROR boom\nWARN meh\n"))
	relWrite(t, filepath.Join(dir, "logs", "b-gone.log"), []byte("ERROR soon gone\n"))
	if err := os.MkdirAll(filepath.Join(dir, "logs", "c-dir.log"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := relCommand(t, dir, `version: 1
stages:
  - name: src
    source: {items: [logs/a.log, logs/b-gone.log, logs/c-dir.log]}
  - name: vanish
    step: exec
    with:
      argv: ["sh", "-c", "case $1 in *gone*) rm -f \"$1\";; esac; printf %s \"$1\"", "sh", "${ item }"]
  - name: analyze
    step: analyze-logs
    on_error: skip
    with: {path: "${ item.stdout }"}
  - name: out
    sink: {write: {path: out.jsonl}}
`)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := relCollect(t, dir, relWait(t, cmd), stdout.String(), stderr.String())
	lines := relLines(t, filepath.Join(dir, "out.jsonl"))
	r.check(t, 0, 4, lines)
	an := r.stage(t, "analyze")
	if an.Succeeded != 1 || an.Skipped != 2 || len(lines) != 1 || !strings.Contains(lines[0], `"errors":1`) {
		t.Fatalf("analyze: %d ok %d skipped, results %q\n%s", an.Succeeded, an.Skipped, lines, r.raw)
	}
	msgs := ""
	for _, f := range r.rep.Failures {
		msgs += f.Error + "\n"
	}
	if !strings.Contains(msgs, "b-gone.log") || !strings.Contains(msgs, "c-dir.log") {
		t.Errorf("failures do not name the files:\n%s", msgs)
	}
}

// ---- run-level faults

func TestFaultPipelineTimeout(t *testing.T) {
	r := relRun(t, `version: 1
timeout: 1s
stages:
  - name: src
    source: {range: {from: 1, to: 1000}}
  - name: slow
    step: compute
    workers: 4
    with: {value: "${ sleep('200ms') == nil ? item : item }"}
  - name: out
    sink: {write: {path: out.jsonl}}
`)
	r.check(t, 1, 3, nil)
	if r.rep.Status != "timed_out" || !strings.Contains(r.rep.Reason, "1s") {
		t.Errorf("report status %q reason %q, want timed_out naming the 1s timeout", r.rep.Status, r.rep.Reason)
	}
	if slow := r.stage(t, "slow"); slow.Cancelled+slow.Failed == 0 {
		t.Errorf("slow: nothing cancelled or failed by the timeout: %+v", slow)
	}
}

// relStartLong starts a long run and returns once plain progress shows it
// under way (so the signal handlers are installed and work is running).
func relStartLong(t *testing.T, dir, pipeline string, args ...string) (*exec.Cmd, *relBuffer) {
	t.Helper()
	cmd := relCommand(t, dir, pipeline, args...)
	cmd.Stdout = io.Discard
	stderr := &relBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	deadline := time.Now().Add(relGuard)
	for !strings.Contains(stderr.String(), "] ") {
		if time.Now().After(deadline) {
			t.Fatalf("no progress from the run:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cmd, stderr
}

// relBuffer is a bytes.Buffer safe to read while the process writes to it.
type relBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *relBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *relBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

const relLong = `version: 1
stages:
  - name: src
    source: {range: {from: 1, to: 100000}}
  - name: slow
    step: compute
    workers: 4
    with: {value: "${ sleep('10ms') == nil ? item : item }"}
  - name: out
    sink: {write: {path: out.jsonl}}
`

// Interrupted runs write their report, account for every item, and leave
// the old output in place.
func TestFaultSignalsMidRun(t *testing.T) {
	for _, tc := range []struct {
		sig  syscall.Signal
		code int
	}{{syscall.SIGTERM, 143}, {syscall.SIGINT, 130}} {
		t.Run(tc.sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			cmd, stderr := relStartLong(t, dir, relLong)
			if err := cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			r := relCollect(t, dir, relWait(t, cmd), "", stderr.String())
			r.check(t, tc.code, 3, nil)
			if r.rep.Status != "interrupted" {
				t.Errorf("status %q, want interrupted", r.rep.Status)
			}
			if slow := r.stage(t, "slow"); slow.Succeeded == 0 || slow.In == 100000 && slow.Cancelled == 0 {
				t.Errorf("slow: %+v; want a run stopped part way", slow)
			}
		})
	}
}

// A sink that cannot write fails the run with a message naming what could
// not be written. As root, permissions do not stop writes, so these use
// failures that stop root too: /dev/full (ENOSPC on every write) as
// standard output, and the output directory replaced by a file mid-run.
func TestFaultSinkWriteFails(t *testing.T) {
	t.Run("stdout is full", func(t *testing.T) {
		full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
		if err != nil {
			t.Skip("no /dev/full:", err)
		}
		defer full.Close()
		dir := t.TempDir()
		cmd := relCommand(t, dir, `version: 1
stages:
  - name: src
    source: {range: {from: 1, to: 100000}}
  - name: out
    sink: {print: jsonl}
`)
		cmd.Stdout = full
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		r := relCollect(t, dir, relWait(t, cmd), "", stderr.String())
		r.check(t, 1, 2, nil)
		if !strings.Contains(r.rep.Reason+r.stderr, "no space left on device") {
			t.Errorf("the error does not say why:\nreason %q\nstderr:\n%s", r.rep.Reason, r.stderr)
		}
	})
	t.Run("directory replaced by a file", func(t *testing.T) {
		dir := t.TempDir()
		sub := filepath.Join(dir, "sub")
		os.MkdirAll(sub, 0o755)
		os.WriteFile(filepath.Join(sub, "keep.txt"), []byte("x"), 0o644)
		// Every item waits for the go file, so the directory is replaced
		// after the sink was set up (which checks it) and before it writes.
		cmd := relCommand(t, dir, fmt.Sprintf(`version: 1
stages:
  - name: src
    source: {range: {from: 1, to: 5}}
  - name: gate
    step: exec
    with:
      argv: ["sh", "-c", "touch %[1]s/started; while [ ! -e %[1]s/go ]; do sleep 0.02; done; echo $1", "sh", "${ item }"]
  - name: out
    sink: {write: {path: sub/out.jsonl}}
`, dir))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(relGuard); ; time.Sleep(10 * time.Millisecond) {
			if _, err := os.Stat(filepath.Join(dir, "started")); err == nil {
				break
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatal("the run did not start")
			}
		}
		if err := os.RemoveAll(sub); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(sub, []byte("not a directory\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		relWrite(t, filepath.Join(dir, "go"), nil)
		code := relWait(t, cmd)
		r := relCollect(t, dir, code, "", stderr.String())
		r.check(t, 1, 3, nil)
		if !strings.Contains(r.stderr, "sub/out.jsonl") || !strings.Contains(r.stderr, "not a directory") {
			t.Errorf("exit %d without saying that sub/out.jsonl could not be written:\n%s", code, r.stderr)
		}
		if b, _ := os.ReadFile(sub); string(b) != "not a directory\n" {
			t.Errorf("sub was overwritten: %q", b)
		}
	})
}

// A worker process killed with SIGKILL (the OOM killer, an operator) fails
// only the item it was running; its replacement serves the rest.
func TestFaultWorkerKilled(t *testing.T) {
	r := relRun(t, `version: 1
stages:
  - name: src
    source: {range: {from: 1, to: 8}}
  - name: work
    step: exec
    mode: process
    workers: 2
    on_error: skip
    with:
      # Item 3 kills the worker process running it (the parent of sh).
      argv: ["sh", "-c", "if [ \"$1\" = 3 ]; then kill -9 $PPID; sleep 5; fi; echo $1", "sh", "${ item }"]
      capture: json
  - name: out
    sink: {write: {path: out.jsonl}}
`)
	if strings.Contains(r.stderr, "mode: process") && r.code == 2 {
		t.Skip("process mode is not wired into this build:", r.stderr)
	}
	lines := relLines(t, filepath.Join(r.dir, "out.jsonl"))
	r.check(t, 0, 3, lines)
	w := r.stage(t, "work")
	// The worker runs one item at a time and marks it in the page it
	// shares with the parent (procpool/shm_linux.go), so the parent blames
	// exactly item 3; the items the worker had finished without reporting
	// yet, and those queued behind 3, run again elsewhere, unharmed.
	// (Items of exec cost a millisecond or more, so the worker is seldom
	// sent more than one at a time here; procpool's
	// TestWorkerDeathBlamesOnlyTheRunningItem covers a batch.) Elsewhere
	// there is no page and the oldest item the worker held is blamed,
	// which may be one that had already run: only "at least one".
	if runtime.GOOS == "linux" {
		if w.Skipped != 1 || w.Succeeded != 7 {
			t.Fatalf("work: %d ok, %d skipped; want item 3 alone lost and the 7 others done\n%s", w.Succeeded, w.Skipped, r.raw)
		}
	} else if w.Skipped < 1 || w.Succeeded+w.Skipped != 8 {
		t.Fatalf("work: %d ok, %d skipped; want item 3 lost and the rest done\n%s", w.Succeeded, w.Skipped, r.raw)
	}
	f := r.failure(t, "work")
	if f.Class != "crash" || !strings.Contains(f.Error, "worker process") {
		t.Errorf("failure %+v, want class crash naming the worker process", f)
	}
	if runtime.GOOS == "linux" {
		if len(r.rep.Failures) != 1 || fmt.Sprint(f.Item) != "3" || f.Outcome != "skipped" {
			t.Errorf("failures %+v, want item 3 alone, skipped", r.rep.Failures)
		}
		got := map[string]bool{}
		for _, l := range lines {
			var res struct{ Stdout any }
			if err := json.Unmarshal([]byte(l), &res); err != nil {
				t.Fatalf("result %s: %v", l, err)
			}
			got[fmt.Sprint(res.Stdout)] = true
		}
		for i := 1; i <= 8; i++ {
			if !got[strconv.Itoa(i)] && i != 3 {
				t.Errorf("no result for item %d in %q", i, lines)
			}
		}
	}
	if int64(len(lines)) != w.Succeeded {
		t.Errorf("%d results written for %d successes", len(lines), w.Succeeded)
	}
}

// ---- safe defaults, end to end: each test fails if its default goes

// Without shell: true, exec runs argv directly: shell syntax in an item
// reaches the program as one literal argument.
func TestSafeExecNoShell(t *testing.T) {
	dir := t.TempDir()
	pwned := filepath.Join(dir, "pwned")
	items := []string{"; touch " + pwned, "$(touch " + pwned + ")", "`touch " + pwned + "`", "a && touch " + pwned, "| touch " + pwned}
	quoted := make([]string, len(items))
	for i, it := range items {
		quoted[i] = relYAML(it)
	}
	cmd := relCommand(t, dir, fmt.Sprintf(`version: 1
stages:
  - name: src
    source: {items: [%s]}
  - name: run
    step: exec
    with: {argv: ["printf", "%%s", "${ item }"]}
  - name: out
    sink: {write: {path: out.jsonl}}
`, strings.Join(quoted, ", ")))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := relCollect(t, dir, relWait(t, cmd), "", stderr.String())
	lines := relLines(t, filepath.Join(dir, "out.jsonl"))
	r.check(t, 0, 3, lines)
	if _, err := os.Stat(pwned); err == nil {
		t.Fatal("an item was run by a shell")
	}
	for i, line := range lines {
		var res struct{ Stdout string }
		if err := json.Unmarshal([]byte(line), &res); err != nil || res.Stdout != items[i] {
			t.Errorf("result %d: %s, want stdout %q", i, line, items[i])
		}
	}
}

// write and resize refuse paths that leave the pipeline directory.
func TestSafeOutputsStayInTheirFolder(t *testing.T) {
	for _, tc := range []struct{ name, stage string }{
		{"write ../", "sink: {write: {path: ../escaped.jsonl}}"},
		{"write absolute", "sink: {write: {path: ESCAPE/escaped.jsonl}}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			outside := t.TempDir()
			dir := filepath.Join(t.TempDir(), "p")
			os.MkdirAll(dir, 0o755)
			stage := strings.Replace(tc.stage, "ESCAPE", outside, 1)
			cmd := relCommand(t, dir, "version: 1\nstages:\n  - name: src\n    source: {items: [1]}\n  - name: out\n    "+stage+"\n")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			cmd.Start()
			code := relWait(t, cmd)
			if code != 2 || !strings.Contains(stderr.String(), "p.yaml:") {
				t.Errorf("exit %d, want 2 with a positioned error:\n%s", code, stderr.String())
			}
			for _, p := range []string{filepath.Join(filepath.Dir(dir), "escaped.jsonl"), filepath.Join(outside, "escaped.jsonl")} {
				if _, err := os.Stat(p); err == nil {
					t.Errorf("%s was written", p)
				}
			}
		})
	}
	// resize writes into out_dir (the pipeline author's choice) and nowhere
	// else: a name, constant or computed from an item, cannot leave it.
	for _, tc := range []struct {
		name, with string
		code       int
	}{
		{"resize name ../", `name: "../../escaped-{stem}.{ext}"`, 2},
		{"resize absolute name", `name: "ESCAPE/escaped.png"`, 2},
		{"resize name from the item", `name: "${ item.name }"`, 1},
		{"resize absolute name from the item", `name: "${ item.abs }"`, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			outside := t.TempDir()
			dir := filepath.Join(t.TempDir(), "p")
			relWrite(t, filepath.Join(dir, "img.png"), relPNG(t, 8, 8))
			with := strings.Replace(tc.with, "ESCAPE", outside, 1)
			item := fmt.Sprintf(`{src: img.png, name: ../../escaped.png, abs: %s/escaped.png}`, outside)
			cmd := relCommand(t, dir, "version: 1\nstages:\n  - name: src\n    source: {items: ["+item+"]}\n  - name: resize\n    step: resize\n    with: {src: \"${ item.src }\", width: 4, height: 4, "+with+"}\n  - name: out\n    sink: {write: {path: out.jsonl}}\n")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			cmd.Start()
			if code := relWait(t, cmd); code != tc.code {
				t.Errorf("exit %d, want %d\n%s", code, tc.code, stderr.String())
			}
			for _, root := range []string{filepath.Dir(dir), outside} {
				filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
					if err == nil && strings.Contains(filepath.Base(p), "escaped") {
						t.Errorf("written outside out_dir: %s", p)
					}
					return nil
				})
			}
		})
	}
}

// Secrets (secret: true variables, and the values of Authorization, Cookie
// and token-like headers) never reach stderr, progress or the report, even
// when the server echoes them back in an error body and a header.
func TestSafeSecretsNeverPrinted(t *testing.T) {
	const secret = "s3cr3t-T0KEN-value"
	const header = "hdr-only-5ecret"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Echo", r.Header.Get("Authorization"))
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, "bad credentials: auth=%s cookie=%s token=%s url=%s",
			r.Header.Get("Authorization"), r.Header.Get("Cookie"), r.Header.Get("X-Api-Token"), r.URL)
	}))
	defer srv.Close()
	r := relRun(t, fmt.Sprintf(`version: 1
vars:
  token: {default: %s, secret: true}
stages:
  - name: src
    source: {items: [a]}
  - name: get
    step: fetch
    retry: {attempts: 2, backoff: 10ms}
    with:
      url: "%s/${ item }?key=${ vars.token }"
      headers:
        Authorization: "Bearer ${ vars.token }"
        Cookie: "session=${ vars.token }"
        X-Api-Token: %s
  - name: out
    sink: {write: {path: out.jsonl}}
`, secret, srv.URL, header))
	r.check(t, 1, 3, nil)
	if r.failure(t, "get").Class != "http_5xx" {
		t.Fatalf("the request did not fail as planned:\n%s", r.raw)
	}
	for what, text := range map[string]string{"stderr (progress and logs)": r.stderr, "stdout": r.stdout, "report": string(r.raw)} {
		for _, s := range []string{secret, header} {
			if strings.Contains(text, s) {
				t.Errorf("%s shows the secret %q:\n%s", what, s, text)
			}
		}
	}
}

// Found by TestSafeSecretsNeverPrinted's second case: plain progress printed
// items that carried a secret (the engine redacted errors and the report's
// failed items, but not the items and results it passed to progress).
func TestSafeSecretsInItemsNeverPrinted(t *testing.T) {
	const secret = "s3cr3t-T0KEN-value"
	r := relRun(t, fmt.Sprintf(`version: 1
vars:
  token: {default: %s, secret: true}
stages:
  - name: src
    source: {items: [a, b]}
  - name: mk
    step: compute
    with: {value: {auth: "${ vars.token }", n: "${ item }"}}
  - name: use
    step: compute
    on_error: keep
    with: {value: "${ item.n == 'a' ? item : fail('bad token ' + item.auth) }"}
  - name: out
    sink: {write: {path: out.jsonl}}
`, secret))
	lines := relLines(t, filepath.Join(r.dir, "out.jsonl"))
	r.check(t, 0, 4, lines)
	if !strings.Contains(r.stderr, "[1/2]") || !strings.Contains(r.stderr, "***") {
		t.Fatalf("no progress lines with redacted items:\n%s", r.stderr)
	}
	for what, text := range map[string]string{"stderr (progress and logs)": r.stderr, "report": string(r.raw)} {
		if strings.Contains(text, secret) {
			t.Errorf("%s shows the secret:\n%s", what, text)
		}
	}
}

// TLS certificates are verified unless insecure: true.
func TestSafeTLSVerification(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"ok": true}`)
	}))
	defer srv.Close()
	r := relRun(t, relFetch(srv.URL, "[a]", "", ""))
	r.check(t, 1, 3, nil)
	if f := r.failure(t, "get"); !strings.Contains(f.Error, "certificate") {
		t.Errorf("failure %+v does not name the certificate", f)
	}
	r = relRun(t, relFetch(srv.URL, "[a]", "", "insecure: true"))
	lines := relLines(t, filepath.Join(r.dir, "out.jsonl"))
	r.check(t, 0, 3, lines)
}

// Expressions cannot be made to hang the run or eat the memory: huge
// ranges fail the item with a clear error, deep nesting is refused when the
// file is checked.
func TestSafeExpressionBounds(t *testing.T) {
	r := relRun(t, `version: 1
stages:
  - name: src
    source: {items: [1]}
  - name: big
    step: compute
    with: {value: "${ len(1..1000000000000) }"}
  - name: out
    sink: {write: {path: out.jsonl}}
`)
	r.check(t, 1, 3, nil)
	if f := r.failure(t, "big"); !strings.Contains(f.Error, "too large") {
		t.Errorf("failure %+v, want a too-large error", f)
	}
	dir := t.TempDir()
	deep := strings.Repeat("[", 20000) + "1" + strings.Repeat("]", 20000)
	cmd := relCommand(t, dir, "version: 1\nstages:\n  - name: src\n    source: {items: [1]}\n  - name: deep\n    step: compute\n    with: {value: \"${ "+deep+" }\"}\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Start()
	if code := relWait(t, cmd); code != 2 || !strings.Contains(stderr.String(), "p.yaml:7:") {
		t.Errorf("deep nesting: exit %d, want 2 with a positioned error:\n%.2000s", code, stderr.String())
	}
}

// ---- cron-safe runs

// Two real flow processes on one --lock file: the second skips (75), fails
// (1) or waits, as told; a holder killed with SIGKILL leaves no stale lock.
func TestLockOverlappingRuns(t *testing.T) {
	dir := t.TempDir()
	lockFile := filepath.Join(dir, "run.lock")
	first, _ := relStartLong(t, dir, relLong, "--lock", lockFile)
	pid := first.Process.Pid

	second := func(args ...string) *relResult {
		t.Helper()
		d := t.TempDir()
		cmd := relCommand(t, d, relLong, append([]string{"--lock", lockFile}, args...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return relCollect(t, d, relWait(t, cmd), stdout.String(), stderr.String())
	}
	holder := fmt.Sprintf("locked by pid %d since ", pid)

	r := second("--lock-mode", "skip")
	if r.code != 75 || r.rep.ExitCode != 75 || r.rep.Status != "skipped" || !strings.Contains(r.stderr, holder) || !strings.Contains(r.rep.Reason, holder) {
		t.Errorf("skip: exit %d, report %d %q %q; want 75, skipped, naming pid %d\nstderr:\n%s", r.code, r.rep.ExitCode, r.rep.Status, r.rep.Reason, pid, r.stderr)
	}
	if string(relMust(os.ReadFile(filepath.Join(r.dir, "out.jsonl")))) != relOld || len(r.rep.Stages) != 0 {
		t.Errorf("skip: the run ran")
	}

	r = second() // --lock-mode fail is the default
	if r.code != 1 || r.rep.Status != "failed" || !strings.Contains(r.stderr, holder) {
		t.Errorf("fail: exit %d status %q, want 1 failed naming pid %d\nstderr:\n%s", r.code, r.rep.Status, pid, r.stderr)
	}

	r = second("--lock-mode", "wait", "--lock-timeout", "200ms")
	if r.code != 1 || !strings.Contains(r.stderr, "still locked by pid") {
		t.Errorf("wait with timeout: exit %d, want 1 after waiting\nstderr:\n%s", r.code, r.stderr)
	}

	// SIGKILL: no handler runs, nothing is cleaned up; the kernel drops
	// the flock and the next run takes over at once.
	first.Process.Kill()
	relWait(t, first)
	short := strings.Replace(relLong, "to: 100000", "to: 3", 1)
	d := t.TempDir()
	cmd := relCommand(t, d, short, "--lock", lockFile)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Start()
	r = relCollect(t, d, relWait(t, cmd), "", stderr.String())
	r.check(t, 0, 3, []string{"1", "2", "3"})
	if !strings.Contains(r.stderr, fmt.Sprintf("took over the lock %s left by pid %d", lockFile, pid)) {
		t.Errorf("no note about the lock left by the killed run:\n%s", r.stderr)
	}
}

// lock: in the file: the path is relative to the file (not to the working
// directory), the mode comes from the file, and the flags override it.
func TestLockFromFile(t *testing.T) {
	dir := t.TempDir()
	withLock := strings.Replace(relLong, "version: 1\n", "version: 1\nlock: {file: run.lock, mode: skip}\n", 1)
	first, _ := relStartLong(t, dir, withLock)
	if _, err := os.Stat(filepath.Join(dir, "run.lock")); err != nil {
		t.Fatalf("the holder made no run.lock beside its pipeline: %v", err)
	}
	pipeline := filepath.Join(dir, "p.yaml")
	run := func(args ...string) (int, string) {
		t.Helper()
		// Another working directory: a path relative to it would miss
		// the holder's lock and run.
		cmd := exec.Command(os.Args[0], append([]string{"run", pipeline, "--progress", "none"}, args...)...)
		cmd.Dir = t.TempDir()
		cmd.Env = append(os.Environ(), cliEnv+"=1")
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = io.Discard, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return relWait(t, cmd), stderr.String()
	}
	holder := fmt.Sprintf("locked by pid %d since ", first.Process.Pid)
	if code, stderr := run(); code != 75 || !strings.Contains(stderr, holder) {
		t.Errorf("mode skip from the file: exit %d, want 75 naming the holder\n%s", code, stderr)
	}
	if code, stderr := run("--lock-mode", "fail"); code != 1 || !strings.Contains(stderr, holder) {
		t.Errorf("--lock-mode fail over the file: exit %d, want 1\n%s", code, stderr)
	}
	if code, stderr := run("--lock-timeout", "1s"); code != 2 || !strings.Contains(stderr, "add --lock-mode wait") {
		t.Errorf("a timeout with mode skip: exit %d, want 2 saying what to add\n%s", code, stderr)
	}
	// --lock names another file: nothing holds it, the run goes ahead.
	short := strings.Replace(withLock, "to: 100000", "to: 3", 1)
	if err := os.WriteFile(filepath.Join(dir, "short.yaml"), []byte(short), 0o644); err != nil {
		t.Fatal(err)
	}
	pipeline = filepath.Join(dir, "short.yaml")
	if code, stderr := run("--lock", filepath.Join(t.TempDir(), "other.lock")); code != 0 {
		t.Errorf("--lock over the file's lock: exit %d, want 0\n%s", code, stderr)
	}
	if code, _ := run(); code != 75 {
		t.Errorf("short.yaml shares run.lock with the holder: exit %d, want 75", code)
	}
}

// A waiting run starts as soon as the holder finishes.
func TestLockWaitRunsAfterTheHolder(t *testing.T) {
	dir := t.TempDir()
	lockFile := filepath.Join(dir, "run.lock")
	first, _ := relStartLong(t, dir, relLong, "--lock", lockFile)
	d := t.TempDir()
	short := strings.Replace(relLong, "to: 100000", "to: 3", 1)
	cmd := relCommand(t, d, short, "--lock", lockFile, "--lock-mode", "wait")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	select {
	case <-exited:
		t.Fatalf("the waiting run ended while the lock was held:\n%s", stderr.String())
	case <-time.After(300 * time.Millisecond):
	}
	first.Process.Signal(syscall.SIGTERM)
	if code := relWait(t, first); code != 143 {
		t.Errorf("holder: exit %d, want 143", code)
	}
	select {
	case <-exited:
	case <-time.After(relGuard):
		t.Fatal("the waiting run did not finish after the holder")
	}
	r := relCollect(t, d, cmd.ProcessState.ExitCode(), "", stderr.String())
	r.check(t, 0, 3, []string{"1", "2", "3"})
}

func relMust(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// ---- atomic outputs

// relWaitTemp polls dir until a temporary file of an atomic write shows up,
// then returns its name; "" if the process ended first.
func relWaitTemp(t *testing.T, dir string, cmd *exec.Cmd, exited <-chan struct{}) string {
	t.Helper()
	deadline := time.Now().Add(relGuard)
	for time.Now().Before(deadline) {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if strings.Contains(e.Name(), ".tmp") {
				return e.Name()
			}
		}
		select {
		case <-exited:
			return ""
		default:
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("no temporary file appeared")
	return ""
}

// SIGKILL while the write sink is writing a large output: the destination
// is the old file, never a part of the new one. Then an uninterrupted run
// replaces it with the complete new one.
func TestAtomicWriteUnderSIGKILL(t *testing.T) {
	const n = 2_000_000
	pipeline := fmt.Sprintf(`version: 1
stages:
  - name: src
    source: {range: {from: 1, to: %d}}
  - name: out
    sink: {write: {path: out.jsonl}}
`, n)
	dir := t.TempDir()
	killedMidWrite := 0
	for i := 0; i < 3; i++ {
		cmd := relCommand(t, dir, pipeline)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		if tmp := relWaitTemp(t, dir, cmd, exited); tmp != "" {
			cmd.Process.Kill()
			killedMidWrite++
		}
		<-exited
		if got := relMust(os.ReadFile(filepath.Join(dir, "out.jsonl"))); string(got) != relOld {
			t.Fatalf("after SIGKILL mid-write out.jsonl holds %d bytes that are not the old file", len(got))
		}
		// A killed process cannot remove its temporary file; it is hidden
		// and never read. Clear it so the next round sees a fresh one.
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if strings.Contains(e.Name(), ".tmp") {
				os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
	if killedMidWrite == 0 {
		t.Fatal("never caught the run writing: the test proved nothing")
	}
	cmd := relCommand(t, dir, pipeline)
	if err := cmd.Run(); err != nil {
		t.Fatalf("full run: %v", err)
	}
	lines := relLines(t, filepath.Join(dir, "out.jsonl"))
	if len(lines) != n || lines[0] != "1" || lines[n-1] != fmt.Sprint(n) {
		t.Fatalf("complete run wrote %d lines", len(lines))
	}
	relNoTemp(t, dir)
}

// SIGKILL during a batch of resizes: every file in out_dir is a whole
// image (written to a temporary file, then renamed).
func TestAtomicResizeUnderSIGKILL(t *testing.T) {
	dir := t.TempDir()
	big := relPNG(t, 1200, 900)
	for i := 0; i < 40; i++ {
		relWrite(t, filepath.Join(dir, "imgs", fmt.Sprintf("%02d.png", i)), big)
	}
	cmd := relCommand(t, dir, `version: 1
stages:
  - name: src
    source: {glob: "imgs/*.png"}
  - name: resize
    step: resize
    workers: 2
    with: {width: 1100, height: 800, out_dir: resized}
  - name: out
    sink: {write: {path: out.jsonl}}
`)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	os.MkdirAll(filepath.Join(dir, "resized"), 0o755)
	if relWaitTemp(t, filepath.Join(dir, "resized"), cmd, exited) == "" {
		t.Skip("the run finished before it could be interrupted")
	}
	cmd.Process.Kill()
	<-exited
	entries, _ := os.ReadDir(filepath.Join(dir, "resized"))
	whole := 0
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp") {
			continue // the killed run's temporary file: hidden, never read
		}
		f, err := os.Open(filepath.Join(dir, "resized", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		img, _, err := image.Decode(f)
		f.Close()
		if err != nil || img.Bounds().Dx() != 1100 || img.Bounds().Dy() != 800 {
			t.Errorf("%s is not a whole 1100x800 image: %v", e.Name(), err)
		}
		whole++
	}
	if string(relMust(os.ReadFile(filepath.Join(dir, "out.jsonl")))) != relOld {
		t.Error("the killed run changed out.jsonl")
	}
	t.Logf("%d whole images written before the kill", whole)
}

// The connection is reset after the headers and part of the body: the item
// fails as a connection error (worth a retry), not as a decoding error of
// the half body.
func TestFaultConnectionResetMidBody(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func(c net.Conn) {
				bufio.NewReader(c).ReadString('\n') // the request line is enough
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"partial\": [1, 2")
				time.Sleep(50 * time.Millisecond)
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
			}(c)
		}
	}()
	r := relRun(t, relFetch("http://"+ln.Addr().String(), "[a]", "retry: {attempts: 2, backoff: 10ms}", ""))
	r.check(t, 1, 3, nil)
	f := r.failure(t, "get")
	if f.Class != "connection" || f.Attempts != 2 || conns.Load() != 2 {
		t.Errorf("failure %+v after %d connections, want class connection after 2 attempts", f, conns.Load())
	}
}

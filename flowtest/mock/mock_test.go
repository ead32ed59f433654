package mock_test

import (
	"context"
	"errors"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/clock"
	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/flowtest/mock"
	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/steps/all"
)

// decode reads a mocks: section as the flow test command does.
func decode(t *testing.T, text string) *mock.Set {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatal(err)
	}
	var s mock.Set
	if ds := conf.Decode(&doc, &s, nil); len(ds) > 0 {
		t.Fatalf("decode: %v", ds)
	}
	return &s
}

// install makes a test folder with the given files and installs set for a
// pipeline in a folder of its own.
func install(t *testing.T, set *mock.Set, files map[string]string) (rec *mock.Recorder, testDir, pipeDir string) {
	t.Helper()
	testDir, pipeDir = t.TempDir(), t.TempDir()
	for name, text := range files {
		p := filepath.Join(testDir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rec, err := set.Install(testDir, pipeDir)
	if err != nil {
		t.Fatalf("install: %v", err)
	}
	t.Cleanup(func() { rec.Close() })
	return rec, testDir, pipeDir
}

// run runs a pipeline written in dir on the engine, its step stages seeing
// rec as the outside world.
func run(t *testing.T, ctx context.Context, dir, text string, rec *mock.Recorder) (string, *report.Report) {
	t.Helper()
	file := filepath.Join(dir, "pipeline.yaml")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	r := all.Registry()
	p, err := spec.Load(file, spec.Options{}, r)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	thread := func(sr engine.StageRun) (engine.Runner, error) {
		sr.Env.Outside = rec
		return engine.ThreadRunner(sr)
	}
	var out, errOut strings.Builder
	rep, err := engine.Run(ctx, p, engine.Options{Registry: r, Stdout: &out, Stderr: &errOut, Runners: engine.Runners{spec.ModeThread: thread}})
	if err != nil {
		t.Fatalf("run: %v\n%s", err, errOut.String())
	}
	return out.String(), rep
}

// build builds one kind with rec as its outside world.
func build(t *testing.T, role steps.Role, kind, options, dir string, rec *mock.Recorder) steps.Built {
	t.Helper()
	k, ok := all.Registry().Lookup(kind)
	if !ok || k.Role != role {
		t.Fatalf("no %s kind %q", role, kind)
	}
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(options), &n); err != nil {
		t.Fatal(err)
	}
	env := &steps.Env{Dir: dir, Stage: kind + "-stage", Workers: 1}
	if rec != nil {
		env.Outside = rec
	}
	b, err := k.Build(&n, &conf.Context{}, env)
	if err != nil {
		t.Fatalf("build %s: %v", kind, err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func stage(rep *report.Report, name string) *report.Stage {
	for i := range rep.Stages {
		if rep.Stages[i].Name == name {
			return rep.Stages[i]
		}
	}
	return nil
}

// ---- decoding

func TestDecodeReportsPositions(t *testing.T) {
	text := `fetch:
  - url: "https://a.test/*"
    url_regexp: "x"
  - url_regexp: "("
  - url: "https://b.test/"
    status: 503
    sequence: [{status: 200}]
  - url: "https://c.test/"
    body: x
    json: {a: 1}
exec:
  - stdout: hi
  - argv: [a]
    exit_code: 300
files:
  fixtures: fx
  max_bytes: 0
`
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatal(err)
	}
	var s mock.Set
	ds := conf.Decode(&doc, &s, nil)
	got := ds.Sort().Error()
	for _, want := range []string{
		`3:5: give 'url' or 'url_regexp', not both`,
		`4:17: invalid url_regexp`,
		`6:5: 'status' belongs in each response of 'sequence'`,
		`8:5: give one of 'body', 'json' and 'body_file'`,
		`12:5: an exec mock needs 'argv'`,
		`14:16: 'exit_code' must be 0 to 255, got 300`,
		`17:14: 'max_bytes' must be above zero`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("diagnostics lack %q:\n%s", want, got)
		}
	}
}

func TestFilesShorthand(t *testing.T) {
	s := decode(t, "files: fixtures\n")
	if s.Files == nil || s.Files.Fixtures != "fixtures" || s.Files.MaxBytes == nil || *s.Files.MaxBytes != 256<<20 {
		t.Fatalf("files: %+v", s.Files)
	}
}

// ---- fetch

// The example: fail twice with 503, then 200. The engine's retry
// makes the three attempts, and the item succeeds.
func TestFetchSequenceWithEngineRetry(t *testing.T) {
	set := decode(t, `
fetch:
  - url: "https://api.test/posts/*"
    sequence:
      - {status: 503, times: 2, body: busy}
      - {status: 200, json: {id: 7, title: hello}}
`)
	rec, _, dir := install(t, set, nil)
	out, rep := run(t, context.Background(), dir, `
version: 1
stages:
  - name: ids
    source: {items: [7]}
  - name: get
    step: fetch
    retry: {attempts: 3, backoff: 1ms, jitter: 0}
    with:
      url: "https://api.test/posts/${ item }"
      headers: {Authorization: "Bearer s3cret", X-Trace: abc}
  - name: body
    step: compute
    with: {value: "${ item.body.title }"}
  - name: out
    sink: {print: jsonl}
`, rec)
	if rep.Status != "succeeded" || strings.TrimSpace(out) != `"hello"` {
		t.Fatalf("status %s, out %q, reason %s", rep.Status, out, rep.Reason)
	}
	reqs := rec.Requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3: %+v", len(reqs), reqs)
	}
	for i, r := range reqs {
		want := []int{503, 503, 200}[i]
		if r.Status != want || r.Method != "GET" || r.URL != "https://api.test/posts/7" || r.Stage != "get" || r.Index != 0 || r.Rule != 0 {
			t.Errorf("request %d: %+v", i, r)
		}
		if r.Headers["authorization"] != "[redacted]" || r.Headers["x-trace"] != "abc" {
			t.Errorf("request %d headers: %v", i, r.Headers)
		}
	}
	if s := stage(rep, "get"); s == nil || s.Succeeded != 1 || s.Retries != 2 {
		t.Errorf("stage get: %+v", s)
	}
	if len(rec.Unmocked()) != 0 {
		t.Errorf("unmocked: %v", rec.Unmocked())
	}
}

// A sequence counts per URL by default: each item's URL fails twice then
// succeeds whatever the interleaving of the workers.
func TestFetchSequencePerURL(t *testing.T) {
	set := decode(t, `
fetch:
  - url: "https://api.test/*"
    sequence: [{status: 500, times: 1}, {status: 200, body: ok}]
`)
	rec, _, dir := install(t, set, nil)
	_, rep := run(t, context.Background(), dir, `
version: 1
stages:
  - name: ids
    source: {range: {from: 1, to: 5}}
  - name: get
    step: fetch
    workers: 5
    retry: {attempts: 2, backoff: 1ms, jitter: 0}
    with: {url: "https://api.test/${ item }"}
  - name: out
    sink: {print: jsonl}
`, rec)
	if s := stage(rep, "get"); rep.Status != "succeeded" || s.Succeeded != 5 || s.Retries != 5 {
		t.Fatalf("status %s, stage %+v", rep.Status, s)
	}
	if n := len(rec.Requests()); n != 10 {
		t.Errorf("%d requests, want 10", n)
	}
}

// fetchStep builds a fetch step on rec.
func fetchStep(t *testing.T, rec *mock.Recorder, with string) steps.Step {
	t.Helper()
	return build(t, steps.RoleStep, "fetch", with, t.TempDir(), rec).Step
}

// Retry-After on a mocked 503 reaches the engine's retry as it does from
// a real server: as the least wait before the next attempt.
func TestFetchRetryAfter(t *testing.T) {
	rec, _, _ := install(t, decode(t, `
fetch:
  - url: https://api.test/x
    status: 503
    headers: {Retry-After: "7"}
`), nil)
	_, err := fetchStep(t, rec, `url: https://api.test/x`).Do(context.Background(), steps.Input{Index: 3, Item: 1})
	var se *steps.Error
	if !errors.As(err, &se) || se.Class != "http_5xx" || se.Permanent || se.RetryAfter != 7*time.Second {
		t.Fatalf("error %#v", err)
	}
}

// virtual is the least of a virtual clock: a sleep passes at once and moves
// the time on.
type virtual struct {
	mu    sync.Mutex
	now   time.Time
	slept []time.Duration
}

func (c *virtual) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *virtual) SleepUntil(ctx context.Context, t time.Time) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.now) {
		c.slept = append(c.slept, t.Sub(c.now))
		c.now = t
	}
	return nil
}

func (c *virtual) AfterFunc(d time.Duration, f func()) clock.Timer { return time.AfterFunc(d, f) }

// Latency is waited on the run's clock: an hour on a virtual clock passes
// at once, and exactly.
func TestFetchLatencyOnVirtualClock(t *testing.T) {
	rec, _, _ := install(t, decode(t, `
fetch:
  - {url: https://api.test/slow, latency: 1h, body: done}
`), nil)
	vc := &virtual{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	ctx := clock.NewContext(context.Background(), vc)
	res, err := fetchStep(t, rec, `url: https://api.test/slow`).Do(ctx, steps.Input{Item: 1})
	if err != nil {
		t.Fatal(err)
	}
	if body := res.(map[string]any)["body"]; body != "done" {
		t.Errorf("body %v", body)
	}
	// elapsed is read on the run's clock, so a test can assert it.
	if el := res.(map[string]any)["elapsed"]; el != 3600.0 {
		t.Errorf("elapsed %v, want 3600 (the mocked latency on the virtual clock)", el)
	}
	if !reflect.DeepEqual(vc.slept, []time.Duration{time.Hour}) {
		t.Errorf("slept %v, want [1h]", vc.slept)
	}
	if got := rec.Requests()[0].Time; !got.Equal(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("request time %v, want the virtual clock's", got)
	}
}

// On the real clock the latency is really waited, and bounded by fetch's
// timeout like a slow server.
func TestFetchLatencyOnRealClock(t *testing.T) {
	rec, _, _ := install(t, decode(t, `
fetch:
  - {url: https://api.test/a, latency: 30ms}
  - {url: https://api.test/b, latency: 1h}
`), nil)
	start := time.Now()
	if _, err := fetchStep(t, rec, `url: https://api.test/a`).Do(context.Background(), steps.Input{Item: 1}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Errorf("answered after %v, before its latency of 30ms", d)
	}
	_, err := fetchStep(t, rec, "url: https://api.test/b\ntimeout: 20ms").Do(context.Background(), steps.Input{Item: 1})
	if steps.ClassOf(err) != "timeout" {
		t.Fatalf("error %v (class %s), want a timeout", err, steps.ClassOf(err))
	}
}

// fail: connection is a reset connection: class connection, retried.
func TestFetchFailConnection(t *testing.T) {
	rec, _, _ := install(t, decode(t, `
fetch:
  - {url: "https://api.test/*", method: POST, fail: connection}
`), nil)
	_, err := fetchStep(t, rec, "url: https://api.test/x\nmethod: POST\njson: {a: 1}").Do(context.Background(), steps.Input{Item: 1})
	var se *steps.Error
	if !errors.As(err, &se) || se.Class != "connection" || se.Permanent {
		t.Fatalf("error %#v", err)
	}
	if r := rec.Requests(); len(r) != 1 || r[0].Status != 0 || r[0].BodyBytes != 7 {
		t.Errorf("requests %+v", r)
	}
}

// An unmocked request fails its item with class unmocked, naming the stage,
// the item and the URL and suggesting the mock, and is recorded even when
// the stage skips the item. The loopback server proves nothing was sent.
func TestFetchUnmockedNeverReachesTheNetwork(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer srv.Close()
	rec, _, dir := install(t, decode(t, `
fetch:
  - {url: "https://api.test/*", method: POST}
  - {url_regexp: "^http://127\\.0\\.0\\.1:[0-9]+/only$"}
`), nil)
	_, rep := run(t, context.Background(), dir, `
version: 1
stages:
  - name: ids
    source: {items: [a, b]}
  - name: get
    step: fetch
    on_error: skip
    retry: {attempts: 3, backoff: 1ms}
    with: {url: "`+srv.URL+`/${ item }?token=hunter2"}
  - name: out
    sink: {print: jsonl}
`, rec)
	if hits.Load() != 0 {
		t.Fatalf("the server got %d requests", hits.Load())
	}
	if s := stage(rep, "get"); s.Skipped != 2 {
		t.Fatalf("stage get %+v", s)
	}
	un := rec.Unmocked()
	if len(un) != 2 || len(rec.Requests()) != 2 { // never retried
		t.Fatalf("unmocked %v", un)
	}
	for _, a := range un {
		msg := a.Error()
		if a.What != "fetch" || a.Stage != "get" || strings.Contains(msg, "hunter2") ||
			!strings.Contains(msg, `unmocked HTTP request in a test (stage "get", item `) ||
			!strings.Contains(msg, "GET "+srv.URL+"/") || !strings.Contains(msg, "token=REDACTED") ||
			!strings.Contains(msg, "add to the test's mocks: fetch: [{url: ") {
			t.Errorf("access %+v: %s", a, msg)
		}
	}
	if rep.Stages == nil || len(rep.Failures) == 0 || !strings.Contains(rep.Failures[0].Error, "unmocked") {
		t.Errorf("failures %+v", rep.Failures)
	}
	if rec.Err() == nil {
		t.Error("Err is nil with unmocked accesses")
	}
}

func TestFetchBodyFile(t *testing.T) {
	set := decode(t, `
fetch:
  - {url: https://api.test/p, body_file: responses/p.json, headers: {Content-Type: application/json}}
`)
	rec, _, _ := install(t, set, map[string]string{"responses/p.json": `{"n": 12345678901234567890}`})
	res, err := fetchStep(t, rec, `url: https://api.test/p`).Do(context.Background(), steps.Input{Item: 1})
	if err != nil {
		t.Fatal(err)
	}
	if b := res.(map[string]any)["bytes"]; b != int64(27) {
		t.Errorf("bytes %v", b)
	}

	// Outside the test's folder: refused at its position.
	for _, bad := range []string{"../p.json", "/etc/passwd", "responses/missing.json", "responses"} {
		set := decode(t, "fetch:\n  - {url: https://api.test/p, body_file: \""+bad+"\"}\n")
		dir := t.TempDir()
		os.MkdirAll(filepath.Join(dir, "responses"), 0o755)
		_, err := set.Install(dir, t.TempDir())
		if err == nil || !strings.Contains(err.Error(), "2:42: body_file") {
			t.Errorf("body_file %s: %v", bad, err)
		}
	}
}

// ---- exec

func execStep(t *testing.T, rec *mock.Recorder, with string) steps.Step {
	t.Helper()
	return build(t, steps.RoleStep, "exec", with, t.TempDir(), rec).Step
}

// A mocked exit code outside ok_codes fails the item with class exit and
// the mocked stderr in the message, as a real program's would.
func TestExecExitCodeAndStderr(t *testing.T) {
	rec, _, _ := install(t, decode(t, `
exec:
  - {argv: [wc, -l, "*.log"], exit_code: 3, stderr: "wc: a.log: permission denied\n"}
  - {argv: [echo, "**"], stdout: "hello\n"}
`), nil)
	_, err := execStep(t, rec, `argv: [wc, -l, "${ item }"]`).Do(context.Background(), steps.Input{Index: 4, Item: "a.log"})
	if steps.ClassOf(err) != "exit" || !strings.Contains(err.Error(), "wc exited with status 3; stderr:\nwc: a.log: permission denied") {
		t.Fatalf("error %v (class %s)", err, steps.ClassOf(err))
	}
	res, err := execStep(t, rec, "argv: [echo, a, b]\ncapture: lines").Do(context.Background(), steps.Input{Item: 1})
	if err != nil || !reflect.DeepEqual(res, map[string]any{"stdout": []any{"hello"}, "exit_code": int64(0), "stderr": ""}) {
		t.Fatalf("result %v, %v", res, err)
	}
}

// exit 1 twice then 0, with the engine's retry on class exit: three runs.
func TestExecSequenceWithEngineRetry(t *testing.T) {
	rec, _, dir := install(t, decode(t, `
exec:
  - argv: [deploy, "*"]
    sequence:
      - {exit_code: 1, stderr: busy, times: 2}
      - {stdout: "deployed"}
`), nil)
	out, rep := run(t, context.Background(), dir, `
version: 1
stages:
  - name: hosts
    source: {items: [web1]}
  - name: deploy
    step: exec
    retry: {attempts: 3, backoff: 1ms, jitter: 0, on: [exit]}
    with:
      argv: [deploy, "${ item }"]
      stdin: "${ item }-config"
      env: {TOKEN: secret, REGION: eu}
  - name: out
    sink: {print: jsonl}
`, rec)
	if rep.Status != "succeeded" || !strings.Contains(out, `"stdout":"deployed"`) {
		t.Fatalf("status %s (%s), out %q", rep.Status, rep.Reason, out)
	}
	calls := rec.Calls()
	if len(calls) != 3 {
		t.Fatalf("%d calls, want 3", len(calls))
	}
	for i, c := range calls {
		want := []int{1, 1, 0}[i]
		if c.ExitCode != want || !reflect.DeepEqual(c.Argv, []string{"deploy", "web1"}) || c.StdinBytes != 11 ||
			!reflect.DeepEqual(c.EnvNames, []string{"REGION", "TOKEN"}) || c.Stage != "deploy" || c.Index != 0 || c.Dir != dir {
			t.Errorf("call %d: %+v", i, c)
		}
	}
}

func TestExecShellCommand(t *testing.T) {
	rec, _, _ := install(t, decode(t, `
exec:
  - {command: "sort * | uniq -c", argv: ["*.txt"], stdout: "2 a"}
`), nil)
	res, err := execStep(t, rec, "shell: true\ncommand: sort \"$1\" | uniq -c\nargv: [\"${ item }\"]").Do(context.Background(), steps.Input{Item: "x.txt"})
	if err != nil || res.(map[string]any)["stdout"] != "2 a" {
		t.Fatalf("%v %v", res, err)
	}
	if c := rec.Calls()[0]; !c.Shell || c.Line != `sort "$1" | uniq -c` {
		t.Errorf("call %+v", c)
	}
	// A direct run does not match a shell rule.
	_, err = execStep(t, rec, `argv: [sort, x.txt]`).Do(context.Background(), steps.Input{Item: 1})
	if steps.ClassOf(err) != mock.ClassUnmocked {
		t.Errorf("error %v", err)
	}
}

// max_output still bounds a mocked program's output.
func TestExecMaxOutput(t *testing.T) {
	rec, _, _ := install(t, decode(t, `
exec:
  - {argv: [cat], stdout: "0123456789abcdef"}
`), nil)
	_, err := execStep(t, rec, "argv: [cat]\nmax_output: 8").Do(context.Background(), steps.Input{Item: 1})
	if steps.ClassOf(err) != "too_large" {
		t.Fatalf("error %v", err)
	}
}

// An unmocked program is never started: touch would create the file.
func TestExecUnmockedNeverRuns(t *testing.T) {
	rec, _, _ := install(t, decode(t, `
exec:
  - {argv: [wc, "**"]}
`), nil)
	marker := filepath.Join(t.TempDir(), "created")
	_, err := execStep(t, rec, `argv: [touch, "${ item }"]`).Do(context.Background(), steps.Input{Index: 2, Item: marker})
	if steps.ClassOf(err) != mock.ClassUnmocked {
		t.Fatalf("error %v", err)
	}
	if _, serr := os.Stat(marker); serr == nil {
		t.Fatal("the program ran")
	}
	msg := err.Error()
	if !strings.Contains(msg, `unmocked program run in a test (stage "exec-stage", item 2): argv ["touch", "`+marker+`"]`) ||
		!strings.Contains(msg, `add to the test's mocks: exec: [{argv: ["touch", "`) {
		t.Errorf("message %s", msg)
	}
	if un := rec.Unmocked(); len(un) != 1 || un[0].What != "exec" {
		t.Errorf("unmocked %v", un)
	}
}

// ---- files

const appLog = "start\nERROR one\nWARN two\nERROR three\n"

// analyze-logs reads the fixture as the pipeline names it, and the result
// shows the pipeline's path, not the sandbox's.
func TestFilesAnalyzeLogsReadsFixtures(t *testing.T) {
	rec, _, dir := install(t, decode(t, "files: fixtures\n"), map[string]string{"fixtures/logs/app.log": appLog})
	out, rep := run(t, context.Background(), dir, `
version: 1
stages:
  - name: files
    source: {items: [logs/app.log]}
  - name: analyze
    step: analyze-logs
  - name: out
    sink: {print: jsonl}
`, rec)
	want := `{"errors":2,"file":"app.log","lines":4,"path":"` + filepath.Join(dir, "logs/app.log") + `","warnings":1}`
	if rep.Status != "succeeded" || strings.TrimSpace(out) != want {
		t.Fatalf("status %s (%s)\n got %s\nwant %s", rep.Status, rep.Reason, out, want)
	}
}

// A file that exists for real but no fixture provides is unmocked: a test
// reads only what it declares.
func TestFilesUnmockedRead(t *testing.T) {
	real := filepath.Join(t.TempDir(), "real.log")
	os.WriteFile(real, []byte(appLog), 0o644)
	rec, _, dir := install(t, decode(t, "files: {map: {logs/app.log: app.log}}\n"), map[string]string{"app.log": appLog})
	step := build(t, steps.RoleStep, "analyze-logs", "{}", dir, rec).Step
	if _, err := step.Do(context.Background(), steps.Input{Index: 0, Item: "logs/app.log"}); err != nil {
		t.Fatalf("mapped file: %v", err)
	}
	_, err := step.Do(context.Background(), steps.Input{Index: 5, Item: real})
	if steps.ClassOf(err) != mock.ClassUnmocked || !strings.Contains(err.Error(), `unmocked file read in a test (stage "analyze-logs-stage", item 5): `+real) ||
		!strings.Contains(err.Error(), `files: {map: {"`+real+`": fixtures/real.log}}`) {
		t.Fatalf("error %v", err)
	}
	// Inside a mapped folder, a missing file is the kind's own not-found.
	rec2, _, dir2 := install(t, decode(t, "files: fx\n"), map[string]string{"fx/logs/a.log": appLog})
	_, err = build(t, steps.RoleStep, "analyze-logs", "{}", dir2, rec2).Step.Do(context.Background(), steps.Input{Item: "logs/none.log"})
	if steps.ClassOf(err) != "io" || !strings.Contains(err.Error(), filepath.Join(dir2, "logs/none.log")+": no such file") {
		t.Fatalf("error %v", err)
	}
}

// A glob source walks the fixtures and gives the pipeline's paths; a glob
// over a folder nothing provides is unmocked.
func TestFilesGlobSource(t *testing.T) {
	rec, _, dir := install(t, decode(t, "files: {fixtures: fx, map: {/var/log/app/x.log: one.log}}\n"), map[string]string{
		"fx/logs/a.log": appLog, "fx/logs/sub/b.log": appLog, "fx/logs/c.txt": "", "one.log": appLog,
	})
	items := func(options string) ([]any, error) {
		var got []any
		err := build(t, steps.RoleSource, "glob", options, dir, rec).Source.Items(context.Background(), func(v any) error {
			got = append(got, v)
			return nil
		})
		return got, err
	}
	got, err := items(`"logs/**/*.log"`)
	want := []any{filepath.Join(dir, "logs/a.log"), filepath.Join(dir, "logs/sub/b.log")}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("glob: %v %v, want %v", got, err, want)
	}
	if got, err := items(`"/var/log/*/*.log"`); err != nil || !reflect.DeepEqual(got, []any{"/var/log/app/x.log"}) {
		t.Fatalf("glob of a mapped absolute path: %v %v", got, err)
	}
	if _, err := items(`"/etc/*.conf"`); steps.ClassOf(err) != mock.ClassUnmocked {
		t.Fatalf("glob of an unmocked folder: %v", err)
	}
	// The lines source reads a fixture too.
	var lines []any
	err = build(t, steps.RoleSource, "lines", `logs/a.log`, dir, rec).Source.Items(context.Background(), func(v any) error {
		lines = append(lines, v)
		return nil
	})
	if err != nil || len(lines) != 4 {
		t.Fatalf("lines: %v %v", lines, err)
	}
}

// The write sink writes into the sandbox, atomically as ever; the output is
// captured and the real folder stays untouched.
func TestFilesSinkOutputCaptured(t *testing.T) {
	rec, _, dir := install(t, decode(t, "files: {}\n"), nil)
	sink := build(t, steps.RoleSink, "write", `out/result.jsonl`, dir, rec).Sink
	ctx := context.Background()
	for i, v := range []any{map[string]any{"a": int64(1)}, "two"} {
		if err := sink.Write(ctx, steps.Record{Index: int64(i), Item: v}); err != nil {
			t.Fatal(err)
		}
	}
	if err := sink.Close(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "out")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the real folder got out/: %v", err)
	}
	b, err := rec.Output("out/result.jsonl")
	if err != nil || string(b) != "{\"a\":1}\n\"two\"\n" {
		t.Fatalf("output %q %v", b, err)
	}
	outs, err := rec.Outputs()
	if err != nil || !reflect.DeepEqual(outs, []string{filepath.Join(dir, "out/result.jsonl")}) {
		t.Fatalf("outputs %v %v", outs, err)
	}
	// An absolute path with allow_outside lands in the sandbox too.
	abs := filepath.Join(t.TempDir(), "elsewhere", "x.json")
	sink = build(t, steps.RoleSink, "write", "{path: "+abs+", allow_outside: true}", dir, rec).Sink
	if err := sink.Close(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(abs)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("wrote outside the sandbox: %v", err)
	}
	if b, err := rec.Output(abs); err != nil || string(b) != "[]\n" {
		t.Fatalf("output %q %v", b, err)
	}
}

// resize reads its source from the fixtures and writes into the sandbox.
func TestFilesResize(t *testing.T) {
	img := image.NewRGBA(image.Rect(0, 0, 8, 8))
	for i := range img.Pix {
		img.Pix[i] = 200
	}
	img.Set(0, 0, color.RGBA{255, 0, 0, 255})
	var buf strings.Builder
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	rec, _, dir := install(t, decode(t, "files: fx\n"), map[string]string{"fx/img/a.png": buf.String()})
	step := build(t, steps.RoleStep, "resize", "{width: 4, height: 4}", dir, rec).Step
	res, err := step.Do(context.Background(), steps.Input{Item: "img/a.png"})
	if err != nil {
		t.Fatal(err)
	}
	m := res.(map[string]any)
	if m["src"] != filepath.Join(dir, "img/a.png") || m["dest"] != filepath.Join(dir, "resized/a.png") {
		t.Errorf("result %v", m)
	}
	b, err := rec.Output("resized/a.png")
	if err != nil {
		t.Fatal(err)
	}
	if cfg, _, err := image.DecodeConfig(strings.NewReader(string(b))); err != nil || cfg.Width != 4 {
		t.Errorf("output %v %v", cfg, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "resized")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the real folder got resized/: %v", err)
	}
	outs, _ := rec.Outputs()
	if !reflect.DeepEqual(outs, []string{filepath.Join(dir, "resized/a.png")}) {
		t.Errorf("outputs %v (the fixture is no output)", outs)
	}
}

// Fixtures are files and folders inside the test's folder, within
// max_bytes.
func TestFixturesConfined(t *testing.T) {
	for _, c := range []struct{ files, want string }{
		{"files: ../up\n", `1:8: fixture "../up" must be inside the test's folder`},
		{"files: {map: {a.log: /etc/passwd}}\n", `1:22: fixture "/etc/passwd" must be inside`},
		{"files: missing\n", `1:8: fixture "missing": no such file`},
		{"files: {fixtures: fx, max_bytes: 10}\n", `1:19: fixture "fx": the fixtures hold more than max_bytes (10 bytes)`},
		{"files: link\n", `is not a regular file or a folder`},
	} {
		dir := t.TempDir()
		os.MkdirAll(filepath.Join(dir, "fx"), 0o755)
		os.WriteFile(filepath.Join(dir, "fx/big"), []byte("0123456789abcdef"), 0o644)
		os.MkdirAll(filepath.Join(dir, "link"), 0o755)
		os.Symlink("/etc/passwd", filepath.Join(dir, "link/pw"))
		_, err := decode(t, c.files).Install(dir, t.TempDir())
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", strings.TrimSpace(c.files), err, c.want)
		}
	}
}

// The kinds' own protections hold on the sandbox too: the write sink stays
// in the pipeline's folder, analyze-logs opens only regular files.
func TestProtectionsHoldUnderMocks(t *testing.T) {
	rec, _, dir := install(t, decode(t, "files: fx\n"), map[string]string{"fx/logs/dir/x.log": appLog})
	k, _ := all.Registry().Lookup("write")
	var n yaml.Node
	yaml.Unmarshal([]byte(`../escape.jsonl`), &n)
	if _, err := k.Build(&n, &conf.Context{}, &steps.Env{Dir: dir, Stage: "out", Outside: rec}); err == nil || !strings.Contains(err.Error(), "leaves the pipeline directory") {
		t.Errorf("write ../escape.jsonl: %v", err)
	}
	_, err := build(t, steps.RoleStep, "analyze-logs", "{}", dir, rec).Step.Do(context.Background(), steps.Input{Item: "logs/dir"})
	if steps.ClassOf(err) != "io" || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("analyze-logs of a folder: %v", err)
	}
}

// Redirects are followed through the mocks, each hop recorded.
func TestFetchRedirectThroughMocks(t *testing.T) {
	rec, _, _ := install(t, decode(t, `
fetch:
  - {url: https://a.test/old, status: 301, headers: {Location: /new}}
  - {url: https://a.test/new, body: moved here}
`), nil)
	res, err := fetchStep(t, rec, `url: https://a.test/old`).Do(context.Background(), steps.Input{Item: 1})
	if err != nil {
		t.Fatal(err)
	}
	if m := res.(map[string]any); m["final_url"] != "https://a.test/new" || m["body"] != "moved here" {
		t.Errorf("result %v", m)
	}
	if r := rec.Requests(); len(r) != 2 || r[1].URL != "https://a.test/new" || r[1].Rule != 1 {
		t.Errorf("requests %+v", r)
	}
}

// The engine honours a mocked Retry-After: the second attempt comes no
// sooner than the header says (on the real clock here; on flow test's
// virtual clock the wait passes at once, exactly).
func TestFetchRetryAfterWithEngine(t *testing.T) {
	if testing.Short() {
		t.Skip("waits a second")
	}
	rec, _, dir := install(t, decode(t, `
fetch:
  - url: https://api.test/x
    sequence:
      - {status: 429, headers: {Retry-After: "1"}}
      - {status: 200, body: ok}
`), nil)
	_, rep := run(t, context.Background(), dir, `
version: 1
stages:
  - name: ids
    source: {items: [1]}
  - name: get
    step: fetch
    retry: {attempts: 2, backoff: 1ms, jitter: 0}
    with: {url: "https://api.test/x"}
  - name: out
    sink: {print: jsonl}
`, rec)
	reqs := rec.Requests()
	if rep.Status != "succeeded" || len(reqs) != 2 {
		t.Fatalf("status %s, %d requests", rep.Status, len(reqs))
	}
	if gap := reqs[1].Time.Sub(reqs[0].Time); gap < time.Second {
		t.Errorf("retried after %v, before the Retry-After of 1s", gap)
	}
}

// On the engine, a mocked exit code fails the item with class exit and the
// mocked stderr in the report's failure.
func TestExecExitClassInReport(t *testing.T) {
	rec, _, dir := install(t, decode(t, `
exec:
  - {argv: [check, "**"], exit_code: 2, stderr: "check: bad input\n"}
`), nil)
	_, rep := run(t, context.Background(), dir, `
version: 1
stages:
  - name: items
    source: {items: [a]}
  - name: check
    step: exec
    on_error: skip
    with: {argv: [check, "${ item }"]}
  - name: out
    sink: {print: jsonl}
`, rec)
	if len(rep.Failures) != 1 {
		t.Fatalf("failures %+v", rep.Failures)
	}
	if f := rep.Failures[0]; f.Class != "exit" || !strings.Contains(f.Error, "check exited with status 2; stderr:\ncheck: bad input") {
		t.Errorf("failure %+v", f)
	}
}

// per: rule walks one sequence for every request the rule answers; a Set
// built by hand gets the decoded defaults (status 200, times 1).
func TestFetchSequencePerRuleAndHandBuiltSet(t *testing.T) {
	rec, _, _ := install(t, decode(t, `
fetch:
  - url: "https://api.test/*"
    per: rule
    sequence: [{status: 503}, {status: 200}]
`), nil)
	_, err := fetchStep(t, rec, `url: https://api.test/a`).Do(context.Background(), steps.Input{Item: 1})
	if steps.ClassOf(err) != "http_5xx" {
		t.Fatalf("first request: %v", err)
	}
	if _, err := fetchStep(t, rec, `url: https://api.test/b`).Do(context.Background(), steps.Input{Item: 1}); err != nil {
		t.Fatalf("second request, another URL: %v", err)
	}

	set := &mock.Set{Fetch: []mock.FetchRule{{URL: "https://api.test/x", Response: mock.Response{Body: "hi"}}}}
	rec2, err := set.Install(t.TempDir(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer rec2.Close()
	res, err := fetchStep(t, rec2, `url: https://api.test/x`).Do(context.Background(), steps.Input{Item: 1})
	if err != nil || res.(map[string]any)["status"] != int64(200) || res.(map[string]any)["body"] != "hi" {
		t.Fatalf("%v %v", res, err)
	}
}

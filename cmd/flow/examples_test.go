package main

import (
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/flowrun/flow/report"
)

// TestExamples runs every pipeline of examples/ end to end, through the real
// CLI, against local servers and generated inputs; testdata/examples holds
// one script per example. Each script works on a copy of examples/ in its
// own $WORK, so runs never write into the repository.
func TestExamples(t *testing.T) {
	if testing.Short() {
		t.Skip("examples take several seconds (sleeps of the guide's programs)")
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	testscript.Run(t, testscript.Params{
		Dir:                 filepath.Join(root, "testdata", "examples"),
		RequireExplicitExec: true,
		Cmds:                exampleCmds,
		UpdateScripts:       os.Getenv("UPDATE_SCRIPTS") == "1",
		Setup: func(env *testscript.Env) error {
			if err := copyDir(filepath.Join(root, "examples"), filepath.Join(env.WorkDir, "examples")); err != nil {
				return err
			}
			// What workers: auto resolves to, for workers_auto's checks:
			// GOMAXPROCS, which a CPU quota or the environment can hold
			// below the CPU count; flow starts with this process's.
			n := runtime.GOMAXPROCS(0)
			env.Setenv("NCPU", strconv.Itoa(n))
			env.Setenv("IOWORKERS", strconv.Itoa(min(32, 4*n)))
			return nil
		},
	})
}

// TestEveryExampleIsTested keeps examples/ honest: each pipeline there opens
// with the schema modeline and a header comment, and has a script in
// testdata/examples that runs it.
func TestEveryExampleIsTested(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	files, err := filepath.Glob(filepath.Join(root, "examples", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples found: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		if strings.HasSuffix(name, "_test") {
			continue // the tests of an example (flowtest_test.go)
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.SplitN(string(b), "\n", 4)
		if lines[0] != "# yaml-language-server: $schema=../schema.json" {
			t.Errorf("examples/%s.yaml: the first line must be the modeline '# yaml-language-server: $schema=../schema.json'", name)
		}
		if len(lines) < 3 || !strings.HasPrefix(lines[2], "# "+name+" ") {
			t.Errorf("examples/%s.yaml: after the modeline, a comment header must start with '# %s - what it shows'", name, name)
		}
		script, err := os.ReadFile(filepath.Join(root, "testdata", "examples", name+".txtar"))
		if err != nil {
			t.Errorf("examples/%s.yaml has no script testdata/examples/%s.txtar that runs it", name, name)
			continue
		}
		if !strings.Contains(string(script), "flow run examples/"+name+".yaml") {
			t.Errorf("testdata/examples/%s.txtar never runs examples/%s.yaml", name, name)
		}
	}
}

var exampleCmds = map[string]func(ts *testscript.TestScript, neg bool, args []string){
	"httpserve":   cmdHTTPServe,
	"httpcheck":   cmdHTTPCheck,
	"unreachable": cmdUnreachable,
	"genlogs":     cmdGenLogs,
	"genimages":   cmdGenImages,
	"imgsize":     cmdImgSize,
	"checkreport": cmdCheckReport,
	"nlines":      cmdNLines,
	"replace":     cmdReplace,
}

// testServer counts requests and the most requests it held at once.
type testServer struct {
	srv      *httptest.Server
	fail     map[string]bool
	delay    time.Duration
	requests atomic.Int64
	inFlight atomic.Int64
	maxMu    sync.Mutex
	max      int64
}

var (
	serversMu sync.Mutex
	servers   = map[*testscript.TestScript]map[string]*testServer{}
)

// httpserve NAME [delay=DURATION] [fail=N,M,...] starts a local HTTP server
// for the rest of the script and sets $NAME to its URL. It answers
//
//	/posts/N      200 with a JSON post {"id": N, "userId", "title", "body"},
//	              or 500 when N is listed in fail=
//	/status/CODE  that status, with a short text body
//	/redirect     302 to /status/200
//	/stall        nothing until the client gives up
//
// each after delay= (default 20ms), so that concurrent requests overlap.
func cmdHTTPServe(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 1 {
		ts.Fatalf("usage: httpserve NAME [delay=DURATION] [fail=N,M,...]")
	}
	s := &testServer{fail: map[string]bool{}, delay: 20 * time.Millisecond}
	for _, a := range args[1:] {
		k, v, _ := strings.Cut(a, "=")
		switch k {
		case "delay":
			d, err := time.ParseDuration(v)
			ts.Check(err)
			s.delay = d
		case "fail":
			for _, id := range strings.Split(v, ",") {
				s.fail[id] = true
			}
		default:
			ts.Fatalf("httpserve: unknown option %q", a)
		}
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.handle))
	ts.Defer(s.srv.Close)
	serversMu.Lock()
	if servers[ts] == nil {
		servers[ts] = map[string]*testServer{}
		ts.Defer(func() { serversMu.Lock(); delete(servers, ts); serversMu.Unlock() })
	}
	servers[ts][args[0]] = s
	serversMu.Unlock()
	ts.Setenv(args[0], s.srv.URL)
}

func (s *testServer) handle(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	n := s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	s.maxMu.Lock()
	s.max = max(s.max, n)
	s.maxMu.Unlock()
	select {
	case <-time.After(s.delay):
	case <-r.Context().Done():
		return
	}
	switch {
	case strings.HasPrefix(r.URL.Path, "/posts/"):
		id := strings.TrimPrefix(r.URL.Path, "/posts/")
		n, err := strconv.Atoi(id)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		if s.fail[id] {
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		json.NewEncoder(w).Encode(map[string]any{
			"userId": (n-1)/10 + 1, "id": n,
			"title": fmt.Sprintf("post %d", n), "body": fmt.Sprintf("body of post %d", n),
		})
	case strings.HasPrefix(r.URL.Path, "/status/"):
		code, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/status/"))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(code)
		fmt.Fprintf(w, "status %d\n", code)
	case r.URL.Path == "/redirect":
		http.Redirect(w, r, "/status/200", http.StatusFound)
	case r.URL.Path == "/stall":
		select {
		case <-r.Context().Done():
		case <-time.After(time.Minute):
		}
	default:
		http.NotFound(w, r)
	}
}

// httpcheck NAME [requests=N] [max_in_flight<=N] checks what server NAME saw.
func cmdHTTPCheck(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 1 {
		ts.Fatalf("usage: httpcheck NAME [requests=N] [max_in_flight<=N]")
	}
	serversMu.Lock()
	s := servers[ts][args[0]]
	serversMu.Unlock()
	if s == nil {
		ts.Fatalf("httpcheck: no server %q started by httpserve", args[0])
	}
	s.maxMu.Lock()
	maxSeen := s.max
	s.maxMu.Unlock()
	ts.Logf("server %s: %d requests, at most %d at once", args[0], s.requests.Load(), maxSeen)
	for _, a := range args[1:] {
		switch {
		case strings.HasPrefix(a, "requests="):
			want, err := strconv.ParseInt(strings.TrimPrefix(a, "requests="), 10, 64)
			ts.Check(err)
			if got := s.requests.Load(); got != want {
				ts.Fatalf("server %s got %d requests, want %d", args[0], got, want)
			}
		case strings.HasPrefix(a, "max_in_flight<="):
			want, err := strconv.ParseInt(strings.TrimPrefix(a, "max_in_flight<="), 10, 64)
			ts.Check(err)
			if maxSeen > want {
				ts.Fatalf("server %s had %d requests in flight at once, want at most %d", args[0], maxSeen, want)
			}
		default:
			ts.Fatalf("httpcheck: unknown check %q", a)
		}
	}
}

// unreachable NAME sets $NAME to the URL of a loopback port nothing listens
// on, so that a request to it is refused at once.
func cmdUnreachable(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: unreachable NAME")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	ts.Check(err)
	addr := l.Addr().String()
	ts.Check(l.Close())
	ts.Setenv(args[0], "http://"+addr)
}

// genLogs are the files genlogs writes: name, then lines, errors, warnings.
// One line of each file holds both ERROR and WARN; it counts as an error
// only, like the guide's if/elif.
var genLogs = []struct {
	name                    string
	lines, errors, warnings int
}{
	{"alpha.log", 120, 7, 11},
	{"bravo.log", 80, 12, 3},
	{"charlie.log", 200, 1, 40},
	{"delta.log", 50, 9, 0},
	{"echo.log", 10, 0, 2},
	{"foxtrot.log", 300, 30, 30},
	{"golf.log", 64, 4, 4},
}

// genlogs DIR [corrupt] writes the genLogs files into DIR, plus a notes.txt
// that the *.log pattern must not pick up; with corrupt, also broken.log,
// which starts like gzip but is not, so that reading it fails.
func cmdGenLogs(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 1 || len(args) > 2 || (len(args) == 2 && args[1] != "corrupt") {
		ts.Fatalf("usage: genlogs DIR [corrupt]")
	}
	dir := ts.MkAbs(args[0])
	ts.Check(os.MkdirAll(dir, 0o755))
	for _, f := range genLogs {
		var b strings.Builder
		for i := 0; i < f.lines; i++ {
			stamp := fmt.Sprintf("2024-05-14T03:%02d:%02dZ", i/60%60, i%60)
			switch {
			case i == 0 && f.errors > 0:
				fmt.Fprintf(&b, "%s ERROR job failed; WARN retry budget low\n", stamp)
			case i < f.errors:
				fmt.Fprintf(&b, "%s ERROR request %d failed\n", stamp, i)
			case i < f.errors+f.warnings:
				fmt.Fprintf(&b, "%s WARN slow request %d\n", stamp, i)
			default:
				fmt.Fprintf(&b, "%s INFO request %d served\n", stamp, i)
			}
		}
		ts.Check(os.WriteFile(filepath.Join(dir, f.name), []byte(b.String()), 0o644))
	}
	ts.Check(os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("ERROR not a log\n"), 0o644))
	if len(args) == 2 {
		ts.Check(os.WriteFile(filepath.Join(dir, "broken.log"), []byte("\x1f\x8b\x08 not really gzip"), 0o644))
	}
}

// genimages DIR N W H writes N images of W x H pixels into DIR, alternately
// JPEG (img-K.jpg) and PNG (img-K.png).
func cmdGenImages(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 4 {
		ts.Fatalf("usage: genimages DIR N W H")
	}
	dir := ts.MkAbs(args[0])
	n, err1 := strconv.Atoi(args[1])
	w, err2 := strconv.Atoi(args[2])
	h, err3 := strconv.Atoi(args[3])
	if err1 != nil || err2 != nil || err3 != nil || n < 0 || w < 1 || h < 1 {
		ts.Fatalf("genimages: N, W and H must be whole numbers")
	}
	ts.Check(os.MkdirAll(dir, 0o755))
	for k := 1; k <= n; k++ {
		img := image.NewRGBA(image.Rect(0, 0, w, h))
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				img.Set(x, y, color.RGBA{uint8(x * 255 / w), uint8(y * 255 / h), uint8(k * 40), 255})
			}
		}
		name := fmt.Sprintf("img-%d.jpg", k)
		if k%2 == 0 {
			name = fmt.Sprintf("img-%d.png", k)
		}
		f, err := os.Create(filepath.Join(dir, name))
		ts.Check(err)
		if k%2 == 0 {
			err = png.Encode(f, img)
		} else {
			err = jpeg.Encode(f, img, &jpeg.Options{Quality: 90})
		}
		ts.Check(err)
		ts.Check(f.Close())
	}
}

// imgsize FILE W H checks that FILE is an image of W x H pixels.
func cmdImgSize(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 3 {
		ts.Fatalf("usage: imgsize FILE W H")
	}
	f, err := os.Open(ts.MkAbs(args[0]))
	ts.Check(err)
	defer f.Close()
	cfg, format, err := image.DecodeConfig(f)
	if err != nil {
		ts.Fatalf("%s: %v", args[0], err)
	}
	got := fmt.Sprintf("%d %d", cfg.Width, cfg.Height)
	if (got == args[1]+" "+args[2]) == neg {
		ts.Fatalf("%s is a %s of %s pixels, want %s%s x %s", args[0], format, got, map[bool]string{true: "not "}[neg], args[1], args[2])
	}
}

// checkreport FILE [CHECK...] reads a run report, checks that every stage
// accounts for each item it received (in = succeeded + failed + skipped +
// cancelled + filtered), then each CHECK: exit_code=N, status=S, or
// STAGE.FIELD=N / STAGE.FIELD>=N / STAGE.FIELD<=N on the stage's counters
// (in, out, succeeded, failed, skipped, cancelled, filtered, timed_out,
// retries, workers), failures=N (entries in the failure list), or
// failure=STAGE:ITEM (ITEM, as JSON or as a string, or a path ending in
// /ITEM, failed in STAGE). It prints each stage's counts and
// duration, which go test -v shows.
func cmdCheckReport(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 1 {
		ts.Fatalf("usage: checkreport FILE [CHECK...]")
	}
	var r report.Report
	if err := json.Unmarshal([]byte(ts.ReadFile(args[0])), &r); err != nil {
		ts.Fatalf("%s: %v", args[0], err)
	}
	stages := map[string]*report.Stage{}
	for _, s := range r.Stages {
		stages[s.Name] = s
		fmt.Fprintf(ts.Stdout(), "%s: workers %d, in %d, succeeded %d, failed %d, skipped %d, cancelled %d, filtered %d, timed out %d, duration %.3fs\n",
			s.Name, s.Workers, s.In, s.Succeeded, s.Failed, s.Skipped, s.Cancelled, s.Filtered, s.TimedOut, time.Duration(s.Duration).Seconds())
		if !s.Balanced() {
			ts.Fatalf("stage %s does not account for its items: in %d != succeeded %d + failed %d + skipped %d + cancelled %d + filtered %d",
				s.Name, s.In, s.Succeeded, s.Failed, s.Skipped, s.Cancelled, s.Filtered)
		}
	}
	fmt.Fprintf(ts.Stdout(), "run: %s, exit code %d, duration %.3fs\n", r.Status, r.ExitCode, time.Duration(r.Duration).Seconds())
	for _, c := range args[1:] {
		op := ""
		for _, o := range []string{">=", "<=", "="} {
			if strings.Contains(c, o) {
				op = o
				break
			}
		}
		if op == "" {
			ts.Fatalf("checkreport: %q is not KEY=VALUE, KEY>=N or KEY<=N", c)
		}
		key, want, _ := strings.Cut(c, op)
		var got int64
		switch {
		case key == "failure":
			stage, item, _ := strings.Cut(want, ":")
			found := false
			for _, f := range r.Failures {
				b, _ := json.Marshal(f.Item)
				str, _ := f.Item.(string)
				if f.Stage == stage && (string(b) == item || str == item || strings.HasSuffix(str, "/"+item)) {
					fmt.Fprintf(ts.Stdout(), "failure: stage %s, item %s, %s after %d attempts: %s\n", f.Stage, b, f.Outcome, f.Attempts, f.Error)
					found = true
				}
			}
			if !found {
				ts.Fatalf("report: no failure of item %s in stage %s", item, stage)
			}
			continue
		case key == "status":
			if string(r.Status) != want {
				ts.Fatalf("report status is %q, want %q (reason: %s)", r.Status, want, r.Reason)
			}
			continue
		case key == "exit_code":
			got = int64(r.ExitCode)
		case key == "failures":
			got = int64(len(r.Failures))
		default:
			name, field, ok := strings.Cut(key, ".")
			s := stages[name]
			if !ok || s == nil {
				ts.Fatalf("checkreport: no stage %q in the report", name)
			}
			v, ok := stageField(s, field)
			if !ok {
				ts.Fatalf("checkreport: unknown stage field %q", field)
			}
			got = v
		}
		n, err := strconv.ParseInt(want, 10, 64)
		if err != nil {
			ts.Fatalf("checkreport: %q: want a whole number", c)
		}
		if (op == "=" && got != n) || (op == ">=" && got < n) || (op == "<=" && got > n) {
			ts.Fatalf("report: %s is %d, want %s%d", key, got, op, n)
		}
	}
}

func stageField(s *report.Stage, field string) (int64, bool) {
	m := map[string]int64{
		"in": s.In, "out": s.Out, "succeeded": s.Succeeded, "failed": s.Failed, "skipped": s.Skipped,
		"cancelled": s.Cancelled, "filtered": s.Filtered, "timed_out": s.TimedOut, "retries": s.Retries,
		"workers": int64(s.Workers),
	}
	v, ok := m[field]
	return v, ok
}

// nlines N [FILE] checks that FILE (default: the last command's stdout)
// has exactly N lines.
func cmdNLines(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 1 || len(args) > 2 {
		ts.Fatalf("usage: nlines N [FILE]")
	}
	want, err := strconv.Atoi(args[0])
	ts.Check(err)
	name := "stdout"
	if len(args) == 2 {
		name = args[1]
	}
	text := ts.ReadFile(name)
	got := strings.Count(text, "\n")
	if text != "" && !strings.HasSuffix(text, "\n") {
		got++
	}
	if (got == want) == neg {
		ts.Fatalf("%s has %d lines, want %s%d", name, got, map[bool]string{true: "not "}[neg], want)
	}
}

// replace FILE OLD NEW replaces the one occurrence of OLD in FILE, to derive
// a variant of an example (a policy changed) without a second copy of it.
// In NEW, \n stands for a line break.
func cmdReplace(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: replace FILE OLD NEW")
	}
	text := ts.ReadFile(args[0])
	if n := strings.Count(text, args[1]); n != 1 {
		ts.Fatalf("replace: %q occurs %d times in %s, want once", args[1], n, args[0])
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), []byte(strings.Replace(text, args[1], strings.ReplaceAll(args[2], `\n`, "\n"), 1)), 0o644))
}

// copyDir copies a directory tree of regular files.
func copyDir(src, dst string) error {
	return filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if info.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(target)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
}

package cluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps/all"
)

// transferDir is a pipeline folder with logs and images to ship.
func transferDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for i := range 6 {
		var b strings.Builder
		for j := range 50 + 10*i {
			switch {
			case j%7 == 0:
				fmt.Fprintf(&b, "%d ERROR disk %d\n", j, i)
			case j%5 == 0:
				fmt.Fprintf(&b, "%d WARN slow\n", j)
			default:
				fmt.Fprintf(&b, "%d INFO fine\n", j)
			}
		}
		write(t, filepath.Join(dir, "logs", fmt.Sprintf("app%d.log", i)), []byte(b.String()))
		img := image.NewRGBA(image.Rect(0, 0, 64+8*i, 48))
		for y := range 48 {
			for x := range 64 + 8*i {
				img.Set(x, y, color.RGBA{uint8(4 * x), uint8(5 * y), uint8(i * 40), 255})
			}
		}
		var buf bytes.Buffer
		if err := png.Encode(&buf, img); err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(dir, "photos", fmt.Sprintf("app%d.png", i)), buf.Bytes())
	}
	return dir
}

func write(t *testing.T, p string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// transferPipeline is analyze-logs and resize, each in the mode given.
func transferPipeline(mode string) string {
	return `version: 1
stages:
  - {name: src, source: {glob: "logs/*.log"}}
  - name: logs
    step: analyze-logs
    ` + mode + `
  - name: pick
    step: compute
    with: {value: "${ replace(replace(item.path, '/logs/', '/photos/'), '.log', '.png') }"}
  - name: thumbs
    step: resize
    ` + mode + `
    with: {width: 16, out_dir: thumbs, name: "{stem}-small.{ext}"}
`
}

// runIn runs text as dir/p.yaml, its cluster stages on srv, and returns
// the report, stdout and the client's run ID.
func runIn(t *testing.T, srv *server.Server, s Settings, dir, text string) (*report.Report, string, string) {
	t.Helper()
	file := filepath.Join(dir, "p.yaml")
	write(t, file, []byte(text))
	reg := all.Registry()
	p, err := spec.Load(file, spec.Options{}, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rs := engine.Runners{}
	run := ""
	if srv != nil {
		c, err := NewClient(ctx, dial(t, Conn{Embedded: srv}), s)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		rs[spec.ModeCluster], run = c.Factory, c.RunID()
	}
	var out bytes.Buffer
	rep, err := engine.Run(ctx, p, engine.Options{Registry: reg, Runners: rs, Stdout: &out, Stderr: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	return rep, out.String(), run
}

// hideWhileShipped moves each input away while its item is on a worker:
// a worker that read the run's path instead of its copy would fail.
func hideWhileShipped(t *testing.T) {
	testHookShipped = func(phase string, _ jetstream.ObjectStore, files []transferFile) {
		for _, f := range files {
			from, to := f.Path, f.Path+".away"
			if phase == "answered" {
				from, to = to, from
			}
			if err := os.Rename(from, to); err != nil {
				t.Errorf("%s: %v", phase, err)
			}
		}
	}
	t.Cleanup(func() { testHookShipped = nil })
}

// analyze-logs and resize with transfer: true give what thread mode gives,
// on a worker that cannot see the run's files: inputs go through the
// Object Store, resize's outputs come back into out_dir; the run's bucket
// is gone after the run.
func TestClusterTransferSameAsThreadMode(t *testing.T) {
	dir := transferDir(t)
	rep, want, _ := runIn(t, nil, testSettings, dir, transferPipeline("mode: thread"))
	if rep.Status != report.StatusSucceeded {
		t.Fatalf("thread mode: %s %s", rep.Status, rep.Reason)
	}
	wantThumbs := readTree(t, filepath.Join(dir, "thumbs"))
	if len(wantThumbs) != 6 {
		t.Fatalf("thread mode wrote %d thumbnails", len(wantThumbs))
	}
	if err := os.RemoveAll(filepath.Join(dir, "thumbs")); err != nil {
		t.Fatal(err)
	}

	srv := startServer(t, "")
	startLabelled(t, srv, "far", 3)
	hideWhileShipped(t)
	rep, got, run := runIn(t, srv, testSettings, dir, transferPipeline("mode: cluster\n    transfer: true"))
	if rep.Status != report.StatusSucceeded {
		t.Fatalf("cluster mode: %s %s %+v", rep.Status, rep.Reason, rep.Failures)
	}
	if got != want {
		t.Errorf("results differ from thread mode's\ncluster:\n%s\nthread:\n%s", got, want)
	}
	gotThumbs := readTree(t, filepath.Join(dir, "thumbs"))
	for name, b := range wantThumbs {
		if !bytes.Equal(gotThumbs[name], b) {
			t.Errorf("thumbs/%s differs from thread mode's (%d bytes, want %d)", name, len(gotThumbs[name]), len(b))
		}
	}
	if len(gotThumbs) != len(wantThumbs) {
		t.Errorf("thumbs: %d files, want %d", len(gotThumbs), len(wantThumbs))
	}
	for _, s := range rep.Stages[1:] {
		if (s.Name == "logs" || s.Name == "thumbs") && s.ByWorker["far"] != 6 {
			t.Errorf("stage %s ran on %v", s.Name, s.ByWorker)
		}
	}
	js, _ := jetstream.New(dial(t, Conn{Embedded: srv}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.ObjectStore(ctx, filesBucket(run)); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Errorf("the run's bucket %s after the run: %v, want it gone", filesBucket(run), err)
	}
}

func readTree(t *testing.T, root string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			b, _ := os.ReadFile(p)
			rel, _ := filepath.Rel(root, p)
			out[rel] = b
		}
		return nil
	})
	return out
}

// A shipped copy that does not match its checksum fails its item, and a
// file over the size limit fails its item; the other items go on.
func TestClusterTransferChecksumAndSize(t *testing.T) {
	dir := transferDir(t)
	write(t, filepath.Join(dir, "logs", "big.log"), bytes.Repeat([]byte("ERROR big\n"), 200))
	srv := startServer(t, "")
	startLabelled(t, srv, "far", 2)
	testHookShipped = func(phase string, store jetstream.ObjectStore, files []transferFile) {
		for _, f := range files {
			if phase != "uploaded" || filepath.Base(f.Path) != "app3.log" {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			b, err := store.GetBytes(ctx, f.Object)
			if err == nil {
				b[0] ^= 1 // the same size, other bytes
				_, err = store.PutBytes(ctx, f.Object, b)
			}
			cancel()
			if err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(func() { testHookShipped = nil })
	s := testSettings
	s.TransferMaxFile = 1500
	rep, out, _ := runIn(t, srv, s, dir, `version: 1
stages:
  - {name: src, source: {glob: "logs/*.log"}}
  - {name: logs, step: analyze-logs, mode: cluster, transfer: true, on_error: skip}
`)
	logs := rep.Stages[1]
	if logs.Succeeded != 5 || logs.Skipped != 2 {
		t.Fatalf("logs %+v\n%s\n%+v", *logs, out, rep.Failures)
	}
	classes := map[string]string{}
	for _, f := range rep.Failures {
		classes[f.Class] = f.Error
	}
	if e := classes["checksum"]; !strings.Contains(e, "app3.log: the shipped copy does not match its checksum") {
		t.Errorf("checksum failure: %q (all: %v)", e, classes)
	}
	if e := classes["too_large"]; !strings.Contains(e, "big.log: 2000 bytes, more than the 1500") || !strings.Contains(e, "--transfer-max-file") {
		t.Errorf("size failure: %q (all: %v)", e, classes)
	}
}

// Names are confined on the worker: a manifest naming a path that is not
// clean and absolute is refused before anything is written.
func TestTransferMirrorConfined(t *testing.T) {
	for _, p := range []string{"/a/../../etc/passwd", "rel/a.log", "/a/./b", ""} {
		if cleanAbs(p) {
			t.Errorf("%q taken as a clean absolute path", p)
		}
	}
	if m := mirror("/home/u/a.log"); m != "home/u/a.log" || !filepath.IsLocal(m) {
		t.Errorf("mirror: %q", m)
	}
	if v := unmirror(map[string]any{"p": "/tmp/x/home/a", "q": []any{"/tmp/xy/b"}}, "/tmp/x"); fmt.Sprint(v) != "map[p:/home/a q:[/tmp/xy/b]]" {
		t.Errorf("unmirror: %v", v)
	}
}

// A worker bounds what it ships back: an output over its
// --transfer-max-file fails the item, naming the flag.
func TestClusterTransferWorkerBoundsOutputs(t *testing.T) {
	dir := transferDir(t)
	in, err := os.Stat(filepath.Join(dir, "photos", "app0.png"))
	if err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, "")
	ws := testSettings
	ws.TransferMaxFile = in.Size() + 1 // the input passes, a 10x larger image does not
	ctx, cancel := context.WithCancel(context.Background())
	w, err := NewWorker(ctx, dial(t, Conn{Embedded: srv}), WorkerConfig{Name: "small", Slots: 1, Registry: all.Registry(), Settings: ws})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); w.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	rep, _, _ := runIn(t, srv, testSettings, dir, `version: 1
stages:
  - {name: src, source: {items: [photos/app0.png]}}
  - {name: big, step: resize, mode: cluster, transfer: true, on_error: skip, with: {width: 640, out_dir: big}}
`)
	if len(rep.Failures) != 1 || rep.Failures[0].Class != "too_large" || !strings.Contains(rep.Failures[0].Error, "flow worker --transfer-max-file") ||
		!strings.Contains(rep.Failures[0].Error, filepath.Join(dir, "big", "app0.png")) {
		t.Fatalf("failures %+v", rep.Failures)
	}
	if _, err := os.Stat(filepath.Join(dir, "big", "app0.png")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the output was written: %v", err)
	}
}

// The run writes back only names inside the output directory, whatever a
// worker claims, and only bytes that match the announced checksum.
func TestTransferWriteBackConfined(t *testing.T) {
	srv := startServer(t, "")
	js, err := jetstream.New(dial(t, Conn{Embedded: srv}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	store, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.PutBytes(ctx, "o", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	const sum = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824" // sha256("hello")
	dir := t.TempDir()
	s := &shipper{dir: dir, store: store, limits: Settings{TransferMaxFile: 100, TransferMaxItem: 100}}
	out := filepath.Join(dir, "out")
	anyName := regexp.MustCompile("") // names are TestTransferWriteBackNames'
	for _, name := range []string{"../evil", "/etc/evil", "a/../../evil"} {
		if err := s.writeBack(ctx, out, anyName, []transferFile{{Path: name, Object: "o", Size: 5, SHA256: sum}}); err == nil || !strings.Contains(err.Error(), "refused") {
			t.Errorf("%s: %v", name, err)
		}
	}
	bad := strings.Repeat("0", 64)
	if err := s.writeBack(ctx, out, anyName, []transferFile{{Path: "x", Object: "o", Size: 5, SHA256: bad}}); err == nil || !strings.Contains(err.Error(), "does not match its checksum") {
		t.Errorf("checksum: %v", err)
	}
	if err := s.writeBack(ctx, out, anyName, []transferFile{{Path: "sub/ok", Object: "o", Size: 5, SHA256: sum}}); err != nil {
		t.Fatal(err)
	}
	if got := readTree(t, dir); len(got) != 1 || string(got[filepath.Join("out", "sub", "ok")]) != "hello" {
		t.Errorf("files written: %v", got)
	}
}

// The same with a worker process whose working directory and temporary
// directory are elsewhere, while each input is away from its path: what it
// reads and writes can only have come through the Object Store.
func TestClusterTransferWorkerProcessElsewhere(t *testing.T) {
	dir := transferDir(t)
	rep, want, _ := runIn(t, nil, testSettings, dir, transferPipeline("mode: thread"))
	if rep.Status != report.StatusSucceeded {
		t.Fatalf("thread mode: %s %s", rep.Status, rep.Reason)
	}
	wantThumbs := readTree(t, filepath.Join(dir, "thumbs"))
	os.RemoveAll(filepath.Join(dir, "thumbs"))

	// A port of its own: ":0" would be NATS's default, 4222, maybe taken.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	srv := startServer(t, addr)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), testWorkerEnv+"="+srv.ClientURL(), "FLOW_CLUSTER_TEST_NAME=elsewhere",
		"FLOW_CLUSTER_TEST_SLOTS=2", "TMPDIR="+t.TempDir())
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if line, _ := bufio.NewReader(out).ReadString('\n'); strings.TrimSpace(line) != "ready" {
		t.Fatalf("the worker did not start: %q", line)
	}
	hideWhileShipped(t)
	rep, got, _ := runIn(t, srv, testSettings, dir, transferPipeline("mode: cluster\n    transfer: true"))
	if rep.Status != report.StatusSucceeded {
		t.Fatalf("cluster mode: %s %s %+v", rep.Status, rep.Reason, rep.Failures)
	}
	if got != want {
		t.Errorf("results differ from thread mode's\ncluster:\n%s\nthread:\n%s", got, want)
	}
	gotThumbs := readTree(t, filepath.Join(dir, "thumbs"))
	if len(gotThumbs) != len(wantThumbs) {
		t.Errorf("thumbs: %d files, want %d", len(gotThumbs), len(wantThumbs))
	}
	for name, b := range wantThumbs {
		if !bytes.Equal(gotThumbs[name], b) {
			t.Errorf("thumbs/%s differs from thread mode's", name)
		}
	}
	if bw := rep.Stages[3].ByWorker; bw["elsewhere"] != 6 {
		t.Errorf("resize ran on %v", bw)
	}
}

package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/steps/all"
)

// hostileStage loads a one-stage transfer: true pipeline (after a source)
// from dir and returns the run's side of it, on a client of srv.
func hostileStage(t *testing.T, srv *server.Server, s Settings, dir, stage string) (*shipper, *Client, *spec.Pipeline) {
	t.Helper()
	file := filepath.Join(dir, "p.yaml")
	write(t, file, []byte("version: 1\nstages:\n  - {name: src, source: {items: [a]}}\n  - "+stage+"\n"))
	reg := all.Registry()
	p, err := spec.Load(file, spec.Options{}, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := NewClient(ctx, dial(t, Conn{Embedded: srv}), s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	sh, err := newShipper(ctx, c, engine.StageRun{Pipeline: p, Stage: p.Stages[1], Workers: 2, Registry: reg,
		Env: &steps.Env{Stage: p.Stages[1].Name, Dir: dir}, Stderr: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	return sh, c, p
}

// forge is a hostile worker's answer: it uploads data under the
// attempt's prefix and claims it is the output named name.
func forge(t *testing.T, store jetstream.ObjectStore, names []string, data []byte) func(context.Context, steps.Input, *engine.Attempt) (any, error) {
	return func(ctx context.Context, in steps.Input, _ *engine.Attempt) (any, error) {
		man, _ := in.Item.(map[string]any)["transfer"].(map[string]any)
		prefix, _ := man["prefix"].(string)
		if prefix == "" {
			t.Fatal("the manifest names no prefix for the attempt's outputs")
		}
		sum := sha256.Sum256(data)
		var outs []any
		for i, name := range names {
			obj := prefix + string(rune('a'+i))
			if _, err := store.PutBytes(ctx, obj, data); err != nil {
				t.Fatal(err)
			}
			outs = append(outs, transferFile{Path: name, Object: obj, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}.value())
		}
		return map[string]any{"value": "ok", "outputs": outs}, nil
	}
}

func objects(t *testing.T, store jetstream.ObjectStore) []string {
	t.Helper()
	infos, err := store.List(context.Background())
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, oi := range infos {
		names = append(names, oi.Name)
	}
	return names
}

// Finding 5: a worker can only give back the file resize would have
// written for the item, under the name the stage's template gives it on
// the run's side: with out_dir '.', not .envrc, not a git hook, not the
// pipeline file, not a subfolder the template does not make, not two
// files.
func TestTransferHostileWorkerOutputNames(t *testing.T) {
	dir := transferDir(t)
	srv := startServer(t, "")
	sh, _, _ := hostileStage(t, srv, testSettings, dir,
		`{name: thumbs, step: resize, mode: cluster, transfer: true, with: {width: 16, out_dir: ".", name: "{stem}-{width}.{ext}"}}`)
	pipeline, err := os.ReadFile(filepath.Join(dir, "p.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	in := steps.Input{Item: filepath.Join(dir, "photos", "app0.png")}
	evil := []byte("echo owned\n")
	for _, names := range [][]string{
		{".envrc"}, {".git/hooks/pre-commit"}, {"p.yaml"}, {"photos/app0.png"},
		{"sub/app0-16.png"}, {"app0-16.png.sh"}, {"app1-16.png"}, {"app0-x.png"}, {"app0-16.gif"},
		{"app0-16.png", "app0-16.jpg"},
	} {
		_, err := sh.run(context.Background(), in, nil, forge(t, sh.store, names, evil))
		if err == nil || !strings.Contains(err.Error(), "refused") {
			t.Errorf("%v written back: %v", names, err)
		}
	}
	for _, p := range []string{".envrc", ".git", "sub", "app0-16.png.sh", "app1-16.png", "app0-16.png", "app0-16.jpg"} {
		if _, err := os.Lstat(filepath.Join(dir, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v, want it absent", p, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "p.yaml")); !bytes.Equal(b, pipeline) {
		t.Error("the pipeline file was overwritten")
	}
	// What the template gives is written, also with the source's own
	// extension, and nothing is left in the bucket.
	for _, name := range []string{"app0-16.png", "app0-123.jpg"} {
		if _, err := sh.run(context.Background(), in, nil, forge(t, sh.store, []string{name}, []byte("img"))); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if b, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(b) != "img" {
			t.Errorf("%s: %q %v", name, b, err)
		}
	}
	if left := objects(t, sh.store); len(left) != 0 {
		t.Errorf("objects left in the bucket: %v", left)
	}
}

// A directory where the output would go is not replaced by the worker's
// file.
func TestTransferHostileWorkerOverNonRegular(t *testing.T) {
	dir := transferDir(t)
	srv := startServer(t, "")
	sh, _, _ := hostileStage(t, srv, testSettings, dir,
		`{name: thumbs, step: resize, mode: cluster, transfer: true, with: {width: 16, out_dir: out}}`)
	if err := os.MkdirAll(filepath.Join(dir, "out", "app0.png", "keep"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := sh.run(context.Background(), steps.Input{Item: "photos/app0.png"}, nil, forge(t, sh.store, []string{"app0.png"}, []byte("x")))
	if err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("over a directory: %v", err)
	}
}

// hostileWorker is the worker's side of a transfer: true stage of kind
// analyze-logs or resize, on the bucket store, as transferring builds it.
func hostileWorker(t *testing.T, store jetstream.ObjectStore, run, stage string) *transferStep {
	t.Helper()
	reg := all.Registry()
	p, err := spec.Parse("p.yaml", []byte("version: 1\nstages:\n  - {name: src, source: {items: [a]}}\n  - "+stage+"\n"), spec.Options{}, reg)
	if err != nil {
		t.Fatal(err)
	}
	st := p.Stages[1]
	k, _ := reg.Lookup(st.Kind)
	ts := &transferStep{w: &Worker{cfg: WorkerConfig{Settings: Settings{TransferMaxFile: 1 << 20, TransferMaxItem: 1 << 20}}},
		run: run, kind: k, stage: st, vars: map[string]any{}, outKey: outputRules[st.Kind].dir,
		env: steps.Env{Stage: st.Name, Vars: map[string]any{}, Stdin: strings.NewReader(""), Stdout: os.Stderr, Stderr: os.Stderr}}
	ts.store = store
	return ts
}

func testBucket(t *testing.T, srv *server.Server) jetstream.ObjectStore {
	t.Helper()
	js, err := jetstream.New(dial(t, Conn{Embedded: srv}))
	if err != nil {
		t.Fatal(err)
	}
	store, err := js.CreateObjectStore(context.Background(), jetstream.ObjectStoreConfig{Bucket: "t"})
	if err != nil {
		t.Fatal(err)
	}
	return store
}

// Finding 6: a worker takes from the manifest only the paths the run's
// side sets: each file option pointing at a file it downloaded, the
// output option at the output directory. A forged set cannot make the
// step read the worker's own files (by '..', by leaving an option out so
// that the pipeline's value, here the item, is used) nor change other
// options.
func TestTransferHostileManifestSet(t *testing.T) {
	srv := startServer(t, "")
	store := testBucket(t, srv)
	secret := filepath.Join(t.TempDir(), "secret.log")
	write(t, secret, []byte("1 ERROR the worker's secret\n"))
	shipped := []byte("1 INFO shipped\n")
	sum := sha256.Sum256(shipped)
	if _, err := store.PutBytes(context.Background(), "in.r1.1", shipped); err != nil {
		t.Fatal(err)
	}
	file := transferFile{Path: "/run/logs/a.log", Object: "in.r1.1", Size: int64(len(shipped)), SHA256: hex.EncodeToString(sum[:])}
	ts := hostileWorker(t, store, "r1", `{name: logs, step: analyze-logs, mode: cluster, transfer: true}`)
	ups := strings.Repeat("/..", 30)
	for name, c := range map[string]struct {
		item any
		set  map[string]any
		out  string
	}{
		"dot-dot":         {"a", map[string]any{"path": ups + secret}, ""},
		"left out":        {secret, map[string]any{}, ""},
		"not shipped":     {"a", map[string]any{"path": secret}, ""},
		"other option":    {"a", map[string]any{"path": file.Path, "samples": "3"}, ""},
		"output for none": {"a", map[string]any{"path": file.Path}, "/run/out"},
	} {
		man := map[string]any{"dir": "/run", "prefix": "out.r1.7.", "files": []any{file.value()}, "set": c.set, "out": c.out}
		v, err := ts.Do(context.Background(), steps.Input{Item: map[string]any{"item": c.item, "transfer": man}})
		if err == nil || !strings.Contains(err.Error(), "refused") {
			t.Errorf("%s: %v, %v", name, v, err)
		}
	}
	// The genuine manifest works.
	man := map[string]any{"dir": "/run", "prefix": "out.r1.7.", "files": []any{file.value()}, "set": map[string]any{"path": file.Path}, "out": ""}
	if _, err := ts.Do(context.Background(), steps.Input{Item: map[string]any{"item": "a", "transfer": man}}); err != nil {
		t.Errorf("the run's own manifest: %v", err)
	}
	// resize: out_dir must be set, and to the output directory.
	rs := hostileWorker(t, store, "r1", `{name: thumbs, step: resize, mode: cluster, transfer: true, with: {width: 8, allow_outside: true}}`)
	for name, set := range map[string]map[string]any{
		"no out_dir":    {"src": file.Path},
		"other out_dir": {"src": file.Path, "out_dir": "/run/elsewhere"},
	} {
		man := map[string]any{"dir": "/run", "prefix": "out.r1.7.", "files": []any{file.value()}, "set": set, "out": "/run/out"}
		if _, err := rs.Do(context.Background(), steps.Input{Item: map[string]any{"item": "a", "transfer": man}}); err == nil || !strings.Contains(err.Error(), "refused") {
			t.Errorf("resize, %s: %v", name, err)
		}
	}
	// And the prefix must be the run's.
	man["prefix"] = "in.r1."
	if _, err := ts.Do(context.Background(), steps.Input{Item: map[string]any{"item": "a", "transfer": man}}); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("another prefix: %v", err)
	}
}

// Finding 7, worker's side: a worker that fails partway through shipping
// its outputs back deletes what it shipped.
func TestTransferWorkerDeletesPartialOutputs(t *testing.T) {
	srv := startServer(t, "")
	store := testBucket(t, srv)
	ts := hostileWorker(t, store, "r1", `{name: thumbs, step: resize, mode: cluster, transfer: true, with: {width: 8}}`)
	ts.w.cfg.Settings.TransferMaxFile = 10
	tmp := t.TempDir()
	write(t, filepath.Join(tmp, "out", "a.png"), []byte("small"))
	write(t, filepath.Join(tmp, "out", "b.png"), []byte("larger than ten bytes"))
	root, err := os.OpenRoot(tmp)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	_, err = ts.upload(context.Background(), store, root, "out", map[string]bool{}, "out.r1.3.")
	var se *steps.Error
	if !errors.As(err, &se) || se.Class != "too_large" {
		t.Fatalf("upload: %v", err)
	}
	if left := objects(t, store); len(left) != 0 {
		t.Errorf("objects left: %v", left)
	}
}

// Finding 7, run's side: an attempt that fails (timed out, answer lost)
// has what its worker uploaded deleted, also when the upload comes after
// the failure (swept with the next failed attempt); the bucket is bounded.
func TestTransferRunSweepsAbandonedAttempts(t *testing.T) {
	dir := transferDir(t)
	srv := startServer(t, "")
	s := testSettings
	s.TransferMaxItem = 1 << 20
	sh, c, _ := hostileStage(t, srv, s, dir, `{name: logs, step: analyze-logs, mode: cluster, transfer: true}`)
	var late func()
	fail := func(ctx context.Context, in steps.Input, _ *engine.Attempt) (any, error) {
		man, _ := in.Item.(map[string]any)["transfer"].(map[string]any)
		prefix, _ := man["prefix"].(string)
		if prefix == "" {
			t.Fatal("no prefix in the manifest")
		}
		if _, err := sh.store.PutBytes(ctx, prefix+"0", []byte("output")); err != nil {
			t.Fatal(err)
		}
		late = func() {
			if _, err := sh.store.PutBytes(context.Background(), prefix+"1", []byte("late")); err != nil {
				t.Fatal(err)
			}
		}
		return nil, &steps.Error{Class: "timeout", Err: context.DeadlineExceeded}
	}
	in := steps.Input{Item: filepath.Join(dir, "logs", "app0.log")}
	if _, err := sh.run(context.Background(), in, nil, fail); err == nil {
		t.Fatal("no error")
	}
	if left := objects(t, sh.store); len(left) != 0 {
		t.Errorf("after a failed attempt: %v", left)
	}
	late()
	if left := objects(t, sh.store); len(left) != 1 {
		t.Fatalf("the late upload: %v", left)
	}
	if _, err := sh.run(context.Background(), in, nil, fail); err == nil {
		t.Fatal("no error")
	}
	if left := objects(t, sh.store); len(left) != 0 {
		t.Errorf("after the second failed attempt: %v, want its own and the first one's late upload gone", left)
	}
	// Two workers, 1 MiB each way: 4 MiB; a second stage adds its share.
	js, _ := jetstream.New(dial(t, Conn{Embedded: srv}))
	if got := bucketMax(t, js, c.run); got != 4<<20 {
		t.Errorf("MaxBytes %d, want %d", got, 4<<20)
	}
	if _, err := c.files(context.Background(), 1<<20, nil); err != nil {
		t.Fatal(err)
	}
	if got := bucketMax(t, js, c.run); got != 5<<20 {
		t.Errorf("MaxBytes %d after a second stage, want %d", got, 5<<20)
	}
}

func bucketMax(t *testing.T, js jetstream.JetStream, run string) int64 {
	t.Helper()
	st, err := js.Stream(context.Background(), "OBJ_"+filesBucket(run))
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().Config.MaxBytes
}

// Finding 15: an item's total counts the bytes shipped, not what Stat
// said: a file that reads longer than its size (one still being written;
// here a /proc file, size 0) is held to --transfer-max-item.
func TestTransferItemTotalCountsBytesRead(t *testing.T) {
	const p = "/proc/self/status"
	if runtime.GOOS != "linux" {
		t.Skip("needs /proc")
	}
	if fi, err := os.Stat(p); err != nil || fi.Size() != 0 {
		t.Skipf("%s: %v", p, err)
	}
	srv := startServer(t, "")
	sh := &shipper{c: &Client{run: "r1"}, store: testBucket(t, srv), limits: Settings{TransferMaxFile: 1 << 20, TransferMaxItem: 100}}
	var total int64
	_, err := sh.upload(context.Background(), p, sh.limits.TransferMaxFile, &total)
	var se *steps.Error
	if !errors.As(err, &se) || se.Class != "too_large" || !strings.Contains(err.Error(), "--transfer-max-item") {
		t.Errorf("upload: %v (total %d)", err, total)
	}
	if left := objects(t, sh.store); len(left) != 0 {
		t.Errorf("objects left: %v", left)
	}
}

// A server that cannot set aside what the stages could have in flight
// (the default --transfer-max-item, 4 GiB, times 64 workers times 2 is
// more than most disks) still gives the bucket a bound: as much as it can,
// halved; a second stage's share is added if it fits, else the bound stays.
func TestTransferBucketBoundedByWhatTheServerHas(t *testing.T) {
	srv := startServer(t, "")
	ctx := context.Background()
	c, err := NewClient(ctx, dial(t, Conn{Embedded: srv}), testSettings)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var warn bytes.Buffer
	huge := int64(1) << 60
	if _, err := c.files(ctx, huge, &warn); err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(dial(t, Conn{Embedded: srv}))
	first := bucketMax(t, js, c.run)
	if first < minBucket || first >= huge {
		t.Fatalf("MaxBytes %d, want a bound below %d", first, huge)
	}
	if _, err := c.files(ctx, huge, &warn); err != nil {
		t.Fatal(err)
	}
	if got := bucketMax(t, js, c.run); got < first {
		t.Errorf("MaxBytes %d after a second stage, was %d", got, first)
	}
	if warn.Len() != 0 {
		t.Errorf("warned: %s", warn.String())
	}
	t.Logf("MaxBytes %d", first)
}

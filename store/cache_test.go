package store

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flowrun/flow/store/cachekey"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func openClock(t *testing.T) (*DB, *clock) {
	t.Helper()
	c := &clock{t: time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)}
	db, err := Open(filepath.Join(t.TempDir(), FileName), Options{Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, c
}

func mustKey(t *testing.T, in cachekey.Input, d cachekey.FileDigester) cachekey.Key {
	t.Helper()
	k, err := cachekey.Build(in, d)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestCachePutGetTTL(t *testing.T) {
	db, c := openClock(t)
	ctx := context.Background()
	s := Scope{Pipeline: "/p.yaml", Stage: "fetch"}
	k := mustKey(t, cachekey.Input{Kind: "fetch", Options: map[string]any{"url": "http://x/1"}, Item: 1}, nil)
	if _, ok, err := db.Get(ctx, k.Digest); ok || err != nil {
		t.Fatalf("Get before Put: %v %v", ok, err)
	}
	if err := db.Put(ctx, s, k, json.RawMessage(`{"status":200}`), time.Hour); err != nil {
		t.Fatal(err)
	}
	res, ok, err := db.Get(ctx, k.Digest)
	if !ok || err != nil || string(res) != `{"status":200}` {
		t.Fatalf("Get: %s %v %v", res, ok, err)
	}
	if l, _ := db.List(ctx, CacheFilter{Key: k.Digest}); len(l) != 1 || l[0].Stage != "fetch" || l[0].Parts.Kind != "fetch" || l[0].Size != 14 {
		t.Fatalf("List: %+v", l)
	}
	c.t = c.t.Add(time.Hour)
	if _, ok, _ := db.Get(ctx, k.Digest); ok {
		t.Error("an entry past its TTL was a hit")
	}
	x, err := db.Explain(ctx, s, k)
	if err != nil || x.Hit || !x.Expired || !strings.Contains(x.String(), "expired") {
		t.Errorf("Explain of an expired entry: %+v %v", x, err)
	}
	if n, err := db.GC(ctx, 0); n != 1 || err != nil {
		t.Errorf("GC removed %d (%v), want the expired entry", n, err)
	}
}

func TestCacheListRemoveGC(t *testing.T) {
	db, c := openClock(t)
	ctx := context.Background()
	for i, stage := range []string{"a", "a", "b"} {
		k := mustKey(t, cachekey.Input{Kind: "compute", Item: i}, nil)
		if err := db.Put(ctx, Scope{Pipeline: "/p.yaml", Stage: stage}, k, json.RawMessage(`0`), 0); err != nil {
			t.Fatal(err)
		}
		c.t = c.t.Add(24 * time.Hour)
	}
	if l, _ := db.List(ctx, CacheFilter{Stage: "a"}); len(l) != 2 || l[0].Parts.Item == nil {
		t.Fatalf("List stage a: %+v", l)
	}
	// Using the oldest entry keeps it from GC.
	all, _ := db.List(ctx, CacheFilter{})
	oldest := all[len(all)-1]
	if _, ok, _ := db.Get(ctx, oldest.Key); !ok {
		t.Fatal("miss")
	}
	db.Close() // waits for the hit to be recorded
	db, err := Open(db.Path(), Options{Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if e, _, _ := db.entry(ctx, oldest.Key); e.Hits != 1 {
		t.Errorf("hits = %d, want 1", e.Hits)
	}
	n, err := db.GC(ctx, 36*time.Hour)
	if n != 1 || err != nil {
		t.Errorf("GC 36h removed %d (%v), want 1 (the second entry, stored 48h ago and never used)", n, err)
	}
	if n, _ := db.Remove(ctx, CacheFilter{Key: oldest.Key[:10]}); n != 1 {
		t.Errorf("Remove by key prefix removed %d", n)
	}
	if l, _ := db.List(ctx, CacheFilter{}); len(l) != 1 || l[0].Stage != "b" {
		t.Errorf("left: %+v", l)
	}
}

// Changing one option explains itself key by key; the closest entry is that
// of the same item.
func TestExplainOption(t *testing.T) {
	db, _ := openClock(t)
	ctx := context.Background()
	s := Scope{Pipeline: "/p.yaml", Stage: "fetch"}
	opts := func(method, accept string) map[string]any {
		return map[string]any{"url": "http://x/${ item }", "method": method, "headers": map[string]any{"Accept": accept}, "workers": 8}
	}
	for _, item := range []int{1, 2} {
		k := mustKey(t, cachekey.Input{Kind: "fetch", Options: opts("GET", "text/html"), Item: item}, nil)
		if err := db.Put(ctx, s, k, json.RawMessage(`{}`), 0); err != nil {
			t.Fatal(err)
		}
	}
	k := mustKey(t, cachekey.Input{Kind: "fetch", Options: opts("POST", "application/json"), Item: 2}, nil)
	x, err := db.Explain(ctx, s, k)
	if err != nil || x.Hit || x.Closest == nil {
		t.Fatalf("Explain: %+v %v", x, err)
	}
	got := x.String()
	want := []string{
		`option headers.Accept changed: "text/html" -> "application/json"`,
		`option method changed: "GET" -> "POST"`,
	}
	if len(x.Changes) != 2 {
		t.Errorf("changes %+v, want exactly the two options:\n%s", x.Changes, got)
	}
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("explanation lacks %q:\n%s", w, got)
		}
	}
	// workers is a policy key: changing it alone still hits.
	same := mustKey(t, cachekey.Input{Kind: "fetch", Options: map[string]any{"url": "http://x/${ item }", "method": "GET", "headers": map[string]any{"Accept": "text/html"}, "workers": 1}, Item: 2}, nil)
	if x, _ := db.Explain(ctx, s, same); !x.Hit {
		t.Errorf("changing workers missed: %s", x)
	}
}

// Touching a file re-reads it once and changes no key; changing its content
// changes the key, and explain names the file.
func TestStatCacheAndFileExplain(t *testing.T) {
	db, c := openClock(t)
	ctx := context.Background()
	dir := t.TempDir()
	f := filepath.Join(dir, "in.txt")
	os.WriteFile(f, []byte("hello\n"), 0o644)
	old := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	os.Chtimes(f, old, old)
	// The racy window is measured against the file's real ctime (now).
	c.t = time.Now().Add(time.Minute)
	s := Scope{Pipeline: "/p.yaml", Stage: "lines"}
	in := cachekey.Input{Kind: "analyze_logs", Item: map[string]any{"path": "in.txt"}, Files: []string{f}}
	k1 := mustKey(t, in, db)
	if err := db.Put(ctx, s, k1, json.RawMessage(`3`), 0); err != nil {
		t.Fatal(err)
	}
	checked := func() int64 {
		var ms int64
		if err := db.r.QueryRow(`SELECT checked_ms FROM file_digests`).Scan(&ms); err != nil {
			t.Fatalf("the digest was not remembered: %v", err)
		}
		return ms
	}
	first := checked()
	// Unchanged: answered from the stat cache, not read again (a read
	// records a new checked time).
	c.t = c.t.Add(time.Minute)
	if k := mustKey(t, in, db); k.Digest != k1.Digest || checked() != first {
		t.Errorf("an unchanged file was read again (checked %d, first %d)", checked(), first)
	}

	// Touch: mtime moves, content does not: read once, same key.
	later := old.Add(time.Hour)
	os.Chtimes(f, later, later)
	c.t = c.t.Add(time.Minute)
	if k := mustKey(t, in, db); k.Digest != k1.Digest {
		t.Error("touching the file changed the key")
	}
	if checked() == first {
		t.Error("a touched file was not read again")
	}

	os.WriteFile(f, []byte("hello, world\n"), 0o644)
	os.Chtimes(f, later.Add(time.Hour), later.Add(time.Hour))
	c.t = c.t.Add(time.Minute)
	k2 := mustKey(t, in, db)
	if k2.Digest == k1.Digest {
		t.Fatal("changing the file's content kept the key")
	}
	x, err := db.Explain(ctx, s, k2)
	if err != nil || x.Hit || len(x.Changes) != 1 || x.Changes[0].Part != "file" || x.Changes[0].Name != f {
		t.Fatalf("Explain: %+v %v", x, err)
	}
	if !strings.Contains(x.String(), "file "+f+" changed: sha256:") {
		t.Errorf("explanation:\n%s", x)
	}
}

func TestExplainNothingComparable(t *testing.T) {
	db, _ := openClock(t)
	k := mustKey(t, cachekey.Input{Kind: "exec", Item: 1}, nil)
	x, err := db.Explain(context.Background(), Scope{Pipeline: "/p", Stage: "s"}, k)
	if err != nil || x.Hit || x.Closest != nil || !strings.Contains(x.String(), "nothing comparable") {
		t.Errorf("Explain on an empty cache: %+v %v", x, err)
	}
}

// An entry records the run and item index that last stored or reused it:
// ItemOfRun finds item N of a run by them, and a later run's hit moves it.
func TestItemOfRun(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), FileName), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	k, err := cachekey.Build(cachekey.Input{Kind: "compute", Item: map[string]any{"n": 7}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := Scope{Pipeline: "/p.yaml", Stage: "square", Run: "run1", Index: 4}
	if err := db.Put(ctx, s, k, json.RawMessage(`49`), 0); err != nil {
		t.Fatal(err)
	}
	e, ok, err := db.ItemOfRun(ctx, "run1", "square", 4)
	if err != nil || !ok || string(e.Parts.Item) != `{"n":7}` {
		t.Fatalf("run1 item 4: %+v %v %v", e, ok, err)
	}
	for _, miss := range []struct {
		run, stage string
		index      int64
	}{{"run1", "square", 3}, {"run1", "other", 4}, {"run2", "square", 4}} {
		if _, ok, err := db.ItemOfRun(ctx, miss.run, miss.stage, miss.index); ok || err != nil {
			t.Errorf("%v: found (%v)", miss, err)
		}
	}
	// A hit of a later run, at another index, is queued with the run's
	// writes; Put waits for its commit, and the writer keeps order.
	if _, ok, err := db.GetFor(ctx, k.Digest, Scope{Pipeline: "/p.yaml", Stage: "square", Run: "run2", Index: 9}); !ok || err != nil {
		t.Fatalf("GetFor: %v %v", ok, err)
	}
	other, _ := cachekey.Build(cachekey.Input{Kind: "compute", Item: 1}, nil)
	if err := db.Put(ctx, Scope{Pipeline: "/p.yaml", Stage: "square"}, other, json.RawMessage(`1`), 0); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := db.ItemOfRun(ctx, "run2", "square", 9); !ok {
		t.Error("run2's hit at index 9 is not recorded")
	}
	// A Get without a run (explain, tools) leaves the record alone.
	if _, ok, _ := db.Get(ctx, k.Digest); !ok {
		t.Fatal("Get missed")
	}
	if _, ok, _ := db.ItemOfRun(ctx, "run2", "square", 9); !ok {
		t.Error("a Get without a run moved the record")
	}
}

// A look-up runs without the caller's context (it never waits), but a
// cancelled caller still gets its context's error, not a hit, and the
// next look-up finds the entry.
func TestCacheGetCancelled(t *testing.T) {
	db, _ := openClock(t)
	k := mustKey(t, cachekey.Input{Kind: "compute", Item: 1}, nil)
	if err := db.Put(context.Background(), Scope{}, k, json.RawMessage(`2`), 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for range 20 { // snap's select picks either ready case
		if res, ok, err := db.GetFor(ctx, k.Digest, Scope{Run: "r"}); ok || !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled look-up: %s %v %v", res, ok, err)
		}
	}
	if res, ok, err := db.Get(context.Background(), k.Digest); !ok || err != nil || string(res) != "2" {
		t.Fatalf("look-up after cancelled ones: %s %v %v", res, ok, err)
	}
}

package cache

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/steps/all"
	"github.com/flowrun/flow/store"
	"github.com/flowrun/flow/store/cachekey"
)

func stage(t *testing.T, dir, body string) (*spec.Pipeline, *spec.Stage) {
	t.Helper()
	src := "version: 1\nvars:\n  f: 2\n  other: 1\nstages:\n  - name: src\n    source: {items: [1]}\n  - name: s\n" + body
	p, err := spec.Parse(filepath.Join(dir, "p.yaml"), []byte(src), spec.Options{Resolve: true}, all.Registry())
	if err != nil {
		t.Fatal(err)
	}
	return p, p.Stages[1]
}

func key(t *testing.T, dir, body string, item any, vars map[string]any) cachekey.Key {
	t.Helper()
	p, s := stage(t, dir, body)
	if vars == nil {
		vars = p.Vars.Map()
	}
	k, err := NewKeyer(s, all.Registry(), &steps.Env{Dir: dir, Vars: vars, Env: map[string]string{"HOME": "/h", "LANG": "C"}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	key, err := k.Key(context.Background(), steps.Input{Item: item})
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// A default written out is the default left out; policy keys, other
// variables and other environment variables change nothing; what the
// expressions read does.
func TestKeyCoversWhatDecidesTheResult(t *testing.T) {
	dir := t.TempDir()
	base := key(t, dir, "    step: fetch\n    with: {url: 'http://x/${ item }'}\n", 1, nil)
	same := []string{
		"    step: fetch\n    with: {url: 'http://x/${ item }', method: GET}\n",
		"    step: fetch\n    workers: 9\n    retry: {attempts: 3}\n    with: {url: 'http://x/${ item }'}\n",
	}
	for _, b := range same {
		if k := key(t, dir, b, 1, nil); k.Digest != base.Digest {
			t.Errorf("%q: key changed: %v", b, cachekey.Diff(base.Parts, k.Parts))
		}
	}
	differ := []string{
		"    step: fetch\n    with: {url: 'http://x/${ item }', method: HEAD}\n",
		"    step: fetch\n    with: {url: 'http://y/${ item }'}\n",
		"    step: fetch\n    cache: {salt: v2}\n    with: {url: 'http://x/${ item }'}\n",
		"    step: fetch\n    cache: {env: [LANG]}\n    with: {url: 'http://x/${ item }'}\n",
	}
	for _, b := range differ {
		if k := key(t, dir, b, 1, nil); k.Digest == base.Digest {
			t.Errorf("%q: same key as the base", b)
		}
	}
	if k := key(t, dir, "    step: fetch\n    with: {url: 'http://x/${ item }'}\n", 2, nil); k.Digest == base.Digest {
		t.Error("another item, same key")
	}

	vars := "    step: compute\n    with: {value: '${ item * vars.f }'}\n"
	a := key(t, dir, vars, 1, map[string]any{"f": 2, "other": 1})
	if b := key(t, dir, vars, 1, map[string]any{"f": 2, "other": 5}); b.Digest != a.Digest {
		t.Error("a variable the expression does not read changed the key")
	}
	if b := key(t, dir, vars, 1, map[string]any{"f": 3, "other": 1}); b.Digest == a.Digest {
		t.Error("a variable the expression reads did not change the key")
	}
	env := "    step: compute\n    with: {value: '${ env.HOME }'}\n"
	if k := key(t, dir, env, 1, nil); k.Parts.Env["HOME"] == "" || len(k.Parts.Env) != 1 {
		t.Errorf("env read by the expression: parts %v, want HOME only", k.Parts.Env)
	}
	idx := "    step: compute\n    with: {value: '${ index }'}\n"
	p, s := stage(t, dir, idx)
	k, err := NewKeyer(s, all.Registry(), &steps.Env{Vars: p.Vars.Map()}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	k0, _ := k.Key(context.Background(), steps.Input{Index: 0, Item: 1})
	k1, _ := k.Key(context.Background(), steps.Input{Index: 1, Item: 1})
	if k0.Digest == k1.Digest {
		t.Error("an expression reading index: items at two indexes share a key")
	}
}

// A kind that reads a file has the file's content in its key.
func TestKeyHasTheFileContent(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.log")
	os.WriteFile(path, []byte("ERROR 1\n"), 0o644)
	body := "    step: analyze-logs\n    with: {path: '${ item.p }'}\n"
	a := key(t, dir, body, map[string]any{"p": "a.log"}, nil)
	if a.Parts.Files[path] == "" {
		t.Fatalf("no digest of %s in %v", path, a.Parts.Files)
	}
	os.WriteFile(path, []byte("ERROR 2\n"), 0o644)
	if b := key(t, dir, body, map[string]any{"p": "a.log"}, nil); b.Digest == a.Digest {
		t.Error("the file changed, the key did not")
	}
	// The default path is the item itself.
	if c := key(t, dir, "    step: analyze-logs\n", "a.log", nil); c.Parts.Files[path] == "" {
		t.Errorf("default path: files %v", c.Parts.Files)
	}
}

func TestPolicyDefaults(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		body        string
		store, read bool
	}{
		{"    step: fetch\n    with: {url: 'http://x'}\n", true, false},
		{"    step: fetch\n    with: {url: 'http://x', method: POST}\n", false, false},
		{"    step: fetch\n    cache: on\n    with: {url: 'http://x', method: POST}\n", true, true},
		{"    step: exec\n    with: {argv: [echo]}\n", false, false},
		{"    step: compute\n    with: {value: 1}\n", false, false},
		{"    step: compute\n    cache: resume\n    with: {value: 1}\n", true, false},
		{"    step: analyze-logs\n    cache: off\n", false, false},
		{"    step: analyze-logs\n    cache: {ttl: 1h}\n", true, true},
	}
	for _, c := range cases {
		p, s := stage(t, dir, c.body)
		k, err := NewKeyer(s, all.Registry(), &steps.Env{Vars: p.Vars.Map()}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		pol := PolicyOf(s, k, false)
		if pol.Store != c.store || pol.Read != c.read {
			t.Errorf("%q: store %v read %v, want %v %v (%s)", c.body, pol.Store, pol.Read, c.store, c.read, pol.Why)
		}
		if c.store && !PolicyOf(s, k, true).Read {
			t.Errorf("%q: not read with --resume", c.body)
		}
	}
}

type countRunner struct{ n int }

func (r *countRunner) Do(_ context.Context, in steps.Input, _ *engine.Attempt) (any, error) {
	r.n++
	return map[string]any{"x": in.Item, "big": int64(1) << 60}, nil
}
func (r *countRunner) Close() error { return nil }

// A stored success answers in place of the runner, marked cached, with
// the value the runner gave (an int64 stays exact).
func TestWrapAnswersFromTheCache(t *testing.T) {
	dir := t.TempDir()
	db, err := store.Open(filepath.Join(dir, "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p, s := stage(t, dir, "    step: compute\n    cache: on\n    with: {value: 1}\n")
	inner := &countRunner{}
	f := Wrap(func(engine.StageRun) (engine.Runner, error) { return inner, nil }, Options{DB: db, Pipeline: "/p.yaml"})
	r, err := f(engine.StageRun{Pipeline: p, Stage: s, Registry: all.Registry(), Env: &steps.Env{Vars: p.Vars.Map()}})
	if err != nil {
		t.Fatal(err)
	}
	var first, second engine.Attempt
	v1, _ := r.Do(context.Background(), steps.Input{Item: 7}, &first)
	// PutQueued does not wait: closing commits what is queued.
	db.Close()
	if db, err = store.Open(filepath.Join(dir, "state.db"), store.Options{}); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	r.(*runner).db = db
	v2, _ := r.Do(context.Background(), steps.Input{Item: 7}, &second)
	if inner.n != 1 || first.Cached || !second.Cached {
		t.Fatalf("runs %d, cached %v then %v; want 1 run, then a cached answer", inner.n, first.Cached, second.Cached)
	}
	if m := v2.(map[string]any); m["big"] != int64(1)<<60 || m["x"] != int64(7) {
		t.Errorf("cached %#v, ran %#v", v2, v1)
	}
}

type secretRunner struct{}

func (secretRunner) Do(context.Context, steps.Input, *engine.Attempt) (any, error) {
	return map[string]any{"auth": "Bearer s3cr3t"}, nil
}
func (secretRunner) Close() error { return nil }

// A result holding a secret is not stored: state.db never holds one in
// clear.
func TestWrapDoesNotStoreSecrets(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	db, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p, s := stage(t, dir, "    step: compute\n    cache: on\n    with: {value: 1}\n")
	f := Wrap(func(engine.StageRun) (engine.Runner, error) { return secretRunner{}, nil }, Options{DB: db, Pipeline: "/p.yaml", Secrets: []string{"s3cr3t"}})
	r, err := f(engine.StageRun{Pipeline: p, Stage: s, Registry: all.Registry(), Env: &steps.Env{Vars: p.Vars.Map()}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Do(context.Background(), steps.Input{Item: 1}, &engine.Attempt{}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	b, _ := os.ReadFile(path)
	w, _ := os.ReadFile(path + "-wal")
	if bytes.Contains(b, []byte("s3cr3t")) || bytes.Contains(w, []byte("s3cr3t")) {
		t.Fatal("the secret is in the state database")
	}
	if db, err = store.Open(path, store.Options{}); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if l, _ := db.List(context.Background(), store.CacheFilter{}); len(l) != 0 {
		t.Fatalf("%d entries stored, want none", len(l))
	}
}

type fixedRunner struct{ v any }

func (r fixedRunner) Do(context.Context, steps.Input, *engine.Attempt) (any, error) { return r.v, nil }
func (fixedRunner) Close() error                                                    { return nil }

// A result over MaxResult is not stored; one just under it is.
func TestWrapDoesNotStoreHugeResults(t *testing.T) {
	for _, c := range []struct {
		size int
		want int
	}{{MaxResult - 2, 1}, {MaxResult, 0}} {
		dir := t.TempDir()
		db, err := store.Open(filepath.Join(dir, "state.db"), store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		p, s := stage(t, dir, "    step: compute\n    cache: on\n    with: {value: 1}\n")
		f := Wrap(func(engine.StageRun) (engine.Runner, error) { return fixedRunner{strings.Repeat("x", c.size)}, nil }, Options{DB: db, Pipeline: "/p.yaml"})
		r, err := f(engine.StageRun{Pipeline: p, Stage: s, Registry: all.Registry(), Env: &steps.Env{Vars: p.Vars.Map()}})
		if err != nil {
			t.Fatal(err)
		}
		r.Do(context.Background(), steps.Input{Item: 1}, &engine.Attempt{})
		db.Close()
		db, _ = store.Open(filepath.Join(dir, "state.db"), store.Options{})
		l, _ := db.List(context.Background(), store.CacheFilter{})
		db.Close()
		if len(l) != c.want {
			t.Errorf("result of %d bytes: %d entries, want %d", c.size+2, len(l), c.want)
		}
	}
}

// fakeShared hands out claims and records what becomes of them.
type fakeShared struct{ filled, released int }

func (f *fakeShared) Claim(context.Context, string) (*Value, Held, error) {
	return nil, fakeHeld{f}, nil
}
func (f *fakeShared) Put(context.Context, string, Value, time.Duration) error {
	return errors.New("no put with a claim")
}
func (f *fakeShared) Lookup(context.Context, string) (*Value, bool, error) { return nil, false, nil }

type fakeHeld struct{ f *fakeShared }

func (h fakeHeld) Fill(context.Context, Value, time.Duration) error { h.f.filled++; return nil }
func (h fakeHeld) Release()                                         { h.f.released++ }

type panicRunner struct{}

func (panicRunner) Do(context.Context, steps.Input, *engine.Attempt) (any, error) { panic("boom") }
func (panicRunner) Close() error                                                  { return nil }

type failRunner struct{}

func (failRunner) Do(context.Context, steps.Input, *engine.Attempt) (any, error) {
	return nil, errors.New("no")
}
func (failRunner) Close() error { return nil }

// A claim on the shared cache is filled by a success and released however
// else the item ends, a panic included, so that no other run waits on it
// until it expires.
func TestWrapSharedClaimFilledOrReleased(t *testing.T) {
	dir := t.TempDir()
	db, err := store.Open(filepath.Join(dir, "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	p, s := stage(t, dir, "    step: compute\n    cache: on\n    with: {value: 1}\n")
	for _, c := range []struct {
		name             string
		inner            engine.Runner
		filled, released int
	}{{"success", &countRunner{}, 1, 0}, {"error", failRunner{}, 0, 1}, {"panic", panicRunner{}, 0, 1}} {
		sh := &fakeShared{}
		f := Wrap(func(engine.StageRun) (engine.Runner, error) { return c.inner, nil }, Options{DB: db, Pipeline: "/p.yaml", Shared: sh})
		r, err := f(engine.StageRun{Pipeline: p, Stage: s, Registry: all.Registry(), Env: &steps.Env{Vars: p.Vars.Map()}})
		if err != nil {
			t.Fatal(err)
		}
		func() {
			defer func() { _ = recover() }()
			_, _ = r.Do(context.Background(), steps.Input{Item: c.name}, &engine.Attempt{})
		}()
		if sh.filled != c.filled || sh.released != c.released {
			t.Errorf("%s: filled %d, released %d; want %d, %d", c.name, sh.filled, sh.released, c.filled, c.released)
		}
	}
}

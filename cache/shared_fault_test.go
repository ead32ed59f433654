package cache_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowrun/flow/cache"
	"github.com/flowrun/flow/cluster"
	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/steps/all"
	"github.com/flowrun/flow/store"
	"github.com/flowrun/flow/store/cachekey"
)

// countInner is a stage's own runner: it counts the items it computes.
type countInner struct{ n atomic.Int64 }

func (r *countInner) Do(_ context.Context, in steps.Input, _ *engine.Attempt) (any, error) {
	r.n.Add(1)
	return map[string]any{"item": in.Item}, nil
}
func (r *countInner) Close() error { return nil }

// syncBuf is a stderr several items write to.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// sharedStage is a cached compute stage over the shared cache kv, with its
// own state database.
type sharedStage struct {
	r      engine.Runner
	inner  *countInner
	stderr *syncBuf
	keyer  *cache.Keyer
}

func newSharedStage(t *testing.T, kv cache.Shared) *sharedStage {
	t.Helper()
	dir := t.TempDir()
	db, err := store.Open(filepath.Join(dir, "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	src := "version: 1\nstages:\n  - name: src\n    source: {items: [1]}\n  - name: s\n    step: compute\n    cache: on\n    with: {value: 1}\n"
	p, err := spec.Parse(filepath.Join(dir, "p.yaml"), []byte(src), spec.Options{Resolve: true}, all.Registry())
	if err != nil {
		t.Fatal(err)
	}
	s := &sharedStage{inner: &countInner{}, stderr: &syncBuf{}}
	env := &steps.Env{Vars: p.Vars.Map()}
	if s.keyer, err = cache.NewKeyer(p.Stages[1], all.Registry(), env, nil, db); err != nil {
		t.Fatal(err)
	}
	f := cache.Wrap(func(engine.StageRun) (engine.Runner, error) { return s.inner, nil }, cache.Options{DB: db, Pipeline: "/p.yaml", Shared: kv, Stderr: s.stderr})
	if s.r, err = f(engine.StageRun{Pipeline: p, Stage: p.Stages[1], Registry: all.Registry(), Env: env}); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *sharedStage) key(t *testing.T, item any) cachekey.Key {
	t.Helper()
	k, err := s.keyer.Key(context.Background(), steps.Input{Item: item})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// NATS gone (the server stopped; the connection reconnects for ever):
// items fall back to the local cache at once with one warning, instead
// of waiting on the server until their timeout, whether the server goes
// before the item asks or while it waits on another run's claim.
func TestSharedKVServerDownFallsBackToLocal(t *testing.T) {
	srv := natsServer(t)
	holder, _ := openKV(t, srv, time.Hour)
	kv, _ := openKV(t, srv, time.Hour)
	s := newSharedStage(t, kv)

	// Item 1 is claimed by another run: this one waits on it.
	ctx := context.Background()
	if _, h, err := holder.Claim(ctx, s.key(t, 1).Digest); err != nil || h == nil {
		t.Fatalf("holder's claim: %v %v", h, err)
	}
	type out struct {
		v   any
		err error
	}
	// No attempt timeout: nothing but the shared cache's own bounds
	// ends a wait on a server that is gone.
	do := func(item int) out {
		done := make(chan out, 1)
		guard := errors.New("still waiting on NATS 2 minutes after it went")
		go func() {
			v, err := s.r.Do(ctx, steps.Input{Item: item}, &engine.Attempt{})
			done <- out{v, err}
		}()
		select {
		case o := <-done:
			return o
		case <-time.After(2 * time.Minute): // a guard, not a measure
			return out{err: guard}
		}
	}
	var o1 out
	waited := make(chan struct{})
	go func() { o1 = do(1); close(waited) }()
	time.Sleep(300 * time.Millisecond)
	srv.Shutdown()
	<-waited
	if o1.err != nil {
		t.Fatalf("item waiting on a claim when NATS went: %v, want it computed here", o1.err)
	}

	// Later items do not ask a server that is gone.
	if o := do(2); o.err != nil || o.v.(map[string]any)["item"] != 2 {
		t.Fatalf("item after NATS went: %v %v", o.v, o.err)
	}
	if n := s.inner.n.Load(); n != 2 {
		t.Errorf("%d items computed, want 2", n)
	}
	if w := s.stderr.String(); strings.Count(w, "shared cache") != 1 || !strings.Contains(w, "local cache only") {
		t.Errorf("warnings %q, want one saying the stage goes on with the local cache", w)
	}

	// The same at the level of one call: an error of its own, not the
	// end of the attempt's time.
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, _, err := kv.Claim(cctx, testKey(9)); err == nil || cctx.Err() != nil {
		t.Errorf("claim with NATS down: %v (ctx %v), want an error of its own", err, cctx.Err())
	}
}

// Waiting on another run's claim does not time the item out: after half
// the attempt's time the item is computed here. A wait that ends with the
// run names the claim it waited on.
func TestSharedKVClaimWaitDoesNotTimeOutTheItem(t *testing.T) {
	srv := natsServer(t)
	holder, _ := openKV(t, srv, time.Hour) // alive: it renews its claim
	kv, _ := openKV(t, srv, time.Hour)
	s := newSharedStage(t, kv)
	ctx := context.Background()
	if _, h, err := holder.Claim(ctx, s.key(t, 1).Digest); err != nil || h == nil {
		t.Fatalf("holder's claim: %v %v", h, err)
	}
	actx, cancel := context.WithTimeout(ctx, 4*time.Second) // timeout: 4s
	defer cancel()
	v, err := s.r.Do(actx, steps.Input{Item: 1}, &engine.Attempt{})
	if err != nil || v.(map[string]any)["item"] != 1 {
		t.Fatalf("item claimed by a run that holds on: %v %v, want it computed here", v, err)
	}

	// The run stops while an item waits: the error says on what.
	if _, h, err := holder.Claim(ctx, s.key(t, 2).Digest); err != nil || h == nil {
		t.Fatalf("holder's claim: %v %v", h, err)
	}
	rctx, stop := context.WithCancel(ctx)
	time.AfterFunc(300*time.Millisecond, stop)
	_, err = s.r.Do(rctx, steps.Input{Item: 2}, &engine.Attempt{})
	if err == nil || !strings.Contains(err.Error(), "claim on this item") || !errors.Is(err, context.Canceled) {
		t.Fatalf("stopped while waiting: %v, want the claim named", err)
	}
}

// Entries this version cannot use (garbage, another shape, a claim with no
// TTL) are taken over at once, with one warning, not waited on.
func TestSharedKVForeignEntryTakenOver(t *testing.T) {
	srv := natsServer(t)
	nc, err := cluster.Conn{Embedded: srv}.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var warnings atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kv, err := cache.OpenKV(ctx, nc, cache.KVOptions{ClaimTTL: time.Hour, Warn: func(string) { warnings.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	raw, err := js.KeyValue(ctx, cache.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range []string{`{}`, `{"claim":"old flow"}`, `not json`} {
		key := testKey(100 + i)
		if _, err := raw.Put(ctx, "r."+key, []byte(b)); err != nil {
			t.Fatal(err)
		}
		v, h, err := kv.Claim(ctx, key)
		if err != nil || v != nil || h == nil {
			t.Fatalf("key holding %s: value %v, held %v, err %v; want it claimed", b, v, h, err)
		}
		h.Release()
	}
	if n := warnings.Load(); n != 1 {
		t.Errorf("%d warnings, want 1", n)
	}
}

// A shared value whose parts are not its key's (a poisoned entry) is not
// the item's result and is not kept locally: the item runs, and its value
// replaces the entry. A true one answers.
func TestSharedKVPoisonedEntryIsNotUsed(t *testing.T) {
	srv := natsServer(t)
	kv, _ := openKV(t, srv, time.Hour)
	s := newSharedStage(t, kv)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	k := s.key(t, 1)
	other := s.key(t, 2)
	if err := kv.Put(ctx, k.Digest, cache.Value{Parts: other.Parts, Result: json.RawMessage(`{"item":"poison"}`)}, 0); err != nil {
		t.Fatal(err)
	}
	var at engine.Attempt
	v, err := s.r.Do(ctx, steps.Input{Item: 1}, &at)
	if err != nil || v.(map[string]any)["item"] != int64(1) && v.(map[string]any)["item"] != 1 || at.Cached {
		t.Fatalf("poisoned entry: %v %v (cached %v), want the item computed", v, err, at.Cached)
	}
	if !strings.Contains(s.stderr.String(), "was not written for it") {
		t.Errorf("warnings %q, want one about the entry", s.stderr.String())
	}
	if sv, ok, err := kv.Lookup(ctx, k.Digest); err != nil || !ok || sv.Check(k.Digest) != nil {
		t.Fatalf("after the item ran: %+v %v %v, want its own value in place", sv, ok, err)
	}

	// A true entry written by another run answers, numbers and all.
	k3 := s.key(t, 3)
	if err := kv.Put(ctx, k3.Digest, cache.Value{Parts: k3.Parts, Result: json.RawMessage(`{"item":3}`)}, 0); err != nil {
		t.Fatal(err)
	}
	at = engine.Attempt{}
	if _, err := s.r.Do(ctx, steps.Input{Item: 3}, &at); err != nil || !at.Cached {
		t.Fatalf("true entry: %v, cached %v; want a cached answer", err, at.Cached)
	}
	if n := s.inner.n.Load(); n != 1 {
		t.Errorf("%d items computed, want 1", n)
	}
}

// A bucket made without per-message TTLs is refused with what to do.
func TestSharedKVBucketWithoutTTLsIsRefused(t *testing.T) {
	srv := natsServer(t)
	nc, err := cluster.Conn{Embedded: srv}.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, _ := jetstream.New(nc)
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: cache.DefaultBucket, History: 1}); err != nil {
		t.Fatal(err)
	}
	_, err = cache.OpenKV(ctx, nc, cache.KVOptions{})
	if err == nil || !strings.Contains(err.Error(), "nats kv del "+cache.DefaultBucket) {
		t.Fatalf("bucket without TTLs: %v, want it refused with what to do", err)
	}
	// A reader (flow cache explain) can still read it.
	if _, err := cache.OpenKV(ctx, nc, cache.KVOptions{Existing: true}); err != nil {
		t.Fatalf("reader: %v", err)
	}
}

package cache_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/flowrun/flow/cache"
	"github.com/flowrun/flow/cluster"
	"github.com/flowrun/flow/store/cachekey"
)

func natsServer(t *testing.T) *server.Server {
	t.Helper()
	srv, stop, err := cluster.Embedded{}.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return srv
}

func openKV(t *testing.T, srv *server.Server, ttl time.Duration) (*cache.KV, *nats.Conn) {
	t.Helper()
	nc, err := cluster.Conn{Embedded: srv}.Dial()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := cache.OpenKV(ctx, nc, cache.KVOptions{ClaimTTL: ttl, MaxValue: 1024})
	if err != nil {
		t.Fatal(err)
	}
	return kv, nc
}

func testKey(i int) string { return cachekey.Digest([]byte(fmt.Sprint(i))) }

// compute is one run's way through an item: the value if stored, else
// the claim, the work (counted) and the fill.
func compute(ctx context.Context, kv *cache.KV, key string, n int, runs *sync.Map) (string, error) {
	v, h, err := kv.Claim(ctx, key)
	if err != nil {
		return "", err
	}
	if v != nil {
		return string(v.Result), nil
	}
	c, _ := runs.LoadOrStore(key, new(atomic.Int64))
	c.(*atomic.Int64).Add(1)
	time.Sleep(time.Millisecond) // long enough for the other run to meet the claim
	res := json.RawMessage(fmt.Sprintf(`{"n":%d}`, n))
	if err := h.Fill(ctx, cache.Value{Parts: cachekey.Parts{Kind: "compute"}, Result: res}, 0); err != nil {
		return "", err
	}
	return string(res), nil
}

// Two runs over the same items at once, each on its own connection: every
// item is computed once in total, and both get every result.
func TestSharedKVComputesEachItemOnce(t *testing.T) {
	srv := natsServer(t)
	const items = 300
	var computed sync.Map
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	results := make([][]string, 2)
	var wg sync.WaitGroup
	for r := range 2 {
		kv, _ := openKV(t, srv, 5*time.Second)
		results[r] = make([]string, items)
		// Eight workers a run, as a stage's workers would be.
		next := atomic.Int64{}
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1)) - 1
					if i >= items {
						return
					}
					res, err := compute(ctx, kv, testKey(i), i, &computed)
					if err != nil {
						t.Errorf("run %d, item %d: %v", r, i, err)
						return
					}
					results[r][i] = res
				}
			}()
		}
	}
	wg.Wait()
	for i := range items {
		want := fmt.Sprintf(`{"n":%d}`, i)
		for r := range 2 {
			if results[r][i] != want {
				t.Fatalf("run %d, item %d: %q, want %q", r, i, results[r][i], want)
			}
		}
		c, ok := computed.Load(testKey(i))
		if !ok || c.(*atomic.Int64).Load() != 1 {
			t.Fatalf("item %d computed %v times, want once", i, c)
		}
	}
}

// A claim whose holder died (its connection gone, no more renewals) is
// taken over once it expires; a released claim at once.
func TestSharedKVDeadClaimIsTakenOver(t *testing.T) {
	srv := natsServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, anc := openKV(t, srv, time.Second)
	b, _ := openKV(t, srv, time.Second)

	key := testKey(1)
	v, h, err := a.Claim(ctx, key)
	if err != nil || v != nil || h == nil {
		t.Fatalf("first claim: %v %v %v", v, h, err)
	}
	anc.Close() // a dies holding the claim
	start := time.Now()
	v, hb, err := b.Claim(ctx, key)
	if err != nil || v != nil || hb == nil {
		t.Fatalf("claim after the holder died: value %v, held %v, err %v", v, hb, err)
	}
	t.Logf("taken over after %s", time.Since(start).Round(time.Millisecond))
	if err := hb.Fill(ctx, cache.Value{Result: json.RawMessage(`1`)}, 0); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := b.Lookup(ctx, key); err != nil || !ok || string(v.Result) != "1" {
		t.Fatalf("after the fill: %v %v %v", v, ok, err)
	}

	// Released (the item failed): the waiting run claims it at once.
	key = testKey(2)
	_, h, err = b.Claim(ctx, key)
	if err != nil || h == nil {
		t.Fatal(err)
	}
	c, _ := openKV(t, srv, time.Hour) // an hour: only the release can free it
	got := make(chan cache.Held, 1)
	go func() {
		_, hc, err := c.Claim(ctx, key)
		if err != nil {
			t.Error(err)
		}
		got <- hc
	}()
	time.Sleep(100 * time.Millisecond)
	h.Release()
	if hc := <-got; hc == nil {
		t.Fatal("the waiting run got no claim after the release")
	} else {
		hc.Release()
	}
}

// A value over the bound is not stored: the claim is released, so that
// another run computes the item itself rather than wait for nothing.
func TestSharedKVLargeValueStaysLocal(t *testing.T) {
	srv := natsServer(t)
	ctx := context.Background()
	kv, _ := openKV(t, srv, time.Hour)
	key := testKey(3)
	_, h, err := kv.Claim(ctx, key)
	if err != nil || h == nil {
		t.Fatal(err)
	}
	big := json.RawMessage(`"` + strings.Repeat("x", 2048) + `"`)
	if err := h.Fill(ctx, cache.Value{Result: big}, 0); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := kv.Lookup(ctx, key); ok {
		t.Fatal("a value over MaxValue was stored")
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if v, h, err := kv.Claim(cctx, key); err != nil || v != nil || h == nil {
		t.Fatalf("after a value too large: %v %v %v, want a claim", v, h, err)
	}
}

// Put (a run computing afresh, without a claim) stores a value that a
// later Claim answers with, and a per-entry TTL lets it go.
func TestSharedKVPutThenClaim(t *testing.T) {
	srv := natsServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, _ := openKV(t, srv, time.Hour)
	key := testKey(4)
	if err := kv.Put(ctx, key, cache.Value{Parts: cachekey.Parts{Kind: "fetch", Salt: "s"}, Result: json.RawMessage(`{"ok":true}`)}, time.Second); err != nil {
		t.Fatal(err)
	}
	v, h, err := kv.Claim(ctx, key)
	if err != nil || h != nil || v == nil || string(v.Result) != `{"ok":true}` || v.Parts.Kind != "fetch" || v.Parts.Salt != "s" {
		t.Fatalf("claim after put: %+v %v %v", v, h, err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, ok, err := kv.Lookup(ctx, key); err != nil {
			t.Fatal(err)
		} else if !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an entry with a 1s TTL is still there after 20s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

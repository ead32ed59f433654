package store

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/flowrun/flow/store/cachekey"
)

// BenchmarkCachePutQueued is BenchmarkCachePut through PutQueued: the
// writers do not wait for their commit, so the writer batches by the
// hundred.
func BenchmarkCachePutQueued(b *testing.B) {
	path := filepath.Join(b.TempDir(), FileName)
	db, err := Open(path, Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	opts := map[string]any{"value": "${ item * item }"}
	var n atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			k, err := cachekey.Build(cachekey.Input{Kind: "compute", Options: opts, Item: i}, nil)
			if err != nil {
				b.Error(err)
				return
			}
			if err := db.PutQueued(ctx, Scope{Pipeline: "/p.yaml", Stage: "square"}, k, json.RawMessage(`{"value":12345}`), 0); err != nil {
				b.Error(err)
				return
			}
		}
	})
	db.Close() // commits what is queued: part of the cost
	b.StopTimer()
	fi, _ := os.Stat(path)
	b.ReportMetric(float64(fi.Size())/float64(n.Load()), "bytes/entry")
}

// Queued writes are all committed by Close.
func TestPutQueuedCommittedByClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const n = 2000
	for i := range n {
		k, err := cachekey.Build(cachekey.Input{Kind: "compute", Item: i}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.PutQueued(ctx, Scope{Pipeline: "/p.yaml", Stage: "s"}, k, json.RawMessage(`1`), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.PutQueued(ctx, Scope{}, cachekey.Key{}, nil, 0); err != ErrClosed {
		t.Errorf("PutQueued after Close: %v, want ErrClosed", err)
	}
	db, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	l, err := db.List(ctx, CacheFilter{})
	if err != nil || len(l) != n {
		t.Fatalf("%d entries (%v), want %d", len(l), err, n)
	}
}

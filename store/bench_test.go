package store

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowrun/flow/store/cachekey"
)

// BenchmarkCachePut stores one small result per item, from parallel
// goroutines as an engine stage's workers would; it reports the store's
// size per entry (main file and WAL).
func BenchmarkCachePut(b *testing.B) { benchPut(b, (*DB).Put, false) }

// BenchmarkCachePutQueued is BenchmarkCachePut through PutQueued: the
// writers do not wait for their commit, so the writer commits them in
// batches; Close, which commits what is still queued, is part of the cost.
func BenchmarkCachePutQueued(b *testing.B) { benchPut(b, (*DB).PutQueued, true) }

func benchPut(b *testing.B, put func(*DB, context.Context, Scope, cachekey.Key, json.RawMessage, time.Duration) error, closeTimed bool) {
	path := filepath.Join(b.TempDir(), FileName)
	db, err := Open(path, Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	opts := map[string]any{"value": "${ item * item }"}
	var n atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(8) // 16 writers on 2 CPUs, as a stage's workers
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			k, err := cachekey.Build(cachekey.Input{Kind: "compute", Options: opts, Item: i}, nil)
			if err != nil {
				b.Error(err)
				return
			}
			if err := put(db, ctx, Scope{Pipeline: "/p.yaml", Stage: "square"}, k, json.RawMessage(`{"value":12345}`), 0); err != nil {
				b.Error(err)
				return
			}
		}
	})
	if closeTimed {
		db.Close()
		b.StopTimer()
	} else {
		b.StopTimer()
		db.Close()
	}
	fi, _ := os.Stat(path)
	b.ReportMetric(float64(fi.Size())/float64(n.Load()), "bytes/entry")
}

// BenchmarkCacheGet looks up stored keys (hits).
func BenchmarkCacheGet(b *testing.B) {
	db, err := Open(filepath.Join(b.TempDir(), FileName), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	const stored = 10_000
	keys := make([]string, stored)
	for i := range stored {
		k, _ := cachekey.Build(cachekey.Input{Kind: "compute", Item: i}, nil)
		keys[i] = k.Digest
	}
	// Stored from 16 goroutines, so that the writer batches them.
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < stored; i += 16 {
				k, _ := cachekey.Build(cachekey.Input{Kind: "compute", Item: i}, nil)
				if err := db.Put(ctx, Scope{Pipeline: "/p.yaml", Stage: "s"}, k, json.RawMessage(`1`), 0); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	var n atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, ok, err := db.Get(ctx, keys[n.Add(1)%stored]); !ok || err != nil {
				b.Errorf("miss: %v", err)
				return
			}
		}
	})
}

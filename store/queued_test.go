package store

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/flowrun/flow/store/cachekey"
)

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

// Queued writes wait for company (flushEvery), not for Close: a run that
// goes on for hours has its results committed as it goes, and a look-up
// that starts after their commit finds them.
func TestPutQueuedCommittedWithoutClose(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), FileName), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	k, _ := cachekey.Build(cachekey.Input{Kind: "compute", Item: 1}, nil)
	// A miss first: the look-ups' snapshot is open before the write.
	if _, ok, err := db.Get(ctx, k.Digest); ok || err != nil {
		t.Fatalf("Get before: %v %v", ok, err)
	}
	if err := db.PutQueued(ctx, Scope{Pipeline: "/p.yaml", Stage: "s"}, k, json.RawMessage(`1`), 0); err != nil {
		t.Fatal(err)
	}
	// A guard against a writer that never flushes, not a timing.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, ok, err := db.Get(ctx, k.Digest); err != nil {
			t.Fatal(err)
		} else if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a queued write was not committed without Close")
		}
	}
}

// A write waited for (Put) is committed at once, with the queued writes
// before it; a look-up that starts after it returns sees both, though
// the look-ups' snapshot was taken before.
func TestGetSeesWhatWasCommittedBefore(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), FileName), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	var keys []cachekey.Key
	for i := range 3 {
		k, _ := cachekey.Build(cachekey.Input{Kind: "compute", Item: i}, nil)
		keys = append(keys, k)
	}
	for round := range 2 {
		// Misses from several goroutines open every snapshot.
		var wg sync.WaitGroup
		for range 2 * snapReaders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				db.Get(ctx, keys[2].Digest)
			}()
		}
		wg.Wait()
		s := Scope{Pipeline: "/p.yaml", Stage: "s"}
		if round == 0 {
			if err := db.PutQueued(ctx, s, keys[0], json.RawMessage(`0`), 0); err != nil {
				t.Fatal(err)
			}
			if err := db.Put(ctx, s, keys[1], json.RawMessage(`1`), 0); err != nil {
				t.Fatal(err)
			}
		} else if err := db.Put(ctx, s, keys[2], json.RawMessage(`2`), 0); err != nil {
			t.Fatal(err)
		}
		for i := range round + 2 {
			for range snapReaders {
				if res, ok, err := db.Get(ctx, keys[i].Digest); !ok || err != nil || string(res) != fmt.Sprint(i) {
					t.Fatalf("round %d: Get %d after Put: %s %v %v", round, i, res, ok, err)
				}
			}
		}
	}
}

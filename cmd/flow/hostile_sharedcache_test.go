package main

import (
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/flowrun/flow/cluster"
)

// The NATS server of the shared cache goes away mid-run (the client keeps
// reconnecting): the run finishes with every item, from the local cache
// and its own work, with a warning, and no item times out waiting on the
// server.
func TestSharedCacheNATSDownMidRun(t *testing.T) {
	// ":0" is any free port, taken by the server itself: nothing can
	// take it between a probe and the server's listen.
	nsrv, stop, err := cluster.Embedded{Listen: "127.0.0.1:0"}.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	var once sync.Once
	counter := &sharedCounter{hits: map[int]int{}}
	counter.onHit = func(n, count int) {
		if n == 100 {
			once.Do(func() { go nsrv.Shutdown() })
		}
	}
	srv := httptest.NewServer(counter)
	defer srv.Close()
	pipeline := strings.Replace(sharedPipeline(srv.URL), "    workers: 8\n", "    workers: 8\n    timeout: 5s\n", 1)

	r := startShared(t, pipeline, nsrv.ClientURL()).wait(t)
	if r.code != 0 || r.stage(t, "get").Succeeded != sharedItems {
		t.Fatalf("run: exit %d, %d succeeded, want %d\n%s", r.code, r.stage(t, "get").Succeeded, sharedItems, r.stderr)
	}
	if !strings.Contains(r.stderr, "the stage goes on with the local cache only") {
		t.Errorf("no warning that the shared cache failed:\n%s", r.stderr)
	}
	for n := 1; n <= sharedItems; n++ {
		if c := counter.count(n); c != 1 {
			t.Errorf("item %d fetched %d times, want once", n, c)
		}
	}
}

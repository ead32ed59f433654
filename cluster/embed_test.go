package cluster

import (
	"strings"
	"testing"
)

// --serve 127.0.0.1:0 picks a free port, as ":0" does everywhere else, and
// not nats-server's default 4222 (which another run may hold).
func TestEmbeddedPortZeroIsAnyFreePort(t *testing.T) {
	seen := map[string]bool{}
	for range 2 {
		srv, stop, err := Embedded{Listen: "127.0.0.1:0"}.Start()
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		url := srv.ClientURL()
		if strings.HasSuffix(url, ":4222") || seen[url] {
			t.Fatalf("listens on %s (seen: %v), want a free port of its own", url, seen)
		}
		seen[url] = true
	}
}

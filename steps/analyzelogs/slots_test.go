package analyzelogs

import (
	"context"
	"errors"
	"runtime"
	"testing"
)

// At most GOMAXPROCS scans of large files run at once; one that waits
// gives up when its context ends, with the context's cause.
func TestScanSlots(t *testing.T) {
	n := max(1, runtime.GOMAXPROCS(0))
	var held []func()
	for range n {
		release, err := acquireSlot(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, release)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	stop := errors.New("the run stopped")
	cancel(stop)
	if _, err := acquireSlot(ctx); !errors.Is(err, stop) {
		t.Fatalf("a slot past GOMAXPROCS (%d): err %v, want the context's cause", n, err)
	}
	held[0]()
	release, err := acquireSlot(ctx)
	if err != nil {
		t.Fatalf("after a release: %v", err)
	}
	release()
	for _, r := range held[1:] {
		r()
	}
}

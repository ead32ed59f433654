package analyzelogs

import (
	"context"
	"runtime"
	"sync"
)

// bigFile is the size from which a scan takes one of the process's scan
// slots (see acquireSlot).
const bigFile = 1 << 20

// A stage's automatic worker count is four per CPU, for steps that wait.
// Scanning a large log from the page cache does not wait: every worker is
// busy copying and scanning, and over the 1 GiB benchmark (64 files of 16
// MiB, 2 CPUs) four workers per CPU cost 13% more CPU and 14% more time
// than one per CPU (0.181 against 0.158 s CPU, median of 9 alternating
// runs). The likely cause: a read(2) of a 256 KiB block lasts long enough
// (20-30 us) for the runtime to hand the worker's processor to another
// runnable worker, whose block is cold in cache, on another thread. So at
// most GOMAXPROCS large files are scanned at once in a process; the other
// workers wait, which costs nothing. Small files are not held back: there
// the extra workers overlap the system calls that dominate (one worker
// per CPU was 15% slower over 10,000 files of 4 KiB).
var slots struct {
	once sync.Once
	ch   chan struct{}
}

// acquireSlot waits for a scan slot, or for ctx to end; release gives it
// back.
func acquireSlot(ctx context.Context) (release func(), err error) {
	slots.once.Do(func() { slots.ch = make(chan struct{}, max(1, runtime.GOMAXPROCS(0))) })
	select {
	case slots.ch <- struct{}{}:
		return releaseSlot, nil
	default:
	}
	select {
	case slots.ch <- struct{}{}:
		return releaseSlot, nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

func releaseSlot() { <-slots.ch }

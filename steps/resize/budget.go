package resize

import (
	"context"
	"sync"
)

// budget bounds the memory that the images being resized at the same time
// take together in this process. max_pixels bounds one image; with many
// workers, nine 16-bit 10000x10000 PNGs, each within it, would still take
// 10 GB at once. Every image asks for its estimated need before its file
// is read and gives it back when its output is written.
//
// There is one budget per process, shared by every resize stage; each
// acquire carries its own stage's limit, and waits while the images in
// flight (of any stage) leave less than its need under that limit. Waiters
// are served in arrival order, so a large image is not starved by a
// stream of small ones.
type budget struct {
	mu      sync.Mutex
	used    int64
	waiting []*waiter
	peak    int64 // the most granted at once, for tests
}

type waiter struct {
	need, limit int64
	ready       chan struct{} // closed once need is granted
}

// decodeBudget is the process's budget.
var decodeBudget budget

// fits reports whether need can be granted now under limit. An image
// always fits when nothing else is in flight: the caller has already
// refused one that needs more than its limit on its own.
func (b *budget) fits(need, limit int64) bool {
	return b.used == 0 || b.used+need <= limit
}

// acquire waits until need bytes can be granted under limit, or ctx ends.
func (b *budget) acquire(ctx context.Context, need, limit int64) error {
	b.mu.Lock()
	if len(b.waiting) == 0 && b.fits(need, limit) {
		b.used += need
		b.peak = max(b.peak, b.used)
		b.mu.Unlock()
		return nil
	}
	w := &waiter{need: need, limit: limit, ready: make(chan struct{})}
	b.waiting = append(b.waiting, w)
	b.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-w.ready:
		// Granted while giving up: hand it back.
		b.used -= need
	default:
		for i, o := range b.waiting {
			if o == w {
				b.waiting = append(b.waiting[:i], b.waiting[i+1:]...)
				break
			}
		}
	}
	b.grant()
	return ctx.Err()
}

// release gives back what acquire granted.
func (b *budget) release(n int64) {
	b.mu.Lock()
	b.used -= n
	b.grant()
	b.mu.Unlock()
}

// grant serves waiters in order while the first one fits.
func (b *budget) grant() {
	for len(b.waiting) > 0 && b.fits(b.waiting[0].need, b.waiting[0].limit) {
		w := b.waiting[0]
		b.waiting = b.waiting[1:]
		b.used += w.need
		b.peak = max(b.peak, b.used)
		close(w.ready)
	}
}

// stats returns what is granted now and the most granted at once since
// the last call, for tests.
func (b *budget) stats() (used, peak int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	used, peak = b.used, b.peak
	b.peak = b.used
	return used, peak
}

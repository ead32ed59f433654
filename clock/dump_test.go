package clock

import (
	"context"
	"testing"
	"time"
)

// With thousands of goroutines the first dump has room for them all (no
// stop of the world is thrown away), and the driver lets go of the big
// buffer once it has nothing left to release.
func TestVirtualDumpSizedForTheGoroutines(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	for range 5000 {
		go func() { <-block }()
	}
	v := NewVirtual(t0)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = v.SleepUntil(context.Background(), t0.Add(time.Second))
	}()
	guard(t, done)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			v.mu.Lock()
			driving := v.driving
			v.mu.Unlock()
			if !driving {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	guard(t, stopped)
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.lost != 0 {
		t.Errorf("%d dumps of 5000 goroutines thrown away for want of room", v.lost)
	}
	if v.buf != nil {
		t.Errorf("the driver stopped holding a %d KiB dump buffer", len(v.buf)>>10)
	}
}

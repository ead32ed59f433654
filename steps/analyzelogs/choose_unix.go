//go:build linux || darwin || freebsd

package analyzelogs

import (
	"bytes"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// How large files are read is decided once per process by measuring, on
// the first file of at least calibrateMin bytes, the CPU time of the
// current thread to see calibrateSpan bytes of it both ways: read(2) into a
// pooled block, and mapped. Thread CPU time leaves out whatever else the
// machine runs, and the span is already in the page cache after a warming
// read, so both see the same bytes from the same place. The measurement
// costs about five passes over 2 MiB, once. Until it is done (or while
// another goroutine does it) files are read.
const (
	calibrateMin  = 8 << 20
	calibrateSpan = 2 << 20
	calibrateRuns = 3
)

var mapping struct {
	decided atomic.Bool
	mmap    atomic.Bool
	busy    sync.Mutex
	// measure, set by tests, replaces the measurement.
	measure func(fd int) (read, mapped []time.Duration, ok bool)
}

// chooseMapping reports whether files of this process should be mapped
// rather than read, measuring it on fd when it is the first large file.
func chooseMapping(fd int, size int64) bool {
	if mapping.decided.Load() {
		return mapping.mmap.Load()
	}
	if size < calibrateMin || !mapping.busy.TryLock() {
		return false
	}
	defer mapping.busy.Unlock()
	if mapping.decided.Load() {
		return mapping.mmap.Load()
	}
	measure := mapping.measure
	if measure == nil {
		measure = measureReading
	}
	read, mapped, ok := measure(fd)
	mapping.mmap.Store(ok && preferMapping(read, mapped))
	mapping.decided.Store(true)
	return mapping.mmap.Load()
}

// preferMapping says mapping wins: its best time is at least a fifth below
// reading's. A closer call is noise, and reading is the safer default (no
// SIGBUS on truncation, no address space, steady across machines).
func preferMapping(read, mapped []time.Duration) bool {
	if len(read) == 0 || len(mapped) == 0 {
		return false
	}
	return 5*minDur(mapped) < 4*minDur(read)
}

func minDur(ds []time.Duration) time.Duration {
	m := ds[0]
	for _, d := range ds[1:] {
		m = min(m, d)
	}
	return m
}

// measureReading times both ways over the start of fd, alternately; ok is
// false when either way failed, which leaves the choice to reading.
func measureReading(fd int) (read, mapped []time.Duration, ok bool) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	pooled := blocks.get(blockSize)
	defer blocks.put(pooled)
	buf := *pooled
	readPass := func() bool {
		var n int
		for off := int64(0); off < calibrateSpan; off += int64(len(buf)) {
			m, err := unix.Pread(fd, buf, off)
			if err != nil || m < len(buf) {
				return false
			}
			n += bytes.Count(buf[:m], []byte{'\n'})
		}
		sink.Add(int64(n))
		return true
	}
	mapPass := func() (ok bool) {
		m, err := unix.Mmap(fd, 0, calibrateSpan, unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			return false
		}
		defer unix.Munmap(m)
		_ = unix.Madvise(m, unix.MADV_SEQUENTIAL)
		// A file truncated meanwhile faults instead of reading.
		prev := debug.SetPanicOnFault(true)
		defer func() {
			debug.SetPanicOnFault(prev)
			if recover() != nil {
				ok = false
			}
		}()
		sink.Add(int64(bytes.Count(m, []byte{'\n'})))
		return true
	}
	if !readPass() { // brings the span into the page cache
		return nil, nil, false
	}
	for range calibrateRuns {
		t0 := threadCPU()
		if !readPass() {
			return nil, nil, false
		}
		t1 := threadCPU()
		if !mapPass() {
			return nil, nil, false
		}
		t2 := threadCPU()
		read, mapped = append(read, t1-t0), append(mapped, t2-t1)
		if settled(read, mapped) {
			break
		}
	}
	return read, mapped, true
}

// settled says the rounds so far leave no doubt: mapping took at least
// twice as long as reading, so that only a measurement off by more than
// half could turn it into the fifth faster that preferMapping asks. On the
// issue-19 VM (2 MiB mapped in 0.7-0.9 ms, read in 0.08 ms) that ends the
// measurement after one round instead of three: 3.3 -> 1.6 ms of CPU per
// process. A closer call takes every round.
func settled(read, mapped []time.Duration) bool {
	return minDur(mapped) >= 2*minDur(read)
}

// sink keeps the measured passes from being optimised away.
var sink atomic.Int64

func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

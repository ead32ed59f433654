package main

import (
	"bytes"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// readFloor is the least a program must spend to see every byte of the
// logs: map each file in 4 MiB windows (as analyze-logs does, and cheaper
// than copying with read(2) on this kind of machine) and count its line
// feeds with the standard library's vectorised bytes.Count, on one
// goroutine per CPU, inside the harness: no process start, no pipeline, no
// pattern. Most of its time is the kernel's, mapping and unmapping the page
// cache; it bounds what any contender, flow included, can reach.
func readFloor(files []string, workers int) (s sample, lines int64, err error) {
	const window = 4 << 20
	cpu0 := selfCPU()
	start := time.Now()
	var (
		next  atomic.Int64
		total atomic.Int64
		mu    sync.Mutex
		wg    sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(files) {
					return
				}
				n, ferr := countMapped(files[i], window)
				if ferr != nil {
					mu.Lock()
					err = ferr
					mu.Unlock()
					return
				}
				total.Add(n)
			}
		}()
	}
	wg.Wait()
	s.wall = time.Since(start)
	s.cpu = selfCPU() - cpu0
	return s, total.Load(), err
}

func countMapped(path string, window int) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	var n int64
	size := st.Size()
	for off := int64(0); off < size; off += int64(window) {
		b, err := unix.Mmap(int(f.Fd()), off, int(min(int64(window), size-off)), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			return 0, err
		}
		n += int64(bytes.Count(b, []byte{'\n'}))
		if err := unix.Munmap(b); err != nil {
			return 0, err
		}
	}
	if size > 0 {
		// A last line without a line feed still counts, as in flow.
		var last [1]byte
		if _, err := f.ReadAt(last[:], size-1); err == nil && last[0] != '\n' {
			n++
		}
	}
	return n, nil
}

// selfCPU is the user and system time of the harness so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

package main

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// readFloor is the least a program must spend to see every byte of the
// logs: read each file with read(2) into a reused 256 KiB buffer (as
// analyze-logs and ripgrep do; mapping the files cost 2.5 times the CPU on
// the VM of issue 19) and count its line feeds with the standard library's
// vectorised bytes.Count, on one goroutine per CPU, inside the harness: no
// process start, no pipeline, no pattern. It bounds what any contender,
// flow included, can reach.
func readFloor(files []string, workers int) (s sample, lines int64, err error) {
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
			buf := make([]byte, 256<<10)
			for {
				i := int(next.Add(1)) - 1
				if i >= len(files) {
					return
				}
				n, ferr := countRead(files[i], buf)
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

func countRead(path string, buf []byte) (int64, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("%s: %v", path, err)
	}
	defer unix.Close(fd)
	var n int64
	last := byte('\n')
	for {
		m, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("%s: %v", path, err)
		}
		if m == 0 {
			break
		}
		n += int64(bytes.Count(buf[:m], []byte{'\n'}))
		last = buf[m-1]
	}
	if last != '\n' {
		n++ // a last line without a line feed still counts, as in flow
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

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"
)

// engineFloor is the engine workload written by hand, without flow: a range
// of n numbers, two pools of one goroutine per CPU each adding 1, and a
// buffered JSON Lines writer to /dev/null, with items passed between them
// in batches of 256 as a careful Go programmer would. It keeps no order,
// counts, report, retries or cancellation: the gap between it and flow is
// what flow's machinery costs, per item. It runs inside the harness (no
// process start) and its CPU is the harness's own getrusage.
func engineFloor(n int) (sample, error) {
	const batch = 256
	workers := runtime.GOMAXPROCS(0)
	out, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return sample{}, err
	}
	defer out.Close()
	cpu0 := selfCPU()
	start := time.Now()

	src := make(chan []int, workers*2)
	mid := make(chan []int, workers*2)
	dst := make(chan []int, workers*2)
	go func() {
		b := make([]int, 0, batch)
		for i := 1; i <= n; i++ {
			b = append(b, i)
			if len(b) == batch {
				src <- b
				b = make([]int, 0, batch)
			}
		}
		if len(b) > 0 {
			src <- b
		}
		close(src)
	}()
	pool := func(in <-chan []int, outc chan<- []int) {
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for b := range in {
					for i := range b {
						b[i]++
					}
					outc <- b
				}
			}()
		}
		wg.Wait()
		close(outc)
	}
	go pool(src, mid)
	go pool(mid, dst)

	w := bufio.NewWriterSize(out, 64<<10)
	enc := json.NewEncoder(w)
	count, sum := 0, 0
	for b := range dst {
		for _, v := range b {
			if err := enc.Encode(v); err != nil {
				return sample{}, err
			}
			count++
			sum += v
		}
	}
	if err := w.Flush(); err != nil {
		return sample{}, err
	}
	s := sample{wall: time.Since(start), cpu: selfCPU() - cpu0}
	if want := n*(n+1)/2 + 2*n; count != n || sum != want {
		return s, fmt.Errorf("the engine floor wrote %d items summing to %d, want %d summing to %d", count, sum, n, want)
	}
	return s, nil
}

// Command flowprof is flow with a CPU profile: the benchmark harness runs it
// with --profile so that a slow workload can be explained with pprof
// without a profiling flag in the product.
//
//	go build -o bench/out/flowprof ./bench/flowprof
//	FLOW_CPUPROFILE=cpu.out bench/out/flowprof run bench/pipelines/engine.yaml > /dev/null
//	go tool pprof -top bench/out/flowprof cpu.out
//
// The worker processes of mode: process stages write cpu.out.worker-PID.
// FLOW_MEMPROFILE=mem.out records every allocation the same way:
//
//	go tool pprof -sample_index=alloc_space -top bench/out/flowprof mem.out
package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"

	"github.com/flowrun/flow/internal/cli"
	"github.com/flowrun/flow/procpool"
	"github.com/flowrun/flow/steps/all"
)

func main() {
	if procpool.IsWorker() {
		// Each worker process of a mode: process stage profiles itself
		// beside the parent's file, so both sides of the pipes show.
		os.Exit(profiled(".worker-"+strconv.Itoa(os.Getpid()), func() int { return procpool.WorkerMain(all.Registry()) }))
	}
	os.Exit(profiled("", func() int { return cli.Run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr) }))
}

// profiled runs fn under a CPU profile written to $FLOW_CPUPROFILE+suffix,
// and writes what fn allocated to $FLOW_MEMPROFILE+suffix.
func profiled(suffix string, fn func() int) int {
	if path := os.Getenv("FLOW_MEMPROFILE"); path != "" {
		// Every allocation, so that a run's few large ones are not
		// missed by sampling.
		runtime.MemProfileRate = 1
		defer func() {
			f, err := os.Create(path + suffix)
			if err == nil {
				err = pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, "flowprof:", err)
			}
		}()
	}
	if path := os.Getenv("FLOW_CPUPROFILE"); path != "" {
		f, err := os.Create(path + suffix)
		if err != nil {
			fmt.Fprintln(os.Stderr, "flowprof:", err)
			return 2
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "flowprof:", err)
			return 2
		}
		defer pprof.StopCPUProfile()
	}
	return fn()
}

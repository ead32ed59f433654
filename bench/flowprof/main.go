// Command flowprof is flow with a CPU profile: the benchmark harness runs it
// with --profile so that a slow workload can be explained with pprof
// without a profiling flag in the product.
//
//	go build -o bench/out/flowprof ./bench/flowprof
//	FLOW_CPUPROFILE=cpu.out bench/out/flowprof run bench/pipelines/engine.yaml > /dev/null
//	go tool pprof -top bench/out/flowprof cpu.out
package main

import (
	"fmt"
	"os"
	"runtime/pprof"

	"github.com/flowrun/flow/internal/cli"
	"github.com/flowrun/flow/procpool"
	"github.com/flowrun/flow/steps/all"
)

func main() {
	if procpool.IsWorker() {
		os.Exit(procpool.WorkerMain(all.Registry()))
	}
	os.Exit(run())
}

func run() int {
	if path := os.Getenv("FLOW_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
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
	return cli.Run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
}

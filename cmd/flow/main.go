// Command flow runs declarative pipelines. main stays thin so that the
// end-to-end tests drive exactly what users run.
package main

import (
	"os"

	"github.com/flowrun/flow/internal/cli"
	"github.com/flowrun/flow/procpool"
	"github.com/flowrun/flow/steps/all"
)

func main() {
	// A worker process is this same binary re-executed; it must never parse
	// the command line meant for the parent.
	if procpool.IsWorker() {
		os.Exit(procpool.WorkerMain(all.Registry()))
	}
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	return cli.Run(args, os.Stdin, os.Stdout, os.Stderr)
}

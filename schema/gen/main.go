// Command gen writes schema.json for the built-in step kinds. It is run by
// 'go generate ./schema' (see the directive in schema.go).
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/flowrun/flow/schema"
	"github.com/flowrun/flow/steps/all"
)

func main() {
	out := flag.String("o", "schema.json", "file to write")
	flag.Parse()
	data, err := schema.Generate(all.Registry())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := os.WriteFile(*out, data, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

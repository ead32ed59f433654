// Command gendocs writes the generated reference documents (run through
// 'go generate ./internal/docgen').
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/flowrun/flow/internal/docgen"
	"github.com/flowrun/flow/steps/all"
)

func main() {
	out := flag.String("o", "docs", "directory to write the documents to")
	flag.Parse()
	files := docgen.Files(all.Registry())
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		path := filepath.Join(*out, name)
		if err := os.WriteFile(path, files[name], 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "gendocs:", err)
			os.Exit(1)
		}
		fmt.Println("wrote", path)
	}
}

//go:build !linux

package source

import (
	"io/fs"
	"os"
)

// eachEntry calls fn for each entry of the directory dir, with its name and
// its type.
func eachEntry(dir string, fn func(name string, typ fs.FileMode)) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	ents, err := f.ReadDir(-1)
	for _, d := range ents {
		fn(d.Name(), d.Type())
	}
	return err
}

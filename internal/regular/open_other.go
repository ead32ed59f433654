//go:build !unix

package regular

import (
	"io/fs"
	"os"
)

// Open opens path for reading and refuses anything but a regular file.
// Without O_NONBLOCK, the check comes after the open: on these systems
// files that block in open are not reachable through ordinary paths.
func Open(path string) (*os.File, fs.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, &fs.PathError{Op: "open", Path: path, Err: &NotRegularError{Mode: fi.Mode()}}
	}
	return f, fi, nil
}

//go:build !(linux || darwin || freebsd)

package analyzelogs

import (
	"os"

	"github.com/flowrun/flow/internal/regular"
)

// logFile is an open log and its size at open.
type logFile struct {
	*os.File
	size int64
	// sized is the file as scanFile reads it, kept here to save an
	// allocation per file.
	sized sizedReader
}

// openLog opens the log an item names, refusing what is not a regular
// file: a FIFO or a device picked up by a glob must fail its item, not
// block the open past every timeout.
func openLog(path string) (*logFile, error) { return openLogIn(nil, path) }

// dirCache is where unix systems keep directory descriptors; here files
// are opened by their full path.
type dirCache struct{}

func (*dirCache) Close() error { return nil }

func openLogIn(_ *dirCache, path string) (*logFile, error) {
	f, fi, err := regular.Open(path)
	if err != nil {
		return nil, err
	}
	return &logFile{File: f, size: fi.Size()}, nil
}

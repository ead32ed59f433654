// Package regular opens the files that steps read, refusing anything but a
// regular file. A glob or an item can name a FIFO, a character device or a
// socket; opening a FIFO for reading blocks until a writer appears, inside
// a system call that neither an item timeout nor SIGTERM can interrupt, and
// reading /dev/zero never ends. Open therefore never blocks: it opens with
// O_NONBLOCK, looks at what it opened (fstat, so a file swapped in between
// cannot slip through) and refuses what is not a regular file.
package regular

import (
	"errors"
	"fmt"
	"io/fs"
)

// ErrNotRegular is what Open returns (wrapped in a *NotRegularError) for
// directories, FIFOs, devices and sockets.
var ErrNotRegular = errors.New("not a regular file")

// NotRegularError says what kind of file was refused.
type NotRegularError struct {
	Mode fs.FileMode
}

func (e *NotRegularError) Error() string {
	return fmt.Sprintf("not a regular file (it is %s); only regular files can be read", describe(e.Mode))
}

func (e *NotRegularError) Unwrap() error { return ErrNotRegular }

func describe(m fs.FileMode) string {
	switch t := m.Type(); {
	case t&fs.ModeDir != 0:
		return "a directory"
	case t&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case t&fs.ModeSocket != 0:
		return "a socket"
	case t&fs.ModeCharDevice != 0:
		return "a character device"
	case t&fs.ModeDevice != 0:
		return "a block device"
	case t&fs.ModeIrregular != 0:
		return "of an unknown type"
	}
	return "not a file"
}

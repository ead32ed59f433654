//go:build linux || darwin || freebsd

package analyzelogs

import (
	"io"
	"io/fs"

	"github.com/flowrun/flow/internal/regular"
	"golang.org/x/sys/unix"
)

// logFile is an open log: a bare descriptor and its size at open. Every
// system call counts when the files are small (on the issue-19 VM a system
// call costs about a microsecond, a 4 KiB scan about as much): this is
// open, fstat, read and close, where an *os.File from regular.Open adds
// three fcntl calls, a second fstat and the poller's bookkeeping.
type logFile struct {
	fd   int
	size int64
	// sized is the file as scanFile reads it, kept here to save an
	// allocation per file.
	sized sizedReader
}

// openLog opens the log an item names, refusing what is not a regular
// file as regular.Open does, and for the same reason: a FIFO or a device
// picked up by a glob must fail its item, not block the open past every
// timeout. O_NONBLOCK means nothing to a regular file's reads.
func openLog(path string) (*logFile, error) {
	var fd int
	var err error
	for {
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		// The rare path: regular.Open words every refusal.
		if f, _, rerr := regular.Open(path); rerr != nil {
			return nil, rerr
		} else {
			f.Close()
		}
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, &fs.PathError{Op: "open", Path: path, Err: &regular.NotRegularError{Mode: fileMode(uint32(st.Mode))}}
	}
	return &logFile{fd: fd, size: st.Size}, nil
}

func fileMode(m uint32) fs.FileMode {
	switch m & unix.S_IFMT {
	case unix.S_IFDIR:
		return fs.ModeDir
	case unix.S_IFIFO:
		return fs.ModeNamedPipe
	case unix.S_IFCHR:
		return fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		return fs.ModeDevice
	case unix.S_IFSOCK:
		return fs.ModeSocket
	case unix.S_IFLNK:
		return fs.ModeSymlink
	}
	return fs.ModeIrregular
}

func (l *logFile) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, err := unix.Read(l.fd, p)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, err
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

func (l *logFile) Close() error { return unix.Close(l.fd) }

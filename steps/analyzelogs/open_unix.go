//go:build linux || darwin || freebsd

package analyzelogs

import (
	"io"
	"io/fs"
	"path/filepath"
	"sync"

	"github.com/flowrun/flow/internal/regular"
	"golang.org/x/sys/unix"
)

// logFile is an open log: a bare descriptor, and its size once stat
// has run. Every system call counts when the files are small: on the
// issue-19 VM a call costs 1-3 us, the scan of a 4 KiB file about one.
// So a small file is open, one pread and close: its type and size are
// asked for (fstat) only when the first read leaves them in doubt (see
// scanOSFile). An *os.File from regular.Open would add three fcntl calls,
// a second fstat and the poller's bookkeeping.
type logFile struct {
	fd   int
	size int64
	// statted says stat ran: size is known and the file is regular.
	statted bool
	// off is where the next Read reads: reads are preads, so that the
	// first one, which is what refuses pipes and sockets, needs no seek.
	off int64
	// sized is the file as scanFile reads it, kept here to save an
	// allocation per file.
	sized sizedReader
}

// openLog opens the log an item names. O_NONBLOCK keeps the open itself
// from blocking on a FIFO or a device that a glob picked up: the item must
// fail (scanOSFile refuses what is not a regular file), not hang past
// every timeout. It means nothing to a regular file's reads.
func openLog(path string) (*logFile, error) { return openLogIn(nil, path) }

// openLogIn is openLog through dirs (see dirCache); dirs may be nil.
func openLogIn(dirs *dirCache, path string) (*logFile, error) {
	var fd int
	var err error
	for {
		fd, err = dirs.open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY)
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
	return &logFile{fd: fd}, nil
}

// stat sets l.size, refusing anything but a regular file.
func (l *logFile) stat() error {
	var st unix.Stat_t
	if err := unix.Fstat(l.fd, &st); err != nil {
		return &fs.PathError{Op: "stat", Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return &fs.PathError{Op: "open", Err: &regular.NotRegularError{Mode: fileMode(uint32(st.Mode))}}
	}
	l.size, l.statted = st.Size, true
	return nil
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
	n, err := l.pread(p, l.off)
	l.off += int64(n)
	return n, err
}

// pread reads at off, as Read but without moving: io.EOF at the end.
func (l *logFile) pread(p []byte, off int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, err := unix.Pread(l.fd, p, off)
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

// dirCache opens files relative to their directory, opened once: the
// kernel then walks one path component per file instead of all of them
// (/work/main/bench/out/logs/10000x4096/app-1.log is seven), which took
// 0.6-0.8 us of CPU off each of 10,000 files on the issue-19 VM, 4% of the
// run. A directory renamed or replaced during the run is therefore still
// read where it was when its first file was opened. The first maxDirs
// directories are kept, until Close; files elsewhere are opened by their
// full path, as are relative paths.
type dirCache struct {
	mu     sync.RWMutex
	fds    map[string]int // -1: the directory could not be opened
	closed bool
}

const maxDirs = 64

// open opens path with flags, relative to its directory's descriptor when
// there is one.
func (c *dirCache) open(path string, flags int) (int, error) {
	dir, base := filepath.Split(path)
	if c == nil || !filepath.IsAbs(dir) || base == "" {
		return unix.Open(path, flags, 0)
	}
	for range 2 {
		c.mu.RLock()
		dfd, ok := c.fds[dir]
		if ok && dfd >= 0 {
			// Under the read lock: Close cannot close dfd meanwhile.
			fd, err := unix.Openat(dfd, base, flags, 0)
			c.mu.RUnlock()
			return fd, err
		}
		c.mu.RUnlock()
		if ok || !c.add(dir) {
			break
		}
	}
	return unix.Open(path, flags, 0)
}

// add opens dir for the cache; false when it is not kept (closed, full,
// or dir cannot be opened).
func (c *dirCache) add(dir string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if dfd, ok := c.fds[dir]; ok {
		return dfd >= 0
	}
	if c.closed || len(c.fds) >= maxDirs {
		return false
	}
	if c.fds == nil {
		c.fds = map[string]int{}
	}
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	for err == unix.EINTR {
		dfd, err = unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		dfd = -1 // a directory that can be searched but not read, or gone
	}
	c.fds[dir] = dfd
	return dfd >= 0
}

// Close closes the directories; later opens take full paths.
func (c *dirCache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var first error
	for _, dfd := range c.fds {
		if dfd >= 0 {
			if err := unix.Close(dfd); err != nil && first == nil {
				first = err
			}
		}
	}
	c.fds, c.closed = nil, true
	return first
}

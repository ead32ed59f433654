//go:build unix

package regular

import (
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// Open opens path for reading without ever blocking in open(2), and
// returns the file with its information, or a *fs.PathError whose Err is a
// *NotRegularError when path is not a regular file (symbolic links are
// followed: what counts is what they lead to).
func Open(path string) (*os.File, fs.FileInfo, error) {
	var fd int
	var err error
	for {
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		// A socket cannot be opened at all (ENXIO): say what it is rather
		// than "no such device or address".
		if err != unix.ENOENT && err != unix.EACCES {
			if fi, serr := os.Stat(path); serr == nil && !fi.Mode().IsRegular() {
				return nil, nil, &fs.PathError{Op: "open", Path: path, Err: &NotRegularError{Mode: fi.Mode()}}
			}
		}
		return nil, nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, nil, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		f := os.NewFile(uintptr(fd), path)
		fi, err := f.Stat()
		f.Close()
		mode := fs.ModeIrregular
		if err == nil {
			mode = fi.Mode()
		}
		return nil, nil, &fs.PathError{Op: "open", Path: path, Err: &NotRegularError{Mode: mode}}
	}
	// O_NONBLOCK means nothing to a regular file's reads, but clear it so
	// that the descriptor is an ordinary blocking one to the runtime.
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, fi, nil
}

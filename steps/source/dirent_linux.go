//go:build linux

package source

import (
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"
)

// eachEntry calls fn for each entry of the directory dir but . and .., with
// its name (valid during the call only) and its type. It reads the
// directory with getdents(2) into one 64 KiB buffer, where os.ReadDir
// allocates an entry and a name per file and reads 8 KiB at a time: the
// glob runs before the first item, and over 10,000 files these were most
// of its time. A filesystem that gives no type gets an lstat per entry, as
// os.ReadDir does.
func eachEntry(dir string, fn func(name string, typ fs.FileMode)) error {
	var fd int
	var err error
	for {
		fd, err = unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return &fs.PathError{Op: "readdirent", Path: dir, Err: err}
		}
		if n <= 0 {
			return nil
		}
		// struct linux_dirent64: ino (8), off (8), reclen (2), type (1),
		// then the name, NUL-terminated and padded.
		for off := 0; off+19 <= n; {
			reclen := int(binary.NativeEndian.Uint16(buf[off+16:]))
			if reclen < 19 || off+reclen > n {
				return &fs.PathError{Op: "readdirent", Path: dir, Err: errors.New("malformed directory entry")}
			}
			typ := buf[off+18]
			raw := buf[off+19 : off+reclen]
			off += reclen
			k := 0
			for k < len(raw) && raw[k] != 0 {
				k++
			}
			if k == 0 || k == 1 && raw[0] == '.' || k == 2 && raw[0] == '.' && raw[1] == '.' {
				continue
			}
			name := unsafe.String(&raw[0], k)
			var mode fs.FileMode
			switch typ {
			case unix.DT_REG:
			case unix.DT_DIR:
				mode = fs.ModeDir
			case unix.DT_LNK:
				mode = fs.ModeSymlink
			case unix.DT_FIFO:
				mode = fs.ModeNamedPipe
			case unix.DT_SOCK:
				mode = fs.ModeSocket
			case unix.DT_CHR:
				mode = fs.ModeDevice | fs.ModeCharDevice
			case unix.DT_BLK:
				mode = fs.ModeDevice
			default:
				fi, err := os.Lstat(filepath.Join(dir, name))
				if errors.Is(err, fs.ErrNotExist) {
					continue // removed since the read, as os.ReadDir skips it
				}
				if err != nil {
					return err
				}
				mode = fi.Mode().Type()
			}
			fn(name, mode)
		}
	}
}

package report

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// WriteFile writes the report as indented JSON to path.
//
// A regular file is replaced atomically (a temporary file in the same
// directory, synced, then renamed over it), so a monitor never reads half a
// report, or the report of an earlier run beside a failed write. A symbolic
// link is written through: the file it names is replaced and the link stays.
// A device or pipe (/dev/stdout, a FIFO) is written to as it is. The file is
// created readable by everyone the umask allows (0644 by default), since
// monitoring often runs as another user.
func (r *Report) WriteFile(path string) error {
	b, err := r.marshal()
	if err != nil {
		return err
	}
	b = append(b, '\n')
	target, direct, err := resolve(path)
	if err != nil {
		return err
	}
	if direct {
		return writeDirect(path, b)
	}
	return writeAtomic(path, target, b)
}

// CheckPath tells, before a run starts, whether a report can be written to
// path: its directory exists and takes new files, and it is not a
// directory. It leaves nothing behind.
func CheckPath(path string) error {
	target, direct, err := resolve(path)
	if err != nil {
		return err
	}
	if direct {
		if err := unix.Access(target, unix.W_OK); err != nil {
			return fmt.Errorf("cannot write the report to %s: %v", path, err)
		}
		return nil
	}
	f, name, err := createTemp(filepath.Dir(target))
	if err != nil {
		if inPlace(target, err) {
			return nil
		}
		return explain(path, target, err)
	}
	f.Close()
	os.Remove(name)
	return nil
}

// inPlace reports whether a report that cannot be replaced for lack of
// permission on its directory can still be overwritten where it is (a file
// the user may write in a directory they may not, such as /var/log/flow).
func inPlace(target string, err error) bool {
	return errors.Is(err, fs.ErrPermission) && unix.Access(target, unix.W_OK) == nil
}

// resolve follows symbolic links from path to the file a report replaces.
// direct is true for what cannot be replaced, only written to: devices,
// pipes, and the /dev and /proc links to open files (/dev/stdout), whose
// target may be a pipe or the file a shell redirected to.
func resolve(path string) (target string, direct bool, err error) {
	p := path
	for hops := 0; hops < 40; hops++ {
		if inKernelDir(p) {
			return p, true, nil
		}
		fi, err := os.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return p, false, nil
		case err != nil:
			return "", false, fmt.Errorf("cannot write the report to %s: %v", path, unwrap(err))
		case fi.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return "", false, fmt.Errorf("cannot write the report to %s: %v", path, unwrap(err))
			}
			if !filepath.IsAbs(link) {
				link = filepath.Join(filepath.Dir(p), link)
			}
			p = link
		case fi.IsDir():
			return "", false, fmt.Errorf("cannot write the report to %s: it is a directory; name a file, e.g. %s", path, filepath.Join(path, "report.json"))
		case fi.Mode().IsRegular():
			return p, false, nil
		default:
			return p, true, nil
		}
	}
	return "", false, fmt.Errorf("cannot write the report to %s: too many levels of symbolic links", path)
}

// inKernelDir tells the /dev and /proc names that stand for open files,
// devices and pipes. /dev/shm is a file system like any other (tmpfs),
// where a report is created and replaced as on disk.
func inKernelDir(p string) bool {
	p = filepath.Clean(p)
	if strings.HasPrefix(p, "/dev/shm/") {
		return false
	}
	return strings.HasPrefix(p, "/dev/") || strings.HasPrefix(p, "/proc/")
}

// writeDirect appends, so that a report sent to /dev/stdout redirected to a
// file comes after the results already written there rather than over them.
func writeDirect(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("cannot write the report to %s: %v", path, unwrap(err))
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("cannot write the report to %s: %v", path, unwrap(err))
	}
	return f.Close()
}

// overwrite writes a report over the old one in place: not atomic, but a
// report of this run rather than none.
func overwrite(path, target string, b []byte) error {
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("cannot write the report to %s: %v", path, unwrap(err))
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("cannot write the report to %s: %v", path, unwrap(err))
	}
	return f.Close()
}

func writeAtomic(path, target string, b []byte) error {
	f, name, err := createTemp(filepath.Dir(target))
	if err != nil {
		if inPlace(target, err) {
			return overwrite(path, target, b)
		}
		return explain(path, target, err)
	}
	fail := func(err error) error {
		f.Close()
		os.Remove(name)
		return fmt.Errorf("cannot write the report to %s: %v", path, unwrap(err))
	}
	if _, err := f.Write(b); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(name)
		return fmt.Errorf("cannot write the report to %s: %v", path, unwrap(err))
	}
	if err := os.Rename(name, target); err != nil {
		os.Remove(name)
		return fmt.Errorf("cannot write the report to %s: %v", path, unwrap(err))
	}
	return nil
}

// createTemp creates a new file in dir with mode 0644 less the umask
// (os.CreateTemp's 0600 would hide the report from a monitor running as
// another user).
func createTemp(dir string) (*os.File, string, error) {
	for range 100 {
		var rnd [6]byte
		if _, err := rand.Read(rnd[:]); err != nil {
			return nil, "", err
		}
		name := filepath.Join(dir, ".flow-report-"+hex.EncodeToString(rnd[:]))
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return f, name, err
	}
	return nil, "", fmt.Errorf("cannot find a free temporary name in %s", dir)
}

func explain(path, target string, err error) error {
	dir := filepath.Dir(target)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("cannot write the report to %s: the directory %s does not exist; create it or name another file", path, dir)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("cannot write the report to %s: no permission to create files in %s", path, dir)
	}
	return fmt.Errorf("cannot write the report to %s: %v", path, unwrap(err))
}

// unwrap drops the path an *fs.PathError repeats, since messages name it.
func unwrap(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

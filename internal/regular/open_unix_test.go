//go:build unix

package regular

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestOpenRegular(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a.log")
	if err := os.WriteFile(p, []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.log")
	if err := os.Symlink(p, link); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{p, link} {
		f, fi, err := Open(path)
		if err != nil {
			t.Fatalf("Open(%s): %v", path, err)
		}
		b := make([]byte, 16)
		n, err := f.Read(b)
		f.Close()
		if err != nil || string(b[:n]) != "hello\n" || fi.Size() != 6 {
			t.Errorf("Open(%s): read %q, %v, size %d", path, b[:n], err, fi.Size())
		}
	}
	if _, _, err := Open(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want not-exist", err)
	}
}

// A FIFO without a writer makes a plain open(2) for reading wait forever;
// Open must return at once with an error that says what the file is.
func TestOpenRefusesWithoutBlocking(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "pipe.log")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	sock := filepath.Join(dir, "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, tc := range []struct{ path, want string }{
		{fifo, "named pipe"},
		{dir, "directory"},
		{"/dev/null", "character device"},
		{sock, "socket"},
	} {
		done := make(chan error, 1)
		go func() {
			f, _, err := Open(tc.path)
			if f != nil {
				f.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			if !errors.Is(err, ErrNotRegular) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "not a regular file") {
				t.Errorf("Open(%s): %v, want a not-regular error naming %q", tc.path, err, tc.want)
			}
		case <-time.After(time.Minute): // only a guard against a hang
			t.Fatalf("Open(%s) blocked", tc.path)
		}
	}
}

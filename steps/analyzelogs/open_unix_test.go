//go:build linux || darwin || freebsd

package analyzelogs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/flowrun/flow/steps"
	"golang.org/x/sys/unix"
)

// A small file is open, one pread and close: no fstat, which over 10,000
// files of 4 KiB was a fifth of the system time. A file that fills the
// first read (the probe), and an empty one, are asked their type and size,
// and read on from the probe.
func TestSmallFileNeedsNoStat(t *testing.T) {
	s := mustScanner(t, defaultRules, 0, 200)
	small := strings.Repeat("2024-05-01 INFO fine\n", 200) + "ERROR x\n"
	for _, tc := range []struct {
		name, data string
		stat       bool
		lines      int64
	}{
		{"small", small, false, 201},
		{"probe less one", strings.Repeat("x", probeSize-7) + "\nERROR", false, 2},
		{"probe", strings.Repeat("x", probeSize-6) + "\nERROR", true, 2},
		{"probe and one", strings.Repeat("x", probeSize-5) + "\nERROR", true, 2},
		{"line across the probe", strings.Repeat("x", probeSize-3) + "ERROR\nWARN", true, 2},
		{"empty", "", true, 0},
		{"one block", strings.Repeat("ERROR\n", blockSize/6) + strings.Repeat("x", blockSize%6), true, blockSize/6 + 1},
		{"larger", strings.Repeat("WARN ERROR\n", blockSize/5), true, blockSize / 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := writeLog(t, tc.data)
			c, err := s.scanOSFile(context.Background(), f)
			if err != nil {
				t.Fatal(err)
			}
			if f.statted != tc.stat {
				t.Errorf("statted = %v, want %v", f.statted, tc.stat)
			}
			want := reference(t, tc.data, defaultRules, 0, 200)
			if c.Lines != tc.lines || !equalCounts(c, want) {
				t.Errorf("got %+v, want %+v (%d lines)", c, want, tc.lines)
			}
		})
	}
}

// Without the fstat up front, what refuses a FIFO is the first pread
// (ESPIPE): a FIFO whose writer has already written must fail as one that
// is empty does, not be counted as a short file.
func TestStepRefusesFIFOWithData(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "pipe.log")
	if err := unix.Mkfifo(p, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	// O_RDWR opens a FIFO without waiting for a reader.
	w, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Skipf("opening the FIFO: %v", err)
	}
	defer w.Close()
	if _, err := w.WriteString("ERROR one\nWARN two\n"); err != nil {
		t.Fatal(err)
	}
	s := mustBuild(t, dir, "{}")
	done := make(chan error, 1)
	go func() {
		_, err := s.Do(context.Background(), steps.Input{Item: "pipe.log"})
		done <- err
	}()
	select {
	case err := <-done:
		var se *steps.Error
		if !errors.As(err, &se) || !se.Permanent || !strings.Contains(err.Error(), "not a regular file") || !strings.Contains(err.Error(), "named pipe") {
			t.Errorf("got %v, want a permanent 'not a regular file' error naming a named pipe", err)
		}
	case <-time.After(time.Minute): // only a guard against a hang
		t.Fatal("the step blocked on a FIFO")
	}
}

// /dev/null answers the first pread with nothing, as an empty file does:
// fstat must then tell them apart.
func TestStepRefusesDevNull(t *testing.T) {
	s := mustBuild(t, t.TempDir(), "{}")
	_, err := s.Do(context.Background(), steps.Input{Item: "/dev/null"})
	var se *steps.Error
	if !errors.As(err, &se) || !se.Permanent || !strings.Contains(err.Error(), "not a regular file") || !strings.Contains(err.Error(), "character device") {
		t.Errorf("got %v, want a permanent 'not a regular file' error naming a character device", err)
	}
}

// A file of bigFile bytes or more waits for a scan slot, found by its size
// once the probe came back full; a small file never does, even when every
// slot is taken.
func TestLargeFileWaitsForSlot(t *testing.T) {
	s := mustScanner(t, defaultRules, 0, 200)
	big := writeLog(t, strings.Repeat("2024-05-01 INFO fine\n", bigFile/20))
	small := writeLog(t, "ERROR x\n")
	n := max(1, runtime.GOMAXPROCS(0))
	for range n {
		release, err := acquireSlot(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer release()
	}
	done := make(chan error, 1)
	go func() {
		c, err := s.scanOSFile(context.Background(), small)
		if err == nil && c.Counts[0] != 1 {
			err = fmt.Errorf("counts %+v", c)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute): // only a guard against a hang
		t.Fatal("a small file waited for a scan slot")
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	stop := errors.New("the run stopped")
	cancel(stop)
	if _, err := s.scanOSFile(ctx, big); !errors.Is(err, stop) {
		t.Fatalf("a large file with every slot taken: %v, want the context's cause from the slot wait", err)
	}
}

// Files are opened relative to their directory, opened once per step: the
// counts are the same, a directory that can be searched but not read
// falls back to full paths, directories past maxDirs too, and after Close
// every open takes the full path.
func TestDirCache(t *testing.T) {
	root := t.TempDir()
	write := func(dir, name, data string) string {
		t.Helper()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	s := mustBuild(t, root, "{}").(*step)
	count := func(p string) int64 {
		t.Helper()
		v, err := s.Do(context.Background(), steps.Input{Item: p})
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		return v.(map[string]any)["errors"].(int64)
	}
	logs := filepath.Join(root, "logs")
	a := write(logs, "a.log", "ERROR 1\n")
	b := write(logs, "b.log", "ERROR 1\nERROR 2\n")
	if count(a) != 1 || count(b) != 2 {
		t.Fatal("wrong counts through the cache")
	}
	if dfd, ok := s.dirs.fds[logs+"/"]; !ok || dfd < 0 {
		t.Fatalf("the directory of %s was not kept: %v", a, s.dirs.fds)
	}
	// Documented: a directory renamed during the run is read where it was.
	if err := os.Rename(logs, logs+".old"); err != nil {
		t.Fatal(err)
	}
	if count(b) != 2 {
		t.Fatal("b.log not read from the renamed directory")
	}
	if _, err := s.Do(context.Background(), steps.Input{Item: filepath.Join(logs, "missing.log")}); err == nil || !strings.Contains(err.Error(), "missing.log") {
		t.Errorf("a missing file: %v, want an error naming it", err)
	}
	for i := range maxDirs + 2 {
		if c := count(write(filepath.Join(root, fmt.Sprint("d", i)), "x.log", "ERROR\n")); c != 1 {
			t.Fatalf("directory %d: %d errors", i, c)
		}
	}
	if len(s.dirs.fds) > maxDirs {
		t.Errorf("%d directories kept, want at most %d", len(s.dirs.fds), maxDirs)
	}
	if os.Geteuid() != 0 {
		noread := filepath.Join(root, "noread")
		p := write(noread, "x.log", "ERROR\nERROR\n")
		if err := os.Chmod(noread, 0o311); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(noread, 0o755)
		s2 := mustBuild(t, root, "{}").(*step)
		v, err := s2.Do(context.Background(), steps.Input{Item: p})
		if err != nil || v.(map[string]any)["errors"].(int64) != 2 {
			t.Errorf("a searchable, unreadable directory: %v, %v", v, err)
		}
		if dfd := s2.dirs.fds[noread+"/"]; dfd != -1 {
			t.Errorf("unreadable directory kept as %d, want -1", dfd)
		}
		s2.Close()
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if count(write(root, "after.log", "ERROR\n")) != 1 || s.dirs.fds != nil {
		t.Error("after Close, opens must take full paths and keep nothing")
	}
}

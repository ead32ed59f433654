// Package lock keeps overlapping runs of the same pipeline apart, as cron
// needs when a run outlasts its interval.
//
// The lock is flock(2) on a file: the kernel drops it when the holder's
// process ends, however it ends (exit, crash, SIGKILL, OOM killer), so a
// stale lock cannot exist. The file also records who holds it (pid, start
// time, command line) for the message shown to a run that finds it taken,
// and for the note shown when a run takes over a file that a killed run
// left behind. The file itself is never removed: removing a lock file that
// another process has open and is waiting on would let two runs in at once.
//
// A lock path may be a typo (--lock pipeline.yaml) or come from a pipeline
// file written by someone else (a committed link run.lock -> ~/notes.txt),
// so a lock only ever writes into a file that is a lock file of ours: one it
// creates, an empty one, or one holding a holder line it wrote. It never
// follows a symbolic link in the last component, never opens what is not a
// regular file, and refuses anything else without changing it.
package lock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Mode says what a run does when the lock is held by another.
type Mode string

const (
	Wait Mode = "wait" // wait until it is free (up to Options.Timeout)
	Skip Mode = "skip" // give up at once without running: not an error
	Fail Mode = "fail" // give up at once: an error
)

// Modes lists the valid modes, for flags and messages.
var Modes = []Mode{Wait, Skip, Fail}

// ParseMode reads a mode name.
func ParseMode(s string) (Mode, error) {
	for _, m := range Modes {
		if string(m) == s {
			return m, nil
		}
	}
	return "", fmt.Errorf("unknown lock mode %q: use wait, skip or fail", s)
}

// Options configure Acquire.
type Options struct {
	Mode Mode
	// Timeout bounds the wait in Wait mode; 0 means wait as long as it
	// takes (until ctx is done).
	Timeout time.Duration
	// Poll is the interval between attempts while waiting (default 100ms).
	// flock has no timeout of its own, and a blocking flock cannot be
	// interrupted by ctx.
	Poll time.Duration
	// Command is recorded in the file for other runs' messages.
	Command string
	// Root, when set, confines the lock to that directory: the path given
	// to Acquire is then relative to it, and neither "..", an absolute path
	// nor a symbolic link on the way may lead out of it. A pipeline's own
	// lock: is confined to the pipeline's folder this way, as write: is.
	Root string
}

// Holder describes the process that holds (or last held) a lock.
type Holder struct {
	PID     int
	Start   time.Time
	Command string
}

func (h Holder) String() string {
	if h.PID == 0 {
		return "another process"
	}
	s := "pid " + strconv.Itoa(h.PID)
	if !h.Start.IsZero() {
		s += " since " + h.Start.Local().Format("2006-01-02 15:04:05 MST")
	}
	if h.Command != "" {
		s += " (" + h.Command + ")"
	}
	return s
}

// HeldError is returned when the lock is held by another process: at once
// in Skip and Fail modes, after the timeout in Wait mode.
type HeldError struct {
	Path   string
	Holder Holder
	Mode   Mode
	Waited time.Duration
}

func (e *HeldError) Error() string {
	if e.Mode == Wait {
		return fmt.Sprintf("%s is still locked by %s after waiting %s", e.Path, e.Holder, e.Waited.Round(time.Millisecond))
	}
	return fmt.Sprintf("%s is locked by %s", e.Path, e.Holder)
}

// RefusedError is returned when the path names something a lock must not
// use: a symbolic link, something other than a regular file, a file that
// holds data of its own, or a place outside Options.Root. The file is left
// exactly as it was.
type RefusedError struct {
	Path string
	Why  string // what is there, e.g. "is a symbolic link (to notes.txt)"
	Fix  string // what to do instead
	// Outside is set when the path leads out of Options.Root.
	Outside bool
}

func (e *RefusedError) Error() string { return e.Path + " " + e.Why + "; " + e.Fix }

// Lock is a held lock.
type Lock struct {
	f    *os.File
	path string
	// Stale is the previous holder when the file was left behind by a run
	// that ended without releasing it (killed, crashed): the lock was free,
	// and this run took it over. Zero otherwise.
	Stale Holder
}

// Acquire takes the lock at path, creating the file if needed.
func Acquire(ctx context.Context, path string, o Options) (*Lock, error) {
	if o.Mode == "" {
		o.Mode = Fail
	}
	if o.Poll <= 0 {
		o.Poll = 100 * time.Millisecond
	}
	shown := path
	if o.Root != "" {
		shown = filepath.Join(o.Root, path)
	}
	start := time.Now()
	var deadline <-chan time.Time
	if o.Mode == Wait && o.Timeout > 0 {
		t := time.NewTimer(o.Timeout)
		defer t.Stop()
		deadline = t.C
	}
	for {
		l, holder, err := try(path, shown, o.Root)
		if err != nil {
			return nil, err
		}
		if l != nil {
			if err := l.record(o.Command); err != nil {
				l.Release()
				return nil, err
			}
			return l, nil
		}
		if o.Mode != Wait {
			return nil, &HeldError{Path: shown, Holder: holder, Mode: o.Mode}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the lock %s (held by %s): %w", shown, holder, ctx.Err())
		case <-deadline:
			return nil, &HeldError{Path: shown, Holder: holder, Mode: Wait, Waited: time.Since(start)}
		case <-time.After(o.Poll):
		}
	}
}

// maxSwaps bounds how often one attempt starts over because the file at the
// path was replaced between open and flock; a file replaced that often is
// being replaced on purpose.
const maxSwaps = 10

// try makes one attempt. It returns the lock, or the current holder when the
// lock is taken.
func try(path, shown, root string) (*Lock, Holder, error) {
	base := filepath.Base(path)
	if base == "." || base == ".." || base == string(filepath.Separator) {
		return nil, Holder{}, &RefusedError{Path: shown, Why: "is a directory", Fix: "name a file for the lock, such as run.lock"}
	}
	// Everything below goes through a descriptor of the directory, so the
	// directory the checks saw is the one the lock is made in.
	dir, err := openDir(filepath.Dir(path), shown, root)
	if err != nil {
		return nil, Holder{}, err
	}
	defer dir.Close()
	for range maxSwaps {
		l, h, swapped, err := tryIn(dir, base, shown)
		if !swapped {
			return l, h, err
		}
	}
	return nil, Holder{}, fmt.Errorf("cannot lock %s: the file keeps being replaced while flow opens it", shown)
}

func openDir(dir, shown, root string) (*os.File, error) {
	// O_DIRECTORY: a FIFO where the directory should be fails at once
	// instead of blocking the open.
	const flags = os.O_RDONLY | syscall.O_DIRECTORY
	if root == "" {
		d, err := os.OpenFile(dir, flags, 0)
		if err != nil {
			return nil, fmt.Errorf("cannot open the lock file %s: %v", shown, unwrapPath(err))
		}
		return d, nil
	}
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, fmt.Errorf("cannot open the lock file %s: cannot open %s: %v", shown, root, unwrapPath(err))
	}
	defer r.Close()
	d, err := r.OpenFile(dir, flags, 0)
	if err != nil {
		// os.Root's error for a path that leaves it has no exported value.
		if strings.Contains(err.Error(), "path escapes from parent") {
			abs, aerr := filepath.Abs(root)
			if aerr != nil {
				abs = root
			}
			return nil, &RefusedError{Path: shown, Outside: true,
				Why: "leads out of " + abs + " (through a symbolic link or \"..\")",
				Fix: "a pipeline's lock stays inside the pipeline's folder: name a file there, or give the path on the command line with --lock"}
		}
		return nil, fmt.Errorf("cannot open the lock file %s: %v", shown, unwrapPath(err))
	}
	return d, nil
}

// tryIn makes one attempt at the file base of the open directory dir.
// swapped reports that the file was replaced between open and flock.
func tryIn(dir *os.File, base, shown string) (l *Lock, h Holder, swapped bool, err error) {
	dfd := int(dir.Fd())
	// Look before opening: opening a FIFO can block and opening a device
	// can act on it (a tape rewinds), so only a regular file, or nothing,
	// is opened. The open then re-checks what it got, since the look and
	// the open are not one step.
	var st unix.Stat_t
	switch err := unix.Fstatat(dfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case err == nil:
		if r := refuse(dfd, base, shown, uint32(st.Mode)); r != nil {
			return nil, Holder{}, false, r
		}
	case errors.Is(err, unix.ENOENT):
	default:
		return nil, Holder{}, false, fmt.Errorf("cannot open the lock file %s: %v", shown, err)
	}
	// No O_TRUNC: whatever is there is read before anything is written.
	fd, err := openat(dfd, base, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o644)
	if err != nil {
		if errors.Is(err, unix.ELOOP) { // a link appeared after the look
			return nil, Holder{}, false, refuse(dfd, base, shown, unix.S_IFLNK)
		}
		return nil, Holder{}, false, fmt.Errorf("cannot open the lock file %s: %v", shown, err)
	}
	var got unix.Stat_t
	if err := unix.Fstat(fd, &got); err != nil {
		unix.Close(fd)
		return nil, Holder{}, false, fmt.Errorf("cannot open the lock file %s: %v", shown, err)
	}
	if r := refuse(dfd, base, shown, uint32(got.Mode)); r != nil {
		unix.Close(fd)
		return nil, Holder{}, false, r
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, Holder{}, false, fmt.Errorf("cannot open the lock file %s: %v", shown, err)
	}
	f := os.NewFile(uintptr(fd), shown)
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer f.Close()
		h, ours, rerr := inspect(f)
		switch {
		case rerr != nil:
			return nil, Holder{}, false, rerr
		case !ours:
			return nil, Holder{}, false, foreign(shown, got.Size)
		case errors.Is(err, unix.EWOULDBLOCK) || errors.Is(err, unix.EAGAIN):
			return nil, h, false, nil
		}
		return nil, Holder{}, false, fmt.Errorf("cannot lock %s: %w", shown, err)
	}
	// Between open and flock another run may have replaced the file (a
	// user deleting it by hand, say): a lock on an unlinked inode keeps
	// no one out, so start over on the file now at the path.
	var now unix.Stat_t
	if unix.Fstatat(dfd, base, &now, unix.AT_SYMLINK_NOFOLLOW) != nil || now.Ino != got.Ino || now.Dev != got.Dev {
		f.Close()
		return nil, Holder{}, true, nil
	}
	// Only now, holding the lock, is the content stable: no run of ours
	// writes it without holding the lock.
	h, ours, err := inspect(f)
	if err != nil || !ours {
		f.Close()
		if err == nil {
			err = foreign(shown, got.Size)
		}
		return nil, Holder{}, false, err
	}
	// A released lock leaves an empty file; a holder line means its holder
	// ended without releasing it.
	return &Lock{f: f, path: shown, Stale: h}, Holder{}, false, nil
}

func openat(dfd int, name string, flags int, mode uint32) (int, error) {
	for {
		fd, err := unix.Openat(dfd, name, flags, mode)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// refuse says why a file of the given type cannot be a lock, or returns nil
// for a regular file.
func refuse(dfd int, base, shown string, mode uint32) *RefusedError {
	const fix = "name a new file for the lock, such as run.lock"
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return nil
	case unix.S_IFLNK:
		why := "is a symbolic link"
		buf := make([]byte, 4096)
		if n, err := unix.Readlinkat(dfd, base, buf); err == nil {
			why += " (to " + string(buf[:n]) + ")"
		}
		return &RefusedError{Path: shown, Why: why,
			Fix: "a lock never follows a link, so that a link (committed with a pipeline, say) cannot make it write into another file: " + fix + ", or remove the link"}
	case unix.S_IFDIR:
		return &RefusedError{Path: shown, Why: "is a directory", Fix: fix}
	case unix.S_IFIFO:
		return &RefusedError{Path: shown, Why: "is a FIFO (named pipe), not a regular file", Fix: fix}
	case unix.S_IFSOCK:
		return &RefusedError{Path: shown, Why: "is a socket, not a regular file", Fix: fix}
	}
	return &RefusedError{Path: shown, Why: "is a device, not a regular file", Fix: fix}
}

func foreign(shown string, size int64) *RefusedError {
	return &RefusedError{Path: shown,
		Why: fmt.Sprintf("is not a lock file: it holds %d bytes that flow did not write", size),
		Fix: "a lock never writes into a file of other content (is it the pipeline file, or a file a link pointed at?): name a new file for the lock, such as run.lock"}
}

// marker starts the holder line, so that a lock file says what it is to a
// person who opens it and to the next run that must tell it from other
// files.
const marker = "flow-lock"

// maxLockSize bounds a lock file of ours: one holder line, whose command
// holds one path.
const maxLockSize = 16 << 10

// record writes this process as the holder.
func (l *Lock) record(command string) error {
	command = strings.NewReplacer("\n", " ", "\r", " ").Replace(command)
	line := fmt.Sprintf("%s %d %s %s\n", marker, os.Getpid(), time.Now().UTC().Format(time.RFC3339Nano), command)
	if len(line) > maxLockSize {
		line = line[:maxLockSize-1] + "\n"
	}
	if err := l.f.Truncate(0); err != nil {
		return fmt.Errorf("cannot write the lock file %s: %w", l.path, err)
	}
	if _, err := l.f.WriteAt([]byte(line), 0); err != nil {
		return fmt.Errorf("cannot write the lock file %s: %w", l.path, err)
	}
	return nil
}

// Release empties the file (so the next run knows it was released cleanly)
// and drops the lock. Releasing twice is harmless.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Truncate(0)
	if cerr := l.f.Close(); err == nil {
		err = cerr // closing the last descriptor drops the flock
	}
	l.f = nil
	return err
}

// Path is the lock file's path.
func (l *Lock) Path() string { return l.path }

// inspect reads the file: ours is true when it is empty (a released lock,
// or a new one) or holds exactly one holder line, and then h is that
// holder (zero when empty).
func inspect(f *os.File) (h Holder, ours bool, err error) {
	buf := make([]byte, maxLockSize+1)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return Holder{}, false, fmt.Errorf("cannot read the lock file %s: %v", f.Name(), unwrapPath(err))
	}
	if n == 0 {
		return Holder{}, true, nil
	}
	if n > maxLockSize {
		return Holder{}, false, nil
	}
	line, rest, _ := strings.Cut(string(buf[:n]), "\n")
	if rest != "" {
		return Holder{}, false, nil
	}
	h, ours = parseHolder(line)
	return h, ours, nil
}

// parseHolder reads a holder line: "flow-lock PID TIME COMMAND", or
// "PID TIME COMMAND" as written before the marker existed. Both are strict
// (digits, then an RFC 3339 time), so that no file of other content passes
// for a lock.
func parseHolder(line string) (Holder, bool) {
	line, _ = strings.CutPrefix(line, marker+" ")
	fields := strings.SplitN(line, " ", 3)
	if len(fields) < 2 || !allDigits(fields[0]) {
		return Holder{}, false
	}
	pid, err := strconv.Atoi(fields[0])
	if err != nil || pid <= 0 {
		return Holder{}, false
	}
	start, err := time.Parse(time.RFC3339Nano, fields[1])
	if err != nil {
		return Holder{}, false
	}
	h := Holder{PID: pid, Start: start}
	if len(fields) > 2 {
		h.Command = fields[2]
	}
	return h, true
}

func allDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Alive reports whether the holder's process still exists (for messages
// only: the flock, not the pid, decides who holds the lock, since pids are
// reused).
func (h Holder) Alive() bool {
	if h.PID <= 0 {
		return false
	}
	err := syscall.Kill(h.PID, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

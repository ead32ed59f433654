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
package lock

import (
	"context"
	"errors"
	"fmt"
	"os"
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
	start := time.Now()
	var deadline <-chan time.Time
	if o.Mode == Wait && o.Timeout > 0 {
		t := time.NewTimer(o.Timeout)
		defer t.Stop()
		deadline = t.C
	}
	for {
		l, holder, err := try(path)
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
			return nil, &HeldError{Path: path, Holder: holder, Mode: o.Mode}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the lock %s (held by %s): %w", path, holder, ctx.Err())
		case <-deadline:
			return nil, &HeldError{Path: path, Holder: holder, Mode: Wait, Waited: time.Since(start)}
		case <-time.After(o.Poll):
		}
	}
}

// try makes one attempt. It returns the lock, or the current holder when the
// lock is taken.
func try(path string) (*Lock, Holder, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, Holder{}, fmt.Errorf("cannot open the lock file: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		h := readHolder(f)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) || errors.Is(err, unix.EAGAIN) {
			return nil, h, nil
		}
		return nil, Holder{}, fmt.Errorf("cannot lock %s: %w", path, err)
	}
	// Between open and flock another run may have replaced the file (a
	// user deleting it by hand, say): a lock on an unlinked inode keeps
	// no one out, so start over on the file now at path.
	var a, b unix.Stat_t
	if unix.Fstat(int(f.Fd()), &a) != nil || unix.Stat(path, &b) != nil || a.Ino != b.Ino || a.Dev != b.Dev {
		f.Close()
		return try(path)
	}
	l := &Lock{f: f, path: path}
	// A released lock leaves an empty file; content means its holder ended
	// without releasing it.
	if h := readHolder(f); h.PID != 0 {
		l.Stale = h
	}
	return l, Holder{}, nil
}

// record writes this process as the holder.
func (l *Lock) record(command string) error {
	line := fmt.Sprintf("%d %s %s\n", os.Getpid(), time.Now().UTC().Format(time.RFC3339Nano), strings.ReplaceAll(command, "\n", " "))
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

func readHolder(f *os.File) Holder {
	buf := make([]byte, 4096)
	n, _ := f.ReadAt(buf, 0)
	return parseHolder(string(buf[:n]))
}

func parseHolder(s string) Holder {
	s, _, _ = strings.Cut(s, "\n")
	fields := strings.SplitN(strings.TrimSpace(s), " ", 3)
	var h Holder
	if len(fields) == 0 {
		return h
	}
	pid, err := strconv.Atoi(fields[0])
	if err != nil || pid <= 0 {
		return Holder{}
	}
	h.PID = pid
	if len(fields) > 1 {
		h.Start, _ = time.Parse(time.RFC3339Nano, fields[1])
	}
	if len(fields) > 2 {
		h.Command = fields[2]
	}
	return h
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

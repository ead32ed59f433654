package lock

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const helperEnv = "FLOW_LOCK_TEST_HOLD"

// TestMain doubles as the other process: with helperEnv set, the test
// binary takes the lock, says so on stdout, and holds it until its stdin
// closes (or it is killed).
func TestMain(m *testing.M) {
	if path := os.Getenv(helperEnv); path != "" {
		l, err := Acquire(context.Background(), path, Options{Mode: Fail, Command: "holder"})
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(3)
		}
		fmt.Println("locked")
		io.Copy(io.Discard, os.Stdin)
		if err := l.Release(); err != nil {
			fmt.Println("release:", err)
			os.Exit(4)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type holder struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

// hold starts another process holding the lock at path and returns once it
// holds it.
func hold(t *testing.T, path string) *holder {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "locked" {
		t.Fatalf("holder: %q %v", line, err)
	}
	return &holder{cmd: cmd, stdin: stdin}
}

// release makes the holder release the lock and exit cleanly.
func (h *holder) release(t *testing.T) {
	t.Helper()
	h.stdin.Close()
	if err := h.cmd.Wait(); err != nil {
		t.Fatalf("holder: %v", err)
	}
}

func TestSkipAndFailNameTheHolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run.lock")
	h := hold(t, path)
	for _, mode := range []Mode{Skip, Fail} {
		_, err := Acquire(context.Background(), path, Options{Mode: mode})
		var he *HeldError
		if !errors.As(err, &he) {
			t.Fatalf("%s: want a HeldError, got %v", mode, err)
		}
		if he.Holder.PID != h.cmd.Process.Pid || he.Holder.Command != "holder" || he.Holder.Start.IsZero() {
			t.Errorf("%s: holder %+v, want pid %d running holder", mode, he.Holder, h.cmd.Process.Pid)
		}
		if msg := err.Error(); !strings.Contains(msg, fmt.Sprintf("locked by pid %d since ", h.cmd.Process.Pid)) {
			t.Errorf("%s: message %q does not say who holds the lock", mode, msg)
		}
	}
	h.release(t)
	l, err := Acquire(context.Background(), path, Options{Mode: Fail})
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	if l.Stale.PID != 0 {
		t.Errorf("a cleanly released lock reported as stale: %+v", l.Stale)
	}
	l.Release()
}

func TestWaitGetsTheLockWhenReleased(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run.lock")
	h := hold(t, path)
	got := make(chan error, 1)
	go func() {
		l, err := Acquire(context.Background(), path, Options{Mode: Wait, Poll: 10 * time.Millisecond})
		if err == nil {
			err = l.Release()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("acquired while held: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	h.release(t)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}

func TestWaitTimeout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run.lock")
	h := hold(t, path)
	_, err := Acquire(context.Background(), path, Options{Mode: Wait, Timeout: 50 * time.Millisecond, Poll: 10 * time.Millisecond})
	var he *HeldError
	if !errors.As(err, &he) || he.Mode != Wait || he.Waited < 50*time.Millisecond {
		t.Fatalf("want a HeldError after waiting, got %#v", err)
	}
	if !strings.Contains(err.Error(), "still locked by pid") {
		t.Errorf("message: %v", err)
	}
	h.release(t)
}

func TestWaitHonoursContext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run.lock")
	h := hold(t, path)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Acquire(ctx, path, Options{Mode: Wait, Poll: 10 * time.Millisecond})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled, got %v", err)
	}
	h.release(t)
}

// A run killed with SIGKILL cannot clean up: the kernel drops its flock,
// the next run gets the lock at once and learns whose file it took over.
func TestKilledHolderIsTakenOver(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run.lock")
	h := hold(t, path)
	pid := h.cmd.Process.Pid
	if err := h.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	h.cmd.Wait()
	l, err := Acquire(context.Background(), path, Options{Mode: Fail})
	if err != nil {
		t.Fatalf("lock left by a killed run not taken over: %v", err)
	}
	defer l.Release()
	if l.Stale.PID != pid || l.Stale.Alive() {
		t.Errorf("stale holder %+v (alive %v), want dead pid %d", l.Stale, l.Stale.Alive(), pid)
	}
	data, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(data), fmt.Sprintf("flow-lock %d ", os.Getpid())) {
		t.Errorf("lock file %q does not name this process", data)
	}
}

// The lock is per file, not per process: a second Acquire from this very
// process is refused too (flock locks belong to open file descriptions).
func TestSameProcessTwice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run.lock")
	l, err := Acquire(context.Background(), path, Options{Mode: Fail})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Acquire(context.Background(), path, Options{Mode: Skip}); err == nil {
		t.Fatal("second acquire succeeded")
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(); err != nil {
		t.Fatalf("second release: %v", err)
	}
	data, _ := os.ReadFile(path)
	if len(data) != 0 {
		t.Errorf("released lock file holds %q", data)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("lock file removed: %v", err)
	}
}

func TestUnopenableLockFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	_, err := Acquire(context.Background(), filepath.Join(file, "x.lock"), Options{Mode: Wait})
	var he *HeldError
	if err == nil || errors.As(err, &he) || !strings.Contains(err.Error(), "lock file") {
		t.Fatalf("want an open error, got %v", err)
	}
}

func TestParseMode(t *testing.T) {
	for _, s := range []string{"wait", "skip", "fail"} {
		if m, err := ParseMode(s); err != nil || string(m) != s {
			t.Errorf("%s: %v %v", s, m, err)
		}
	}
	if _, err := ParseMode("block"); err == nil {
		t.Error("block accepted")
	}
}

// refused asserts that Acquire refuses path with a RefusedError whose
// message holds every part, in every mode (waiting would be pointless).
func refused(t *testing.T, path string, o Options, parts ...string) *RefusedError {
	t.Helper()
	var last *RefusedError
	for _, mode := range Modes {
		o.Mode = mode
		o.Timeout = time.Minute // a refusal must not wait for it
		_, err := Acquire(context.Background(), path, o)
		var re *RefusedError
		if !errors.As(err, &re) {
			t.Fatalf("%s: want a RefusedError, got %v", mode, err)
		}
		for _, p := range parts {
			if !strings.Contains(err.Error(), p) {
				t.Errorf("%s: message %q does not say %q", mode, err, p)
			}
		}
		last = re
	}
	return last
}

// unchanged asserts that path still holds content and was not written.
func unchanged(t *testing.T, path, content string, mtime time.Time) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if data, _ := os.ReadFile(path); string(data) != content {
		t.Errorf("%s now holds %q, want %q", path, data, content)
	}
	if !fi.ModTime().Equal(mtime) {
		t.Errorf("%s was written (mtime %v, was %v)", path, fi.ModTime(), mtime)
	}
}

func writeOld(t *testing.T, path, content string) time.Time {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	// An old mtime, so that any write shows even on a coarse clock.
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	return old
}

// A link named as the lock (committed with a pipeline, say) is never
// followed: neither to a file, which would be emptied, nor dangling, which
// would create its target.
func TestSymlinkIsNotFollowed(t *testing.T) {
	dir := t.TempDir()
	notes := filepath.Join(dir, "notes.txt")
	mtime := writeOld(t, notes, "my notes\n")
	link := filepath.Join(dir, "run.lock")
	if err := os.Symlink(notes, link); err != nil {
		t.Fatal(err)
	}
	refused(t, link, Options{}, "is a symbolic link (to "+notes+")", "never follows a link")
	unchanged(t, notes, "my notes\n", mtime)

	dangling := filepath.Join(dir, "dangling.lock")
	target := filepath.Join(dir, "created-through-the-link")
	if err := os.Symlink(target, dangling); err != nil {
		t.Fatal(err)
	}
	refused(t, dangling, Options{}, "is a symbolic link")
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the link's target was created: %v", err)
	}
}

// A file with content of its own (the typo --lock pipeline.yaml) is
// refused and left as it was; an empty file is taken, and left empty.
func TestForeignFileIsNotWritten(t *testing.T) {
	dir := t.TempDir()
	for _, content := range []string{
		"version: 1\nstages: []\n",
		"1234 not-a-time flow run p.yaml\n",                  // looks like a holder line, is not one
		"flow-lock 1234 2026-01-02T03:04:05Z x\nmore text\n", // a holder line and then more
		strings.Repeat("x", maxLockSize+10),
	} {
		path := filepath.Join(dir, "pipeline.yaml")
		mtime := writeOld(t, path, content)
		refused(t, path, Options{}, "is not a lock file", "name a new file for the lock")
		unchanged(t, path, content, mtime)
	}

	empty := filepath.Join(dir, "empty")
	writeOld(t, empty, "")
	l, err := Acquire(context.Background(), empty, Options{})
	if err != nil {
		t.Fatalf("an empty file: %v", err)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(empty); len(data) != 0 {
		t.Errorf("released: %q", data)
	}
}

// A lock file left by a killed run of a version without the marker is
// still taken over.
func TestLegacyHolderLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run.lock")
	writeOld(t, path, "2147483646 2026-11-26T03:15:00.5Z flow run nightly.yaml\n")
	l, err := Acquire(context.Background(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if l.Stale.PID != 2147483646 || l.Stale.Command != "flow run nightly.yaml" {
		t.Errorf("stale holder %+v", l.Stale)
	}
}

// A FIFO, a directory or a device is never opened for a lock: opening a
// FIFO blocks.
func TestNotARegularFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "run.lock")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		refused(t, fifo, Options{}, "is a FIFO")
	}()
	select {
	case <-done:
	case <-time.After(time.Minute): // only against a hang
		t.Fatal("Acquire blocked on a FIFO")
	}
	refused(t, dir, Options{}, "is a directory")
	refused(t, "/dev/null", Options{}, "is a device")
}

// With Root, the lock stays inside it: "..", an absolute path and a
// symbolic link to a directory outside are all refused, and nothing is
// created outside.
func TestRootConfines(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(root, "out")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"../x.lock", "out/x.lock", filepath.Join(outside, "x.lock")} {
		re := refused(t, p, Options{Root: root}, "leads out of "+root)
		if !re.Outside {
			t.Errorf("%s: not marked Outside", p)
		}
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("created outside the root: %v", entries)
	}
	// Links inside the root are fine.
	if err := os.Mkdir(filepath.Join(root, "real"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("real", filepath.Join(root, "locks")); err != nil {
		t.Fatal(err)
	}
	l, err := Acquire(context.Background(), "locks/run.lock", Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	if l.Path() != filepath.Join(root, "locks/run.lock") {
		t.Errorf("path %q", l.Path())
	}
	l.Release()
	if _, err := os.Stat(filepath.Join(root, "real", "run.lock")); err != nil {
		t.Error(err)
	}
}

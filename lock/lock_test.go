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
	if !strings.HasPrefix(string(data), fmt.Sprintf("%d ", os.Getpid())) {
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

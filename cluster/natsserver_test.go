package cluster

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/flowrun/flow/report"
)

var (
	natsBinOnce sync.Once
	natsBin     string
	natsBinErr  error
)

// natsServerBinary builds the real nats-server from the module this
// project requires (the same version as the embedded one), once.
func natsServerBinary(t *testing.T) string {
	t.Helper()
	natsBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "flow-nats-bin-")
		if err != nil {
			natsBinErr = err
			return
		}
		natsBin = filepath.Join(dir, "nats-server")
		out, err := exec.Command("go", "build", "-o", natsBin, "github.com/nats-io/nats-server/v2").CombinedOutput()
		if err != nil {
			natsBinErr = err
			t.Logf("%s", out)
		}
	})
	if natsBinErr != nil {
		t.Fatalf("building nats-server from its module: %v", natsBinErr)
	}
	return natsBin
}

// natsProcess runs a real nats-server with JetStream on addr, its files in
// dir, until stopped (SIGKILL: the hardest stop for its file store).
func natsProcess(t *testing.T, bin, addr, dir string) *exec.Cmd {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "-js", "-sd", dir, "-a", host, "-p", port)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if i > 200 {
			cmd.Process.Kill()
			t.Fatalf("nats-server did not listen on %s", addr)
		}
		time.Sleep(25 * time.Millisecond)
	}
	return cmd
}

// A real nats-server process SIGKILLed mid-run and started again on its
// files: the run and its worker processes reconnect, and every item comes
// out once.
func TestClusterRealServerKilledAndRestarted(t *testing.T) {
	if testing.Short() {
		t.Skip("builds nats-server")
	}
	bin := natsServerBinary(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	first := natsProcess(t, bin, addr, dir)
	url := "nats://" + addr
	startProc(t, url, "a", 4, false)
	startProc(t, url, "b", 4, false)
	restarted := make(chan *exec.Cmd, 1)
	go func() {
		time.Sleep(700 * time.Millisecond)
		first.Process.Kill()
		first.Wait()
		time.Sleep(300 * time.Millisecond)
		restarted <- natsProcess(t, bin, addr, dir)
	}()
	rep, out := runClusterOn(t, Conn{URL: url}, slowPipeline, nil)
	second := <-restarted
	defer func() { second.Process.Kill(); second.Wait() }()
	if rep.Status != report.StatusSucceeded {
		t.Fatalf("status %s: %s", rep.Status, rep.Reason)
	}
	if got := sortedUnique(t, out); len(got) != 24 {
		t.Fatalf("items out: %v", got)
	}
}

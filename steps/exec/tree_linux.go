//go:build linux

package exec

import (
	"bytes"
	"io"
	"os"
	osexec "os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// What an exec item starts ends with the item, whatever it does (setsid, a
// double fork, ignoring SIGTERM), and with flow when flow is killed:
//
//   - The process group of the item (group_unix.go) is killed at its end.
//   - Flow is a child subreaper (PR_SET_CHILD_SUBREAPER): a process whose
//     parent dies is handed to flow, not to init, so everything an item
//     leaves behind is below one of flow's children. At the item's end,
//     sweep kills every such child that carries the item's tag (tree.go),
//     with everything below it, and reaps them.
//   - The program gets SIGKILL when flow dies (Pdeathsig). The kernel sends
//     it when the thread that started the program exits, not the process
//     (golang/go#27505), so Do keeps its goroutine on that thread from Start
//     to Wait (lockThread).
//   - A guard process, started once per flow process, waits for flow to end
//     however it ends (its pipe from flow reaches EOF, SIGKILL included) and
//     then kills every process carrying a tag of this flow process, with
//     everything below them: what Pdeathsig cannot reach (the program's own
//     children, setsid or not).
//
// Not covered: a process that drops the tag from its environment (execve
// with another environment) and is not below a tagged process when the
// sweep runs: it is handed to flow and outlives its item, and flow.

var (
	treeOnce sync.Once
	// subreaper tells whether orphans come to this process; if not, sweep
	// looks for tagged processes among all of them.
	subreaper bool
	// guardPipe is the write end of the guard's standard input, never
	// closed: the guard sees EOF when this process is gone.
	guardPipe *os.File
	// reapZombies tells whether os.Process holds a pidfd for each child it
	// waits for, which is how reapOrphans tells those from orphans.
	reapZombies bool
)

func init() {
	if tok := os.Getenv(guardVar); tok != "" {
		os.Exit(guardMain(tok))
	}
}

// prepareTree readies this process to find what its exec items leave
// behind, once, before the first program starts.
func prepareTree() {
	treeOnce.Do(func() {
		subreaper = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == nil
		startGuard()
	})
}

// startGuard re-executes this binary as the guard (init above catches it
// before main runs). Without a guard, flow killed still takes its programs
// with it (Pdeathsig) but not their children.
func startGuard() {
	r, w, err := os.Pipe()
	if err != nil {
		return
	}
	defer r.Close()
	cmd := osexec.Command("/proc/self/exe")
	cmd.Args = []string{"flow-exec-guard"}
	env, _ := childEnv(os.Environ())
	cmd.Env = append(env, guardVar+"="+token)
	cmd.Stdin = r
	// A session of its own: a signal to flow's process group (Ctrl-C, kill
	// -9 -PGID) does not stop the guard before it has done its work.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return
	}
	guardPipe = w
	reapZombies = pidfdPIDs()[cmd.Process.Pid]
	untrack := track(cmd.Process.Pid)
	go func() {
		_ = cmd.Wait()
		untrack()
	}()
}

// guardMain waits for its flow process to end, then kills what its exec
// items left running.
func guardMain(tok string) int {
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE, syscall.SIGQUIT)
	_, _ = io.Copy(io.Discard, os.Stdin)
	mine := func(t string) bool { return strings.HasPrefix(t, tok+"-") }
	// Killing a parent hands its children to init: look again until a
	// round finds nothing left (a program may still be forking).
	for range 100 {
		pids := withDescendants(taggedAmong(allPIDs(), mine), procTable())
		if len(pids) == 0 {
			return 0
		}
		for _, p := range pids {
			_ = unix.Kill(p, unix.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return 0
}

// lockThread keeps the calling goroutine on its thread until the returned
// function runs, so that the Pdeathsig of a program started meanwhile means
// "flow died" and not "a thread of flow ended".
func lockThread() (unlock func()) {
	runtime.LockOSThread()
	return runtime.UnlockOSThread
}

// dieWithFlow makes the program get SIGKILL when flow dies.
func dieWithFlow(attr *syscall.SysProcAttr) { attr.Pdeathsig = syscall.SIGKILL }

// sweep kills and reaps, at the end of an item, every process still
// carrying its tag and everything below them; on the way it reaps the
// orphans that ended on their own.
func sweep(tag string) {
	match := func(t string) bool { return t == tag }
	self := os.Getpid()
	killed := map[int]bool{}
	for range 100 {
		var roots, zombies []int
		for _, p := range orphans(self) {
			if killed[p] {
				continue
			}
			st, _, ok := statOf(p)
			switch {
			case !ok:
			case st == 'Z':
				zombies = append(zombies, p)
			case tagged(readEnviron(p), match):
				roots = append(roots, p)
			}
		}
		reapOrphans(zombies)
		if len(roots) == 0 {
			return
		}
		for _, p := range withDescendants(roots, procTable()) {
			if !killed[p] {
				_ = unix.Kill(p, unix.SIGKILL)
				killed[p] = true
			}
		}
		reap(self, killed)
	}
}

// running holds the programs this process started and has not waited for
// yet, and the guard: children that are not orphans.
var running sync.Map

// track notes a program started; the returned function, once it has been
// waited for.
func track(pid int) (untrack func()) {
	running.Store(pid, true)
	return func() { running.Delete(pid) }
}

// orphans lists the processes that may have been left by an item: the
// children of this process it did not start itself, which as subreaper is
// where every orphan of its items goes; without the subreaper, every
// process.
func orphans(self int) []int {
	if !subreaper {
		return allPIDs()
	}
	var out []int
	for _, c := range children(self) {
		if _, ok := running.Load(c); !ok {
			out = append(out, c)
		}
	}
	return out
}

// reap waits until each killed process is gone, reaping those that are
// (or become, as their parents die) children of this process. A process
// stuck in the kernel is given up on after a while rather than hang the
// item.
func reap(self int, killed map[int]bool) {
	deadline := time.Now().Add(5 * time.Second)
	for p := range killed {
		for {
			ppid, ok := parentOf(p)
			if !ok {
				break
			}
			if ppid == self {
				_, _ = unix.Wait4(p, nil, 0, nil)
				break
			}
			if time.Now().After(deadline) {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// reapOrphans reaps, of zombies (ended children of this process that are
// not programs it started and tracks), those no os.Process waits for:
// processes handed to flow as their subreaper that ended on their own (a
// daemon's helper that finished before its item did). Without it they would
// stay zombies, holding a pid each, until flow exits. os/exec holds a pidfd
// on each child it waits for until the wait is done, so a zombie without
// one is nobody else's.
func reapOrphans(zombies []int) {
	if !reapZombies || !subreaper || len(zombies) == 0 {
		return
	}
	held := pidfdPIDs()
	for _, z := range zombies {
		if !held[z] {
			_, _ = unix.Wait4(z, nil, unix.WNOHANG, nil)
		}
	}
}

// pidfdPIDs lists the processes this process holds a pidfd for.
func pidfdPIDs() map[int]bool {
	out := map[int]bool{}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return out
	}
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err != nil || l != "anon_inode:[pidfd]" {
			continue
		}
		b, err := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Pid:"); ok {
				if p, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && p > 0 {
					out[p] = true
				}
			}
		}
	}
	return out
}

// children lists the children of pid's main thread, from
// /proc/PID/task/PID/children, or from every process's parent where the
// kernel does not offer that file. The main thread is where the kernel
// hands orphans to a subreaper (the first of its live threads, and Go never
// ends the main thread); programs started from other threads are not
// listed, and need not be: os/exec waits for them.
func children(pid int) []int {
	p := strconv.Itoa(pid)
	b, err := os.ReadFile("/proc/" + p + "/task/" + p + "/children")
	if err != nil {
		return childrenFrom(pid, procTable())
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if c, err := strconv.Atoi(f); err == nil {
			out = append(out, c)
		}
	}
	return out
}

func childrenFrom(pid int, table map[int]int) []int {
	var out []int
	for c, pp := range table {
		if pp == pid {
			out = append(out, c)
		}
	}
	return out
}

// withDescendants returns roots and every process below them.
func withDescendants(roots []int, table map[int]int) []int {
	kids := map[int][]int{}
	for c, pp := range table {
		kids[pp] = append(kids[pp], c)
	}
	seen := map[int]bool{}
	out := []int{}
	queue := append([]int(nil), roots...)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if seen[p] || p <= 1 {
			continue
		}
		seen[p] = true
		out = append(out, p)
		queue = append(queue, kids[p]...)
	}
	return out
}

func taggedAmong(pids []int, match func(string) bool) []int {
	var out []int
	for _, p := range pids {
		if tagged(readEnviron(p), match) {
			out = append(out, p)
		}
	}
	return out
}

func allPIDs() []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	out := make([]int, 0, len(ents))
	for _, e := range ents {
		if p, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// procTable maps every process to its parent.
func procTable() map[int]int {
	out := map[int]int{}
	for _, p := range allPIDs() {
		if pp, ok := parentOf(p); ok {
			out[p] = pp
		}
	}
	return out
}

// parentOf reads the parent of pid; ok is false once the process is gone
// (reaped).
func parentOf(pid int) (ppid int, ok bool) {
	_, ppid, ok = statOf(pid)
	return ppid, ok
}

// statOf reads the state and parent of pid from /proc/PID/stat.
func statOf(pid int) (state byte, ppid int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 || len(f[0]) != 1 {
		return 0, 0, false
	}
	ppid, err = strconv.Atoi(f[1])
	return f[0][0], ppid, err == nil
}

func readEnviron(pid int) []byte {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	return b
}

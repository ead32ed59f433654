package procpool

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
)

// procInfo is what the pool needs from /proc/PID/stat.
type procInfo struct {
	pid, ppid, pgid int
	start           uint64 // start time, in clock ticks since boot: tells a reused pid apart
	rss             int64  // resident pages
	zombie          bool
}

var pageSize = int64(os.Getpagesize())

// readProcs reads every process of the system. Reading /proc costs about a
// millisecond for a hundred processes; the pool does it only to measure
// memory (when a limit is set) and to find a dying worker's descendants.
func readProcs() map[int]procInfo {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	names, _ := d.Readdirnames(-1)
	d.Close()
	out := make(map[int]procInfo, len(names))
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil {
			continue
		}
		if pi, ok := readProc(pid); ok {
			out[pid] = pi
		}
	}
	return out
}

func readProc(pid int) (procInfo, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procInfo{}, false
	}
	// The command name (field 2) is in parentheses and may hold anything,
	// spaces and ')' included: fields are counted after its last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procInfo{}, false
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state); field N is f[N-3].
	if len(f) < 22 {
		return procInfo{}, false
	}
	num := func(field int) int64 {
		n, _ := strconv.ParseInt(string(f[field-3]), 10, 64)
		return n
	}
	return procInfo{
		pid:    pid,
		ppid:   int(num(4)),
		pgid:   int(num(5)),
		start:  uint64(num(22)),
		rss:    num(24),
		zombie: len(f[0]) == 1 && (f[0][0] == 'Z' || f[0][0] == 'X'),
	}, true
}

// tree returns the live processes that descend from root or share its
// process group (root included), from one snapshot of the process table.
func tree(procs map[int]procInfo, root int) []procInfo {
	children := map[int][]int{}
	for _, p := range procs {
		children[p.ppid] = append(children[p.ppid], p.pid)
	}
	seen := map[int]bool{}
	var out []procInfo
	var walk func(pid int)
	walk = func(pid int) {
		p, ok := procs[pid]
		if !ok || seen[pid] {
			return
		}
		seen[pid] = true
		if !p.zombie {
			out = append(out, p)
		}
		for _, c := range children[pid] {
			walk(c)
		}
	}
	walk(root)
	for _, p := range procs {
		if p.pgid == root && !seen[p.pid] {
			walk(p.pid)
		}
	}
	return out
}

// signalProcs signals each process that is still the one recorded (same
// start time), so that a pid reused since is left alone.
func signalProcs(ps []procInfo, sig syscall.Signal) {
	for _, p := range ps {
		if cur, ok := readProc(p.pid); ok && cur.start == p.start && !cur.zombie {
			_ = syscall.Kill(p.pid, sig)
		}
	}
}

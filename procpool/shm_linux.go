//go:build linux

package procpool

import (
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A worker started over pipes also shares one memory page with its parent
// (descriptor 5). Its first word is the ID of the item the worker is
// running, 0 between items; its second, the ID of the last item it started,
// never reset. Results cross the pipe in batches, so when a worker dies the
// parent could not otherwise tell the item that killed it from those that
// had finished but were not yet reported: with the page it blames exactly
// the item that was running, and runs the others again. When the worker
// died between items, the second word tells the items that had run (one of
// them may have left behind what killed it) from those that never started.
const fdRunning = 5

const shmSize = 4096

// runningPage is the shared page; the zero value (no page) reads as 0.
type runningPage struct{ mem []byte }

// newRunningPage makes the page in the parent and the file to hand over.
func newRunningPage() (runningPage, *os.File, error) {
	fd, err := unix.MemfdCreate("flow-worker-running", unix.MFD_CLOEXEC)
	if err != nil {
		return runningPage{}, nil, err
	}
	f := os.NewFile(uintptr(fd), "flow-worker-running")
	if err := unix.Ftruncate(fd, shmSize); err != nil {
		f.Close()
		return runningPage{}, nil, err
	}
	mem, err := unix.Mmap(fd, 0, shmSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return runningPage{}, nil, err
	}
	return runningPage{mem: mem}, f, nil
}

// openRunningPage maps the page a worker inherited, if any.
func openRunningPage() runningPage {
	mem, err := unix.Mmap(fdRunning, 0, shmSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return runningPage{}
	}
	unix.CloseOnExec(fdRunning)
	return runningPage{mem: mem}
}

func (p runningPage) valid() bool { return p.mem != nil }

func (p runningPage) word(i int) *uint64 { return (*uint64)(unsafe.Pointer(&p.mem[8*i])) }

// load is the ID of the item running, 0 if none.
func (p runningPage) load() uint64 {
	if p.mem == nil {
		return 0
	}
	return atomic.LoadUint64(p.word(0))
}

// lastStarted is the ID of the last item the worker started, 0 if none.
func (p runningPage) lastStarted() uint64 {
	if p.mem == nil {
		return 0
	}
	return atomic.LoadUint64(p.word(1))
}

// begin marks id running. The running word goes first: a worker dying
// between the two stores has its item blamed, not merely counted as run.
func (p runningPage) begin(id uint64) {
	if p.mem != nil {
		atomic.StoreUint64(p.word(0), id)
		atomic.StoreUint64(p.word(1), id)
	}
}

// end marks the worker between items.
func (p runningPage) end() {
	if p.mem != nil {
		atomic.StoreUint64(p.word(0), 0)
	}
}

func (p runningPage) unmap() {
	if p.mem != nil {
		_ = unix.Munmap(p.mem)
	}
}

package procpool

import (
	"io"
	"os"
	"syscall"
	"unsafe"
)

// workerPipe is how a worker reads and writes its protocol pipe: made
// non-blocking, through the runtime's poller, with raw read(2) and write(2).
// A blocking read holds a thread in the kernel and has the runtime hand its
// P to another. An ordinary call on a non-blocking descriptor still enters
// the scheduler's system-call state, and each time the worker comes back
// from waiting for the parent that wakes the runtime's monitor thread
// (sysmon), which then polls every 20 µs for a millisecond: with a frame in
// and a frame out every few hundred trivial items, a tenth of the worker's
// CPU went to those wake-ups. A raw call on a non-blocking descriptor
// returns at once, so it may skip that state; waiting stays the poller's.
func workerPipe(fd uintptr, name string) (*os.File, io.ReadWriter) {
	if syscall.SetNonblock(int(fd), true) != nil {
		f := os.NewFile(fd, name)
		return f, f
	}
	// Non-blocking when it is made, the file is the poller's.
	f := os.NewFile(fd, name)
	rc, err := f.SyscallConn()
	if err != nil {
		return f, f
	}
	return f, rawPipe{rc}
}

type rawPipe struct{ rc syscall.RawConn }

func (p rawPipe) Read(b []byte) (n int, err error) {
	if len(b) == 0 {
		return 0, nil
	}
	perr := p.rc.Read(func(fd uintptr) bool {
		for {
			r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
			switch e {
			case 0:
				if n = int(r); n == 0 {
					err = io.EOF
				}
				return true
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false
			}
			err = e
			return true
		}
	})
	if err == nil {
		err = perr
	}
	return n, err
}

func (p rawPipe) Write(b []byte) (n int, err error) {
	perr := p.rc.Write(func(fd uintptr) bool {
		for n < len(b) {
			r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&b[n])), uintptr(len(b)-n))
			switch e {
			case 0:
				n += int(r)
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false // the poller waits for room, then calls again
			default:
				err = e
				return true
			}
		}
		return true
	})
	if err == nil {
		err = perr
	}
	return n, err
}

package procpool

import (
	"bytes"
	"io"
	"syscall"
	"testing"
)

// A worker's pipe, read and written with raw system calls, carries what a
// frame stream needs: more than the pipe holds at once (the writer waits
// in the poller for room, the reader for data), short reads, and the end
// of the stream once the writer closes.
func TestWorkerPipeCarriesAStream(t *testing.T) {
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	rf, r := workerPipe(uintptr(fds[0]), "in")
	wf, w := workerPipe(uintptr(fds[1]), "out")
	defer rf.Close()
	if _, ok := r.(rawPipe); !ok {
		t.Fatalf("reader is a %T, want rawPipe", r)
	}
	for _, fd := range fds {
		fl, err := fcntl(fd, syscall.F_GETFL)
		if err != nil || fl&syscall.O_NONBLOCK == 0 {
			t.Errorf("descriptor %d: flags %#x, %v: want O_NONBLOCK", fd, fl, err)
		}
	}
	want := make([]byte, 4<<20) // many times a pipe's 64 KiB
	for i := range want {
		want[i] = byte(i * 7)
	}
	written := make(chan error, 1)
	go func() {
		_, err := w.Write(want)
		if err == nil {
			err = wf.Close()
		}
		written <- err
	}()
	var got bytes.Buffer
	buf := make([]byte, 1000)
	for {
		n, err := r.Read(buf)
		got.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("read %d bytes, not the %d written", got.Len(), len(want))
	}
}

func fcntl(fd, cmd int) (int, error) {
	r, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), uintptr(cmd), 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

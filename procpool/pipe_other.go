//go:build !linux

package procpool

import (
	"io"
	"os"
)

// workerPipe is how a worker reads and writes its protocol pipe: here, as
// the file it inherited.
func workerPipe(fd uintptr, name string) (*os.File, io.ReadWriter) {
	f := os.NewFile(fd, name)
	return f, f
}

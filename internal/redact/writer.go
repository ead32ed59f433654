package redact

import (
	"bytes"
	"io"
	"sync"
)

// maxLine is the most a Writer holds waiting for the end of a line.
const maxLine = 64 << 10

// Writer redacts what goes through it, line by line, so that a secret
// written in two pieces is still found whole. Writes may come from several
// goroutines. Flush writes out an unfinished last line.
type Writer struct {
	r   *Redactor
	w   io.Writer
	mu  sync.Mutex
	buf []byte
}

// Writer returns w itself when there is nothing to hide.
func (r *Redactor) Writer(w io.Writer) io.Writer {
	if !r.Active() {
		return w
	}
	return &Writer{r: r, w: w}
}

func (x *Writer) Write(p []byte) (int, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.buf = append(x.buf, p...)
	if i := bytes.LastIndexByte(x.buf, '\n'); i >= 0 {
		if err := x.emit(i + 1); err != nil {
			return 0, err
		}
	}
	if len(x.buf) > maxLine {
		// A line without end: write most of it, keeping back what could
		// be the start of a secret that the next write completes.
		if err := x.emit(len(x.buf) - x.r.partialStart(x.buf)); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Flush writes out what is held. An unfinished line that ends with the
// start of a secret (the writer died in the middle of it) ends with Mark
// instead.
func (x *Writer) Flush() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	k := x.r.partialStart(x.buf)
	if k < MinFragment {
		return x.emit(len(x.buf))
	}
	if err := x.emit(len(x.buf) - k); err != nil {
		return err
	}
	x.buf = x.buf[:0]
	_, err := io.WriteString(x.w, Mark)
	return err
}

func (x *Writer) emit(n int) error {
	if n == 0 {
		return nil
	}
	out := x.r.String(string(x.buf[:n]))
	x.buf = append(x.buf[:0], x.buf[n:]...)
	_, err := io.WriteString(x.w, out)
	return err
}

// partialStart is the length of the longest start of a form (shorter than
// the form) that b ends with.
func (r *Redactor) partialStart(b []byte) int {
	best := 0
	for _, f := range r.forms {
		for j := max(0, len(b)-(len(f)-1)); j < len(b)-best; j++ {
			if b[j] == f[0] && bytes.HasPrefix([]byte(f), b[j:]) {
				best = len(b) - j
				break
			}
		}
	}
	return best
}

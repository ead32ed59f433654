package source

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/flowrun/flow/steps"
)

// defaultMaxLine bounds a line of the lines, jsonl and stdin sources unless
// max_line says otherwise. A line becomes an item that stages hold and copy
// (and a JSON line decodes to several times its size), so the bound is that
// of a large item, like fetch's max_bytes, not analyze-logs' 256 MiB for a
// line it only scans. Without a bound, one line of a gzip bomb (1 MiB of
// gzip, 1 GiB of zeros without a line feed) took 4 GB.
const defaultMaxLine = 16 << 20

// lineReader yields the lines of r without their "\n" or "\r\n". A line is
// assembled from buffer-sized pieces, up to max bytes: a longer one is an
// error as soon as it passes the bound, so reading never holds more than
// max plus one buffer.
type lineReader struct {
	r    *bufio.Reader
	buf  []byte
	line int64
	max  int
}

func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 64<<10), max: max}
}

// errLineTooLong is returned by next for a line longer than max.
var errLineTooLong = errors.New("line too long")

// next returns the next line, valid until the following call, and io.EOF
// after the last one. A final line without "\n" is still a line. The bound
// is checked before a piece is kept: up to max bytes, then the "\r" and
// "\n" that may end them.
func (lr *lineReader) next() ([]byte, error) {
	lr.buf = lr.buf[:0]
	for {
		chunk, err := lr.r.ReadSlice('\n')
		switch {
		case err == nil:
			var line []byte
			if len(lr.buf) == 0 {
				line = chunk
			} else {
				if len(lr.buf)+len(chunk) > lr.max+2 {
					return nil, errLineTooLong
				}
				lr.add(chunk)
				line = lr.buf
			}
			line = bytes.TrimSuffix(line[:len(line)-1], []byte{'\r'})
			if len(line) > lr.max {
				return nil, errLineTooLong
			}
			lr.line++
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull), errors.Is(err, io.EOF):
			if len(lr.buf)+len(chunk) > lr.max+1 {
				return nil, errLineTooLong
			}
			lr.add(chunk)
			if err == bufio.ErrBufferFull {
				continue
			}
			if len(lr.buf) == 0 {
				return nil, io.EOF
			}
			line := bytes.TrimSuffix(lr.buf, []byte{'\r'})
			if len(line) > lr.max {
				return nil, errLineTooLong
			}
			lr.line++
			return line, nil
		default:
			return nil, err
		}
	}
}

// add appends a piece of a line, doubling the buffer as it grows (up to
// the bound): a long line then costs about twice its size in allocations,
// where append's small steps for large slices cost several times it.
func (lr *lineReader) add(chunk []byte) {
	if need := len(lr.buf) + len(chunk); need > cap(lr.buf) {
		nb := make([]byte, len(lr.buf), min(max(2*cap(lr.buf), need), lr.max+2))
		copy(nb, lr.buf)
		lr.buf = nb
	}
	lr.buf = append(lr.buf, chunk...)
}

// readError names the file and line of a read error.
func (lr *lineReader) readError(name string, err error) error {
	if errors.Is(err, errLineTooLong) {
		return fmt.Errorf("%s:%d: the line is longer than %s (max_line): is this a text file? If lines this long are expected, raise max_line", name, lr.line+1, formatSize(int64(lr.max)))
	}
	return fmt.Errorf("%s:%d: read error: %v", name, lr.line+1, err)
}

// formatSize writes n as the largest binary unit that divides it, as sizes
// are written in pipeline files.
func formatSize(n int64) string {
	for _, u := range []struct {
		name string
		size int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d%s", n/u.size, u.name)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}

// openFile opens a file for reading, transparently decompressing ".gz".
// at is where the file is read (path itself, or where a test's mocks keep
// it); messages name path.
func openFile(at, path string) (io.ReadCloser, error) {
	f, err := os.Open(at)
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", path, unwrapPath(err))
	}
	if !strings.HasSuffix(path, ".gz") {
		return f, nil
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: not a valid gzip file: %v", path, err)
	}
	return struct {
		io.Reader
		io.Closer
	}{zr, f}, nil
}

// unwrapPath drops the "open PATH:" prefix of an *os.PathError, since our
// messages name the path already.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// emitLines emits each line as a string.
func emitLines(ctx context.Context, r io.Reader, name string, max int, skipEmpty bool, emit func(any) error) error {
	lr := newLineReader(r, max)
	for {
		line, err := lr.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return lr.readError(name, err)
		}
		if skipEmpty && len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := emit(string(line)); err != nil {
			return err
		}
	}
}

// emitJSONL emits one JSON value per line. Blank lines are skipped, as JSON
// Lines writers often end files with one. A line that is not JSON stops the
// source with NAME:LINE:COL: a source has no item to hang an error on, and
// skipping the line would lose it silently.
func emitJSONL(ctx context.Context, r io.Reader, name string, max int, emit func(any) error) error {
	lr := newLineReader(r, max)
	for {
		line, err := lr.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return lr.readError(name, err)
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var v any
		if err := decodeJSON(line, &v); err != nil {
			var je *jsonError
			if errors.As(err, &je) && je.col > 0 {
				return fmt.Errorf("%s:%d:%d: invalid JSON: %s; each line must hold one JSON value", name, lr.line, je.col, je.msg)
			}
			return fmt.Errorf("%s:%d: invalid JSON: %v; each line must hold one JSON value", name, lr.line, err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := emit(v); err != nil {
			return err
		}
	}
}

// jsonError is a JSON syntax problem at a 1-based byte column.
type jsonError struct {
	col int64
	msg string
}

func (e *jsonError) Error() string { return fmt.Sprintf("column %d: %s", e.col, e.msg) }

// decodeJSON decodes exactly one JSON value, with integers as int64 (floats
// when they do not fit) rather than float64, so ids survive intact.
func decodeJSON(b []byte, v *any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		var se *json.SyntaxError
		switch {
		case errors.As(err, &se):
			return &jsonError{col: max(se.Offset, 1), msg: se.Error()}
		case errors.Is(err, io.ErrUnexpectedEOF):
			return &jsonError{col: int64(len(b)), msg: "unexpected end of line: the value is incomplete"}
		}
		return err
	}
	if off := dec.InputOffset(); len(bytes.TrimSpace(b[off:])) > 0 {
		return &jsonError{col: off + 1 + int64(len(b[off:])-len(bytes.TrimLeft(b[off:], " \t\r"))), msg: "unexpected text after the value"}
	}
	*v = steps.JSONNumbers(*v)
	return nil
}

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

// lineReader yields the lines of r without their "\n" or "\r\n". A line may
// be of any length: it is assembled from buffer-sized pieces, so a 10 MB
// line costs 10 MB once rather than failing like bufio.Scanner would.
type lineReader struct {
	r    *bufio.Reader
	buf  []byte
	line int64
}

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 64<<10)}
}

// next returns the next line, valid until the following call, and io.EOF
// after the last one. A final line without "\n" is still a line.
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
				lr.buf = append(lr.buf, chunk...)
				line = lr.buf
			}
			lr.line++
			line = line[:len(line)-1]
			return bytes.TrimSuffix(line, []byte{'\r'}), nil
		case errors.Is(err, bufio.ErrBufferFull):
			lr.buf = append(lr.buf, chunk...)
		case errors.Is(err, io.EOF):
			lr.buf = append(lr.buf, chunk...)
			if len(lr.buf) == 0 {
				return nil, io.EOF
			}
			lr.line++
			return bytes.TrimSuffix(lr.buf, []byte{'\r'}), nil
		default:
			return nil, err
		}
	}
}

// openFile opens a file for reading, transparently decompressing ".gz".
func openFile(path string) (io.ReadCloser, error) {
	f, err := os.Open(path)
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
func emitLines(ctx context.Context, r io.Reader, name string, skipEmpty bool, emit func(any) error) error {
	lr := newLineReader(r)
	for {
		line, err := lr.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s:%d: read error: %v", name, lr.line+1, err)
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
func emitJSONL(ctx context.Context, r io.Reader, name string, emit func(any) error) error {
	lr := newLineReader(r)
	for {
		line, err := lr.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s:%d: read error: %v", name, lr.line+1, err)
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

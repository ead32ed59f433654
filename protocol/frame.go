package protocol

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
)

// MaxFrame bounds the body of one frame. A longer length prefix means the
// stream is corrupt (a step wrote to the protocol descriptor, say), not that
// an item is that large.
const MaxFrame = 1 << 30

// Writer writes length-prefixed frames to a byte stream. It is safe for
// concurrent use; each message is written with a single Write call.
type Writer struct {
	mu      sync.Mutex
	w       io.Writer
	buf     []byte
	compact bool
}

func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Compact makes the writer write items and results in their compact form
// (AppendCompact), once the peer is known to speak protocol version 2.
func (w *Writer) Compact() {
	w.mu.Lock()
	w.compact = true
	w.mu.Unlock()
}

// Write encodes m and writes it as one frame. An encoding error leaves the
// stream untouched.
func (w *Writer) Write(m Message) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	buf, err := w.appendFrame(w.buf[:0], m)
	if err != nil {
		return err
	}
	_, err = w.w.Write(buf)
	if cap(buf) <= 1<<20 {
		w.buf = buf // keep a modest buffer; drop ones a huge batch grew
	}
	return err
}

// AppendFrame appends m to buf as a whole frame, in the form this writer
// writes, for WriteFrame: a caller encodes what it must read under its own
// lock, and writes after releasing it.
func (w *Writer) AppendFrame(buf []byte, m Message) ([]byte, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.appendFrame(buf, m)
}

func (w *Writer) appendFrame(buf []byte, m Message) ([]byte, error) {
	appendBody := AppendBody
	if w.compact {
		appendBody = AppendCompact
	}
	start := len(buf)
	buf, err := appendBody(append(buf, 0, 0, 0, 0), m)
	if err != nil {
		return buf[:start], err
	}
	if n := len(buf) - start - 4; n > MaxFrame {
		return buf[:start], fmt.Errorf("protocol: %s message of %d bytes is over the %d-byte frame limit", m.Type(), n, MaxFrame)
	}
	binary.BigEndian.PutUint32(buf[start:], uint32(len(buf)-start-4))
	return buf, nil
}

// WriteFrame writes frames made by AppendFrame, with a single Write call.
func (w *Writer) WriteFrame(frames []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, err := w.w.Write(frames)
	return err
}

// Reader reads frames written by Writer. It is not safe for concurrent use.
type Reader struct {
	r   *bufio.Reader
	buf []byte
	sc  *scratch
}

func NewReader(r io.Reader) *Reader { return &Reader{r: bufio.NewReaderSize(r, 64<<10)} }

// Reuse makes Read reuse the memory of the *Items and *Results it returns:
// each is then valid only until the next Read. A reader that handles each
// message before reading the next allocates nothing per frame for them.
func (r *Reader) Reuse() { r.sc = &scratch{} }

// Read returns the next message. At a clean end of stream (between frames)
// it returns io.EOF; a stream cut inside a frame gives io.ErrUnexpectedEOF.
func (r *Reader) Read() (Message, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r.r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > MaxFrame {
		return nil, fmt.Errorf("protocol: corrupt stream: frame length %d", n)
	}
	if int(n) <= r.r.Size() {
		// A frame that fits the read buffer is parsed where it lies, not
		// copied out first: nothing parsed refers to the body.
		body, err := r.r.Peek(int(n))
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		m, err := parseBody(body, r.sc)
		_, _ = r.r.Discard(int(n))
		r.trim()
		return m, err
	}
	// The body grows as its bytes arrive: a corrupt length (up to
	// MaxFrame) must not allocate a GiB before the stream ends.
	body := r.buf[:0]
	for len(body) < int(n) {
		chunk := min(int(n)-len(body), max(len(body), 1<<20))
		body = slices.Grow(body, chunk)
		k, err := io.ReadFull(r.r, body[len(body):len(body)+chunk])
		body = body[:len(body)+k]
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	r.buf = body
	m, err := parseBody(body, r.sc)
	if cap(r.buf) > 1<<20 {
		r.buf = nil
	}
	r.trim()
	return m, err
}

// trim drops the scratch slices a huge batch grew: it keeps modest ones.
func (r *Reader) trim() {
	if sc := r.sc; sc != nil && (cap(sc.items) > 1<<14 || cap(sc.results.Results) > 1<<14) {
		r.sc = &scratch{}
	}
}

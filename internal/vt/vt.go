// Package vt is a small terminal screen: it interprets the bytes a program
// writes to a terminal and keeps what a person would see. Tests of what flow
// shows on a terminal (progress bars next to results) read this screen
// rather than the byte stream, since the bytes contain text that later
// cursor movements overwrite.
//
// It implements what flow and the terminal's own line discipline emit:
// printable text with the pending wrap of a VT100 at the last column, CR,
// LF (scrolling at the bottom into a history), BS, TAB, and the CSI
// sequences cursor up/down/forward/back (A B C D), cursor position (H),
// erase in line (K) and erase in display (J). Any other escape sequence is
// recorded in Unknown so a test can fail instead of trusting a screen that
// was not interpreted. Every rune takes one column: wide (East Asian)
// characters and combining marks are not measured.
package vt

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Screen is a terminal of fixed size with a history of the lines that
// scrolled off its top. The zero value is not usable; use New.
type Screen struct {
	cols, rows int
	grid       [][]rune
	row, col   int
	wrapNext   bool // the last column was written: the next rune wraps first
	history    []string

	pending []byte // an incomplete escape sequence or UTF-8 rune
	// Unknown lists the escape sequences the screen did not interpret.
	Unknown []string
	// ONLCR makes LF also return to the first column, as a terminal's line
	// discipline does by default (stty onlcr). Set it when the bytes did not
	// pass through a real terminal.
	ONLCR bool
}

// New returns an empty screen of cols columns and rows rows.
func New(cols, rows int) *Screen {
	s := &Screen{cols: cols, rows: rows}
	s.grid = make([][]rune, rows)
	for i := range s.grid {
		s.grid[i] = s.blank()
	}
	return s
}

func (s *Screen) blank() []rune {
	l := make([]rune, s.cols)
	for i := range l {
		l[i] = ' '
	}
	return l
}

// Write interprets p; sequences split across writes are handled.
func (s *Screen) Write(p []byte) (int, error) {
	b := append(s.pending, p...)
	s.pending = nil
	for len(b) > 0 {
		n := s.step(b)
		if n == 0 { // incomplete: wait for more bytes
			s.pending = append([]byte(nil), b...)
			break
		}
		b = b[n:]
	}
	return len(p), nil
}

// step interprets the start of b and returns how many bytes it used, or 0
// when b holds only the beginning of a sequence.
func (s *Screen) step(b []byte) int {
	switch c := b[0]; {
	case c == '\r':
		s.col, s.wrapNext = 0, false
		return 1
	case c == '\n':
		s.lineFeed()
		if s.ONLCR {
			s.col = 0
		}
		return 1
	case c == '\b':
		if s.col > 0 {
			s.col--
		}
		s.wrapNext = false
		return 1
	case c == '\t':
		s.col = min(s.cols-1, (s.col/8+1)*8)
		return 1
	case c == 0x1b:
		return s.escape(b)
	case c < 0x20 || c == 0x7f:
		return 1 // bell and other controls change nothing visible
	}
	if !utf8.FullRune(b) {
		return 0
	}
	r, n := utf8.DecodeRune(b)
	s.put(r)
	return n
}

func (s *Screen) put(r rune) {
	if s.wrapNext {
		s.col = 0
		s.lineFeed()
	}
	s.grid[s.row][s.col] = r
	if s.col == s.cols-1 {
		s.wrapNext = true
	} else {
		s.col++
	}
}

func (s *Screen) lineFeed() {
	s.wrapNext = false
	if s.row < s.rows-1 {
		s.row++
		return
	}
	s.history = append(s.history, trim(s.grid[0]))
	copy(s.grid, s.grid[1:])
	s.grid[s.rows-1] = s.blank()
}

// escape interprets ESC [ params final; other ESC sequences are recorded.
func (s *Screen) escape(b []byte) int {
	if len(b) < 2 {
		return 0
	}
	if b[1] != '[' {
		s.Unknown = append(s.Unknown, strconv.Quote(string(b[:2])))
		return 2
	}
	i := 2
	for i < len(b) && (b[i] >= 0x30 && b[i] <= 0x3f) { // parameter bytes
		i++
	}
	for i < len(b) && (b[i] >= 0x20 && b[i] <= 0x2f) { // intermediate bytes
		i++
	}
	if i == len(b) {
		return 0
	}
	final := b[i]
	params := string(b[2:i])
	n := func(k, def int) int {
		f := strings.Split(params, ";")
		if k >= len(f) || f[k] == "" {
			return def
		}
		v, err := strconv.Atoi(f[k])
		if err != nil {
			return def
		}
		return v
	}
	s.wrapNext = false
	switch final {
	case 'A':
		s.row = max(0, s.row-max(1, n(0, 1)))
	case 'B':
		s.row = min(s.rows-1, s.row+max(1, n(0, 1)))
	case 'C':
		s.col = min(s.cols-1, s.col+max(1, n(0, 1)))
	case 'D':
		s.col = max(0, s.col-max(1, n(0, 1)))
	case 'H':
		s.row = min(s.rows-1, max(1, n(0, 1))-1)
		s.col = min(s.cols-1, max(1, n(1, 1))-1)
	case 'K':
		l := s.grid[s.row]
		from, to := s.col, s.cols
		switch n(0, 0) {
		case 1:
			from, to = 0, s.col+1
		case 2:
			from = 0
		}
		for j := from; j < to; j++ {
			l[j] = ' '
		}
	case 'J':
		switch n(0, 0) {
		case 0:
			for j := s.col; j < s.cols; j++ {
				s.grid[s.row][j] = ' '
			}
			for r := s.row + 1; r < s.rows; r++ {
				s.grid[r] = s.blank()
			}
		case 1:
			for r := 0; r < s.row; r++ {
				s.grid[r] = s.blank()
			}
			for j := 0; j <= s.col; j++ {
				s.grid[s.row][j] = ' '
			}
		default:
			for r := range s.grid {
				s.grid[r] = s.blank()
			}
		}
	default:
		s.Unknown = append(s.Unknown, strconv.Quote(string(b[:i+1])))
	}
	return i + 1
}

func trim(l []rune) string { return strings.TrimRight(string(l), " ") }

// Lines returns the screen's rows, trailing spaces removed, without the
// empty rows at the bottom.
func (s *Screen) Lines() []string {
	out := make([]string, s.rows)
	last := -1
	for i, l := range s.grid {
		out[i] = trim(l)
		if out[i] != "" {
			last = i
		}
	}
	return out[:last+1]
}

// All returns the history followed by the screen: every line still
// visible to a person who scrolls back.
func (s *Screen) All() []string {
	return append(append([]string(nil), s.history...), s.Lines()...)
}

// String renders the screen, history included, for test failure messages.
func (s *Screen) String() string {
	var b strings.Builder
	for i, l := range s.All() {
		fmt.Fprintf(&b, "%3d |%s\n", i+1, l)
	}
	return b.String()
}

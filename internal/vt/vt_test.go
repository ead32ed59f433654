package vt

import (
	"slices"
	"testing"
)

func check(t *testing.T, s *Screen, want ...string) {
	t.Helper()
	if got := s.All(); !slices.Equal(got, want) {
		t.Errorf("screen:\n%s\nwant %q", s, want)
	}
	if len(s.Unknown) > 0 {
		t.Errorf("uninterpreted sequences: %v", s.Unknown)
	}
}

func TestCursorAndErase(t *testing.T) {
	s := New(20, 5)
	s.Write([]byte("one\r\ntwo\r\nthree\r\n"))
	// Up two rows, overwrite "two" and erase the rest of the screen.
	s.Write([]byte("\x1b[2A\rTWO\x1b[J"))
	check(t, s, "one", "TWO")
	s.Write([]byte("\r\n\x1b[1Aabc\x1b[2K|"))
	check(t, s, "one", "   |")
	s.Write([]byte("\rxyz\x1b[2D\x1b[K"))
	check(t, s, "one", "x")
	s.Write([]byte("\x1b[3;2HQ\x1b[BR\x1b[2C!"))
	check(t, s, "one", "x", " Q", "  R  !")
}

func TestScrollKeepsHistoryAndCursorUpStopsAtTop(t *testing.T) {
	s := New(10, 3)
	s.Write([]byte("1\r\n2\r\n3\r\n4\r\n"))
	check(t, s, "1", "2", "3", "4")
	if got := s.Lines(); !slices.Equal(got, []string{"3", "4"}) {
		t.Errorf("screen %q", got)
	}
	s.Write([]byte("\x1b[9Ax"))
	check(t, s, "1", "2", "x", "4")
}

func TestPendingWrapAndSplitSequences(t *testing.T) {
	s := New(4, 3)
	// Writing the last column does not move to the next line until one more
	// rune comes: a CR LF right after it makes one line break, not two.
	s.Write([]byte("abcd\r\nefghi"))
	check(t, s, "abcd", "efgh", "i")
	s = New(10, 3)
	for _, b := range []byte("é\x1b[1A\x1b[2K") {
		s.Write([]byte{b})
	}
	s.Write([]byte("z"))
	check(t, s, " z")
}

func TestONLCR(t *testing.T) {
	s := New(10, 3)
	s.ONLCR = true
	s.Write([]byte("ab\ncd\n"))
	check(t, s, "ab", "cd")
	s = New(10, 3)
	s.Write([]byte("ab\ncd"))
	check(t, s, "ab", "  cd")
}

func TestUnknownSequencesAreReported(t *testing.T) {
	s := New(10, 2)
	s.Write([]byte("a\x1b[31mb\x1b7"))
	if len(s.Unknown) != 2 {
		t.Errorf("unknown %q, want the colour and the save-cursor sequences", s.Unknown)
	}
}

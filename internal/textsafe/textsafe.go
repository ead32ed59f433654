// Package textsafe makes text that came from items, results or errors safe
// to print on a terminal or in a log line: it cannot move the cursor,
// change colours, clear the screen (ANSI escape sequences), reorder what
// is shown (Unicode bidirectional controls), or start a line of its own
// that looks like flow's (a newline followed by "flow: ... succeeded").
// Everything it changes is shown escaped, so nothing is hidden either.
package textsafe

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Line returns s on one line with every control character escaped: C0
// controls (newline, carriage return, ESC...) and DEL as \n, \r, \t or
// \xNN, C1 controls and bidirectional formatting characters as \uNNNN,
// invalid UTF-8 bytes as \xNN. Text without any of them is returned as is.
func Line(s string) string {
	if clean(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case unsafeRune(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

func clean(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f || c >= 0x80 {
			if c >= 0x80 {
				// Multi-byte: decide per rune.
				for _, r := range s[i:] {
					if r == utf8.RuneError || r < 0x20 || r == 0x7f || unsafeRune(r) {
						return false
					}
				}
				return utf8.ValidString(s)
			}
			return false
		}
	}
	return true
}

// unsafeRune: C1 controls (a terminal may read U+009B as CSI) and the
// bidirectional formatting characters that make text read in another
// order than it is stored ("Trojan Source").
func unsafeRune(r rune) bool {
	return r >= 0x80 && r < 0xa0 ||
		r >= 0x202a && r <= 0x202e ||
		r >= 0x2066 && r <= 0x2069 ||
		r == 0x200e || r == 0x200f || r == 0x061c
}

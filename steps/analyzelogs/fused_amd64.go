//go:build amd64 && !purego

package analyzelogs

import (
	"math/bits"

	"golang.org/x/sys/cpu"
)

// haveFused says the CPU can run the one-pass kernel.
var haveFused = cpu.X86.HasAVX2 && cpu.X86.HasPOPCNT

//go:noescape
func chunkAVX2(b []byte, set uint32, two bool) (nl int, off int, cand uint64, lf uint64)

//go:noescape
func chunkAVX2CR(b []byte, set uint32) (nl int, off int, cand uint64, lf uint64)

// nextChunkCR is nextChunk for CRLF input: besides the bytes of set, cand
// marks the carriage returns not followed by a line feed, and no others.
// len(b) must be a multiple of 64, and b[len(b)] must be readable (b is a
// prefix of a longer slice).
func nextChunkCR(b []byte, set uint32) (nl int, off int, cand uint64, lf uint64) {
	return chunkAVX2CR(b, set)
}

// nextChunk counts the line feeds of b's 64-byte chunks up to the first
// chunk holding one of the four bytes packed in set, and returns its offset
// and its masks (bit i for byte i): those bytes, and the line feeds. off is
// -1 when there is none. len(b) must be a multiple of 64.
func nextChunk(b []byte, set uint32) (nl int, off int, cand uint64, lf uint64) {
	// Bytes 2 and 3 repeat bytes 0 and 1 when there are one or two (see
	// fusedSet).
	return chunkAVX2(b, set, set>>16 == set&0xffff)
}

// nextCand counts the line feeds of b up to the first byte that is one of
// the four packed in set, and returns that byte's offset, or -1 after
// counting every line feed of b.
func nextCand(b []byte, set uint32) (nl int, at int) {
	n := len(b) &^ 63
	if n > 0 {
		var off int
		var cand, lf uint64
		nl, off, cand, lf = nextChunk(b[:n], set)
		if off >= 0 {
			q := bits.TrailingZeros64(cand)
			return nl + bits.OnesCount64(lf&(1<<q-1)), off + q
		}
	}
	c0, c1, c2, c3 := byte(set), byte(set>>8), byte(set>>16), byte(set>>24)
	for i := n; i < len(b); i++ {
		switch b[i] {
		case c0, c1, c2, c3:
			return nl, i
		case '\n':
			nl++
		}
	}
	return nl, -1
}

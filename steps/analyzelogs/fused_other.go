//go:build !amd64 || purego

package analyzelogs

// haveFused is false where there is no one-pass kernel: the scanner then
// makes one vectorised pass for line feeds and one per searched byte.
const haveFused = false

func nextCand(b []byte, set uint32) (nl int, at int) {
	panic("analyzelogs: no one-pass kernel on this platform")
}

func nextChunk(b []byte, set uint32) (nl int, off int, cand uint64, lf uint64) {
	panic("analyzelogs: no one-pass kernel on this platform")
}

func nextChunkCR(b []byte, set uint32) (nl int, off int, cand uint64, lf uint64) {
	panic("analyzelogs: no one-pass kernel on this platform")
}

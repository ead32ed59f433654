//go:build amd64 && !purego

package jpegdec

import "golang.org/x/sys/cpu"

// useAVX2 routes blocks with coefficients past the first row to
// idctAVX2. A variable so that the tests can run the Go code too.
var useAVX2 = cpu.X86.HasAVX2

// idctAVX2 is the dequantization, idctRows, idctCols and the clamped store
// of idct for a whole block, eight rows or columns at a time in the lanes of AVX2 registers:
// the same int32 operations (VPMULLD keeps the low 32 bits of products,
// as Go's int32 multiplication does), so the same pixels (TestIDCT).
// dst must hold 7*stride+8 bytes.
//
//go:noescape
func idctAVX2(b, q *block, dst *byte, stride int)

// idctK holds the constants of idctAVX2, each repeated in 8 lanes. The
// dctBox rotations y0 = k*(x0+x1) + (s-k)*x1, y1 = k*(x0+x1) - (k+s)*x0
// take three: k, s-k and k+s.
var idctK = func() (t [17][8]int32) {
	box := func(i int, kcos, ksin int32) {
		t[i] = splat(kcos)
		t[i+1] = splat(ksin - kcos)
		t[i+2] = splat(kcos + ksin)
	}
	box(0, c(sqrt2inv_cos6, 18), -c(sqrt2inv_sin6, 18))
	t[3] = splat(c(sqrt2inv, 8))
	box(4, c(cos3, 12), -c(sin3, 12))
	box(7, c(cos1, 12), -c(sin1, 12))
	box(10, c(sqrt2inv_cos6, 12), -c(sqrt2inv_sin6, 12))
	t[13] = splat(c(sqrt2inv, 14))
	t[14] = splat(1 << 19)
	t[15] = splat(128 | 128<<16) // 16 int16 lanes of 128
	t[16] = [8]int32{0, 4, 1, 5, 2, 6, 3, 7}
	return t
}()

func splat(v int32) [8]int32 { return [8]int32{v, v, v, v, v, v, v, v} }

package jpegdec

import (
	"math/rand/v2"
	"testing"
)

// refIDCT is image/jpeg's reconstructBlock (dequantization, idctRows then
// idctCols, level shift and clamp), copied verbatim but for q being in
// natural order: the reference the shortcuts and the vector code are held
// to.
func refIDCT(b, q *block, dst []byte, stride int) {
	for i := range b {
		b[i] *= q[i]
	}
	for i := range 8 {
		x := b[8*i : 8*i+8 : 8*i+8]
		x0 := x[0]
		x7 := x[1]
		x2 := x[2]
		x5 := x[3]
		x1 := x[4]
		x6 := x[5]
		x3 := x[6]
		x4 := x[7]
		x0 <<= 17
		x1 <<= 17
		x0, x1 = x0+x1, x0-x1
		x2, x3 = dctBox(x2, x3, c(sqrt2inv_cos6, 18), -c(sqrt2inv_sin6, 18))
		x1, x2 = x1+x2, x1-x2
		x0, x3 = x0+x3, x0-x3
		x4 <<= 7
		x7 <<= 7
		x7, x4 = x7+x4, x7-x4
		x6 = x6 * c(sqrt2inv, 8)
		x5 = x5 * c(sqrt2inv, 8)
		x7, x5 = x7+x5, x7-x5
		x4, x6 = x4+x6, x4-x6
		x4, x7 = dctBox(x4>>2, x7>>2, c(cos3, 12), -c(sin3, 12))
		x5, x6 = dctBox(x5>>2, x6>>2, c(cos1, 12), -c(sin1, 12))
		x0, x7 = x0+x7, x0-x7
		x1, x6 = x1+x6, x1-x6
		x2, x5 = x2+x5, x2-x5
		x3, x4 = x3+x4, x3-x4
		x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7] = x0, x1, x2, x3, x4, x5, x6, x7
	}
	for i := range 8 {
		x0 := b[0*8+i]
		x7 := b[1*8+i]
		x2 := b[2*8+i]
		x5 := b[3*8+i]
		x1 := b[4*8+i]
		x6 := b[5*8+i]
		x3 := b[6*8+i]
		x4 := b[7*8+i]
		x0 += 1 << 19
		x0, x1 = (x0+x1)>>2, (x0-x1)>>2
		x2, x3 = dctBox(x2>>13, x3>>13, c(sqrt2inv_cos6, 12), -c(sqrt2inv_sin6, 12))
		x1, x2 = x1+x2, x1-x2
		x0, x3 = x0+x3, x0-x3
		x7, x4 = x7+x4, x7-x4
		x5 = (x5 >> 13) * c(sqrt2inv, 14)
		x6 = (x6 >> 13) * c(sqrt2inv, 14)
		x7, x5 = x7+x5, x7-x5
		x4, x6 = x4+x6, x4-x6
		x4, x7 = dctBox(x4>>14, x7>>14, c(cos3, 12), -c(sin3, 12))
		x5, x6 = dctBox(x5>>14, x6>>14, c(cos1, 12), -c(sin1, 12))
		x0, x7 = x0+x7, x0-x7
		x1, x6 = x1+x6, x1-x6
		x2, x5 = x2+x5, x2-x5
		x3, x4 = x3+x4, x3-x4
		b[0*8+i], b[1*8+i], b[2*8+i], b[3*8+i] = x0>>18, x1>>18, x2>>18, x3>>18
		b[4*8+i], b[5*8+i], b[6*8+i], b[7*8+i] = x4>>18, x5>>18, x6>>18, x7>>18
	}
	for y := 0; y < 8; y++ {
		for x := 0; x < 8; x++ {
			c := b[y*8+x]
			if c < -128 {
				c = 0
			} else if c > 127 {
				c = 255
			} else {
				c += 128
			}
			dst[y*stride+x] = uint8(c)
		}
	}
}

// TestIDCT holds idct (shortcuts, and the vector code where the CPU has
// it) to image/jpeg's on blocks of every sparsity pattern the shortcuts
// tell apart, with the magnitudes of real coefficients and with any int32
// (corrupt files: the arithmetic must wrap as image/jpeg's does).
func TestIDCT(t *testing.T) {
	defer func(v bool) { useAVX2 = v }(useAVX2)
	for _, vector := range []bool{false, true} {
		if vector && !useAVX2 {
			t.Log("no AVX2 here: the vector code is not tested")
			continue
		}
		useAVX2 = vector
		testIDCT(t)
	}
}

func testIDCT(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const stride = 13
	for trial := range 200000 {
		var b block
		var nz uint64
		// Which coefficients are set: the first row only, the first three
		// rows and columns, anything.
		var mask uint64
		switch trial % 5 {
		case 0:
			mask = 1
		case 1:
			mask = 0xff
		case 2:
			mask = 0x070707
		case 3:
			mask = 0x0707070707070707
		default:
			mask = ^uint64(0)
		}
		density := r.IntN(64) + 1
		for i := range 64 {
			if mask>>i&1 == 0 || r.IntN(64) >= density {
				continue
			}
			var v int32
			switch {
			case trial%7 == 0:
				v = int32(r.Uint32()) // anything, wrapping included
			case trial%7 == 1:
				v = int32(r.IntN(1<<16)) - 1<<15
			default:
				v = int32(r.IntN(2048)) - 1024
			}
			b[i] = v
			if v != 0 || r.IntN(4) == 0 {
				nz |= 1 << i
			}
		}
		nz |= 1 // the DC bit is always set by decodeBlock
		var q block
		for i := range q {
			switch trial % 3 {
			case 0:
				q[i] = int32(r.IntN(256))
			case 1:
				q[i] = 1 + int32(r.IntN(32))
			default:
				q[i] = int32(r.IntN(1 << 16)) // 16-bit tables
			}
		}
		if r.IntN(8) == 0 {
			nz |= r.Uint64() // a mask may claim zeros to be nonzero
		}
		want := make([]byte, 7*stride+8)
		got := make([]byte, 7*stride+8)
		wb, gb := b, b
		refIDCT(&wb, &q, want, stride)
		idct(&gb, &q, nz, got, stride)
		for y := range 8 {
			for x := range 8 {
				if got[y*stride+x] != want[y*stride+x] {
					t.Fatalf("AVX2 %v, trial %d: block %v (nz %x): pixel (%d,%d) = %d, want %d", useAVX2, trial, b, nz, x, y, got[y*stride+x], want[y*stride+x])
				}
			}
		}
	}
}

// Copyright 2025 The Go Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

package jpegdec

// The inverse DCT is image/jpeg's (Go 1.25 and later): Loeffler,
// Lightenberg and Moschytz's 11-multiply algorithm in fixed point, rows
// then columns. See image/jpeg/dct.go for the derivation and the
// precision notes. Every operation here is the same int32 operation, in
// the same order, so the output is the same to the bit; what changes is
// that work whose result is known is skipped:
//
//   - a row whose coefficients are all zero stays zero;
//   - a row whose only nonzero coefficient is the first becomes eight
//     copies of it, shifted;
//   - when only the first row has nonzero coefficients, every column
//     holds one nonzero value and each output column is one value.
//
// The results are clamped and written straight into the image plane.

const (
	cos1          = 1130768441178740757 // fix cos 1*pi/16
	sin1          = 224923827593068887  // fix sin 1*pi/16
	cos3          = 958619196450722178  // fix cos 3*pi/16
	sin3          = 640528868967736374  // fix sin 3*pi/16
	sqrt2inv      = 815238614083298888  // fix 1/sqrt 2
	sqrt2inv_cos6 = 311978311033955632  // fix (1/sqrt 2)*cos 6*pi/16
	sqrt2inv_sin6 = 753182269664427492  // fix (1/sqrt 2)*sin 6*pi/16
)

func c(x uint64, bits int) int32 {
	return int32((x + (1 << (59 - bits))) >> (60 - bits))
}

// dctBox implements a 3-multiply, 3-add rotation+scaling.
func dctBox(x0, x1, kcos, ksin int32) (y0, y1 int32) {
	ksum := kcos * (x0 + x1)
	y0 = ksum + (ksin-kcos)*x1
	y1 = ksum - (kcos+ksin)*x0
	return y0, y1
}

// clamp level-shifts an output sample by 128 and clips it to [0, 255].
// x is IDCT*8 >> 3, far inside the int32 range.
func clamp(x int32) uint8 {
	x += 128
	if uint32(x) > 255 {
		x = ^(x >> 31) & 255
	}
	return uint8(x)
}

// idct dequantizes b with q (both in natural order), transforms it and
// writes the 8x8 pixels at dst, rows stride bytes apart. The nonzero
// coefficients of b are among those nz has a bit for. len(dst) >=
// 7*stride+8.
//
// image/jpeg multiplies every coefficient by its quantizer before the
// transform, as here; only the place differs.
func idct(b *block, q *block, nz uint64, dst []byte, stride int) {
	if nz>>8 == 0 {
		// Only the first row has coefficients: after the row pass every
		// column is (x, 0, 0, 0, 0, 0, 0, 0), which the column pass turns
		// into eight copies of (x + 1<<19) >> 20.
		var out [8]uint8
		if nz&0xfe == 0 {
			v := clamp((b[0]*q[0]<<17 + 1<<19) >> 20)
			out = [8]uint8{v, v, v, v, v, v, v, v}
		} else {
			for i := range 8 {
				b[i] *= q[i]
			}
			idctRow(b[0:8:8])
			for i := range 8 {
				out[i] = clamp((b[i] + 1<<19) >> 20)
			}
		}
		for y := range 8 {
			*(*[8]byte)(dst[y*stride:]) = out
		}
		return
	}
	if useAVX2 {
		_ = dst[7*stride+7]
		idctAVX2(b, q, &dst[0], stride)
		return
	}
	for i := range b {
		b[i] *= q[i]
	}
	for y := range 8 {
		row := uint8(nz >> (8 * y))
		x := b[8*y : 8*y+8 : 8*y+8]
		switch {
		case row == 0:
		case row&0xfe == 0:
			v := x[0] << 17
			x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7] = v, v, v, v, v, v, v, v
		case row&0xf8 == 0:
			idctRow3(x)
		default:
			idctRow(x)
		}
	}
	if nz>>24 == 0 {
		idctCols3(b, dst, stride)
	} else {
		idctCols(b, dst, stride)
	}
}

// idctRow applies the 1D IDCT to one row (image/jpeg's idctRows body).
// Inputs are UQ8.0; outputs are Q9.20.
func idctRow(x []int32) {
	x = x[:8:8]
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

	x[0] = x0
	x[1] = x1
	x[2] = x2
	x[3] = x3
	x[4] = x4
	x[5] = x5
	x[6] = x6
	x[7] = x7
}

// idctRow3 is idctRow for a row whose last five coefficients are zero:
// the same statements, which the compiler simplifies with x[3:] known to be
// zero (x+0, x*0 and 0>>k are exact in int32 arithmetic too).
func idctRow3(x []int32) {
	x = x[:8:8]
	x0 := x[0]
	x7 := x[1]
	x2 := x[2]
	var x5, x1, x6, x3, x4 int32

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

	x[0] = x0
	x[1] = x1
	x[2] = x2
	x[3] = x3
	x[4] = x4
	x[5] = x5
	x[6] = x6
	x[7] = x7
}

// idctCols applies the 1D IDCT to the columns of b (image/jpeg's
// idctCols), then level-shifts, clamps and stores them.
func idctCols(b *block, dst []byte, stride int) {
	d0 := (*[8]byte)(dst[0*stride:])
	d1 := (*[8]byte)(dst[1*stride:])
	d2 := (*[8]byte)(dst[2*stride:])
	d3 := (*[8]byte)(dst[3*stride:])
	d4 := (*[8]byte)(dst[4*stride:])
	d5 := (*[8]byte)(dst[5*stride:])
	d6 := (*[8]byte)(dst[6*stride:])
	d7 := (*[8]byte)(dst[7*stride:])
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

		d0[i] = clamp(x0 >> 18)
		d1[i] = clamp(x1 >> 18)
		d2[i] = clamp(x2 >> 18)
		d3[i] = clamp(x3 >> 18)
		d4[i] = clamp(x4 >> 18)
		d5[i] = clamp(x5 >> 18)
		d6[i] = clamp(x6 >> 18)
		d7[i] = clamp(x7 >> 18)
	}
}

// idctCols3 is idctCols for a block whose rows 3 to 7 are zero, simplified
// by the compiler as idctRow3 is.
func idctCols3(b *block, dst []byte, stride int) {
	d0 := (*[8]byte)(dst[0*stride:])
	d1 := (*[8]byte)(dst[1*stride:])
	d2 := (*[8]byte)(dst[2*stride:])
	d3 := (*[8]byte)(dst[3*stride:])
	d4 := (*[8]byte)(dst[4*stride:])
	d5 := (*[8]byte)(dst[5*stride:])
	d6 := (*[8]byte)(dst[6*stride:])
	d7 := (*[8]byte)(dst[7*stride:])
	for i := range 8 {
		x0 := b[0*8+i]
		x7 := b[1*8+i]
		x2 := b[2*8+i]
		var x5, x1, x6, x3, x4 int32

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

		d0[i] = clamp(x0 >> 18)
		d1[i] = clamp(x1 >> 18)
		d2[i] = clamp(x2 >> 18)
		d3[i] = clamp(x3 >> 18)
		d4[i] = clamp(x4 >> 18)
		d5[i] = clamp(x5 >> 18)
		d6[i] = clamp(x6 >> 18)
		d7[i] = clamp(x7 >> 18)
	}
}

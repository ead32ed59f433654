// Copyright 2009 The Go Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

// Package jpegdec is the standard library's image/jpeg decoder cut down to
// baseline and extended sequential Huffman JPEGs (grayscale and YCbCr, every
// sampling layout image/jpeg reads) and specialised for speed. On the bench
// harness's 1920x1080 quality 90 photos it decodes in about 7 ms what
// image/jpeg decodes in about 33 (BenchmarkDecode):
//
//   - it decodes from a byte slice. Each entropy-coded segment is first
//     copied without its byte stuffing into a zero-padded buffer, so that
//     the 64-bit bit accumulator refills with one 8-byte load, with no test
//     for 0xFF or for the end of the data in the loop (image/jpeg: one
//     byte-stuffed byte per call, through an io.Reader);
//   - one 10-bit table probe yields the code length, the run, the size and
//     the sign-extended coefficient of most AC codes (image/jpeg: an 8-bit
//     probe for the symbol, then a separate call for the value);
//   - the inverse DCT is image/jpeg's integer algorithm, operation for
//     operation: on amd64 with AVX2 on eight rows or columns at once
//     (idct_amd64.s, with the dequantization and the clamped store), else
//     in Go, skipping rows and columns known to be zero; blocks with only
//     a DC coefficient are one value. Pixels go straight into the planes.
//
// The decoded image is the one image/jpeg.Decode returns, pixel for pixel
// (same type, same planes, same strides; tested on generated and foreign
// files, synthetic streams, damaged and cut data, and fuzzed). Everything
// else — progressive and arithmetic coding, CMYK and YCCK, RGB-coded
// JPEGs, 12-bit samples, Huffman tables with more codes than a prefix code
// can hold — makes Decode return ErrUnsupported, and the caller hands the
// data to image/jpeg, so nothing that image/jpeg decodes stops decoding.
// Build with -tags purego to leave out the assembly.
package jpegdec

import (
	"errors"
	"image"
	"io"
)

// ErrUnsupported says that the data uses a feature this decoder leaves to
// image/jpeg. It does not say that the data is valid: image/jpeg decides.
var ErrUnsupported = errors.New("jpegdec: JPEG feature left to image/jpeg")

// A FormatError reports that the input is not a valid JPEG. Its text is
// image/jpeg's for the same fault.
type FormatError string

func (e FormatError) Error() string { return "invalid JPEG format: " + string(e) }

// Component specification, specified in section B.2.2.
type component struct {
	h  int   // Horizontal sampling factor.
	v  int   // Vertical sampling factor.
	c  uint8 // Component identifier.
	tq uint8 // Quantization table destination selector.
}

const (
	dcTable = 0
	acTable = 1
	maxTc   = 1
	maxTh   = 3
	maxTq   = 3

	maxComponents = 4
	blockSize     = 64
)

const (
	sof0Marker = 0xc0 // Start Of Frame (Baseline Sequential).
	sof1Marker = 0xc1 // Start Of Frame (Extended Sequential).
	sof2Marker = 0xc2 // Start Of Frame (Progressive).
	dhtMarker  = 0xc4 // Define Huffman Table.
	rst0Marker = 0xd0 // ReSTart (0).
	rst7Marker = 0xd7 // ReSTart (7).
	soiMarker  = 0xd8 // Start Of Image.
	eoiMarker  = 0xd9 // End Of Image.
	sosMarker  = 0xda // Start Of Scan.
	dqtMarker  = 0xdb // Define Quantization Table.
	driMarker  = 0xdd // Define Restart Interval.
	comMarker  = 0xfe // COMment.

	app0Marker  = 0xe0
	app14Marker = 0xee
	app15Marker = 0xef
)

const adobeTransformUnknown = 0

// unzig maps from the zig-zag ordering to the natural ordering.
var unzig = [blockSize]uint8{
	0, 1, 8, 16, 9, 2, 3, 10,
	17, 24, 32, 25, 18, 11, 4, 5,
	12, 19, 26, 33, 40, 48, 41, 34,
	27, 20, 13, 6, 7, 14, 21, 28,
	35, 42, 49, 56, 57, 50, 43, 36,
	29, 22, 15, 23, 30, 37, 44, 51,
	58, 59, 52, 45, 38, 31, 39, 46,
	53, 60, 61, 54, 47, 55, 62, 63,
}

// block holds the 64 dequantized coefficients of a block in natural order.
type block [blockSize]int32

type decoder struct {
	data []byte
	pos  int // next byte of data to read

	bits bitReader

	width, height int

	img1 *image.Gray
	img3 *image.YCbCr

	ri    int // Restart Interval.
	nComp int

	baseline bool

	jfif                bool
	adobeTransformValid bool
	adobeTransform      uint8
	eobRun              uint16 // End-of-Band run, specified in section G.1.2.2.

	comp  [maxComponents]component
	huff  [maxTc + 1][maxTh + 1]huffman
	quant [maxTq + 1]block // Quantization tables, in zig-zag order.
	scan  [maxComponents]scanComp
	tmp   [2 * blockSize]byte
}

// Decode decodes a whole JPEG held in data. It returns an *image.YCbCr or
// an *image.Gray equal to what image/jpeg.Decode returns for the same
// bytes, an error when image/jpeg fails too (the same error value for
// faults found in the markers, io.ErrUnexpectedEOF when the data ends
// before the End Of Image marker, and for faults in the entropy-coded data
// image/jpeg's text: a truncated scan is "short Huffman data", a marker in
// its middle "missing 0xff00 sequence"), or ErrUnsupported.
func Decode(data []byte) (image.Image, error) {
	d := &decoder{data: data}
	return d.decode()
}

func (d *decoder) readFull(p []byte) error {
	if len(d.data)-d.pos < len(p) {
		d.pos = len(d.data)
		return io.ErrUnexpectedEOF
	}
	d.pos += copy(p, d.data[d.pos:])
	return nil
}

func (d *decoder) readByte() (byte, error) {
	if d.pos >= len(d.data) {
		return 0, io.ErrUnexpectedEOF
	}
	c := d.data[d.pos]
	d.pos++
	return c, nil
}

func (d *decoder) ignore(n int) error {
	if len(d.data)-d.pos < n {
		d.pos = len(d.data)
		return io.ErrUnexpectedEOF
	}
	d.pos += n
	return nil
}

// Specified in section B.2.2.
func (d *decoder) processSOF(n int) error {
	if d.nComp != 0 {
		return FormatError("multiple SOF markers")
	}
	switch n {
	case 6 + 3*1: // Grayscale image.
		d.nComp = 1
	case 6 + 3*3: // YCbCr or RGB image.
		d.nComp = 3
	default: // CMYK, YCCK or invalid: image/jpeg's business.
		return ErrUnsupported
	}
	if err := d.readFull(d.tmp[:n]); err != nil {
		return err
	}
	if d.tmp[0] != 8 {
		return ErrUnsupported // 12-bit precision
	}
	d.height = int(d.tmp[1])<<8 + int(d.tmp[2])
	d.width = int(d.tmp[3])<<8 + int(d.tmp[4])
	if int(d.tmp[5]) != d.nComp {
		return FormatError("SOF has wrong length")
	}

	for i := 0; i < d.nComp; i++ {
		d.comp[i].c = d.tmp[6+3*i]
		for j := 0; j < i; j++ {
			if d.comp[i].c == d.comp[j].c {
				return FormatError("repeated component identifier")
			}
		}

		d.comp[i].tq = d.tmp[8+3*i]
		if d.comp[i].tq > maxTq {
			return FormatError("bad Tq value")
		}

		hv := d.tmp[7+3*i]
		h, v := int(hv>>4), int(hv&0x0f)
		if h < 1 || 4 < h || v < 1 || 4 < v {
			return FormatError("luma/chroma subsampling ratio")
		}
		if h == 3 || v == 3 {
			return ErrUnsupported
		}
		switch d.nComp {
		case 1:
			// A single component is non-interleaved by definition
			// (section A.2): its MCU is one block whatever h and v say.
			h, v = 1, 1
		case 3:
			// The layouts image.YCbCr has a subsample ratio for.
			switch i {
			case 0:
				if v == 4 {
					return ErrUnsupported
				}
			case 1:
				if d.comp[0].h%h != 0 || d.comp[0].v%v != 0 {
					return ErrUnsupported
				}
			case 2:
				if d.comp[1].h != h || d.comp[1].v != v {
					return ErrUnsupported
				}
			}
		}
		d.comp[i].h = h
		d.comp[i].v = v
	}
	return nil
}

// Specified in section B.2.4.1.
func (d *decoder) processDQT(n int) error {
loop:
	for n > 0 {
		n--
		x, err := d.readByte()
		if err != nil {
			return err
		}
		tq := x & 0x0f
		if tq > maxTq {
			return FormatError("bad Tq value")
		}
		switch x >> 4 {
		default:
			return FormatError("bad Pq value")
		case 0:
			if n < blockSize {
				break loop
			}
			n -= blockSize
			if err := d.readFull(d.tmp[:blockSize]); err != nil {
				return err
			}
			for i := range d.quant[tq] {
				d.quant[tq][i] = int32(d.tmp[i])
			}
		case 1:
			if n < 2*blockSize {
				break loop
			}
			n -= 2 * blockSize
			if err := d.readFull(d.tmp[:2*blockSize]); err != nil {
				return err
			}
			for i := range d.quant[tq] {
				d.quant[tq][i] = int32(d.tmp[2*i])<<8 | int32(d.tmp[2*i+1])
			}
		}
	}
	if n != 0 {
		return FormatError("DQT has wrong length")
	}
	return nil
}

// Specified in section B.2.4.4.
func (d *decoder) processDRI(n int) error {
	if n != 2 {
		return FormatError("DRI has wrong length")
	}
	if err := d.readFull(d.tmp[:2]); err != nil {
		return err
	}
	d.ri = int(d.tmp[0])<<8 + int(d.tmp[1])
	return nil
}

func (d *decoder) processApp0Marker(n int) error {
	if n < 5 {
		return d.ignore(n)
	}
	if err := d.readFull(d.tmp[:5]); err != nil {
		return err
	}
	n -= 5
	d.jfif = d.tmp[0] == 'J' && d.tmp[1] == 'F' && d.tmp[2] == 'I' && d.tmp[3] == 'F' && d.tmp[4] == '\x00'
	return d.ignore(n)
}

func (d *decoder) processApp14Marker(n int) error {
	if n < 12 {
		return d.ignore(n)
	}
	if err := d.readFull(d.tmp[:12]); err != nil {
		return err
	}
	n -= 12
	if d.tmp[0] == 'A' && d.tmp[1] == 'd' && d.tmp[2] == 'o' && d.tmp[3] == 'b' && d.tmp[4] == 'e' {
		d.adobeTransformValid = true
		d.adobeTransform = d.tmp[11]
	}
	return d.ignore(n)
}

// decode walks the markers exactly as image/jpeg does, so that the two
// accept and refuse the same files.
func (d *decoder) decode() (image.Image, error) {
	if err := d.readFull(d.tmp[:2]); err != nil {
		return nil, err
	}
	if d.tmp[0] != 0xff || d.tmp[1] != soiMarker {
		return nil, FormatError("missing SOI marker")
	}

	for {
		err := d.readFull(d.tmp[:2])
		if err != nil {
			return nil, err
		}
		for d.tmp[0] != 0xff {
			// Extraneous data between segments is skipped, as libjpeg
			// and image/jpeg do.
			d.tmp[0] = d.tmp[1]
			d.tmp[1], err = d.readByte()
			if err != nil {
				return nil, err
			}
		}
		marker := d.tmp[1]
		if marker == 0 {
			// Treat "\xff\x00" as extraneous data.
			continue
		}
		for marker == 0xff {
			// Fill bytes (section B.1.1.2).
			marker, err = d.readByte()
			if err != nil {
				return nil, err
			}
		}
		if marker == eoiMarker {
			break
		}
		if rst0Marker <= marker && marker <= rst7Marker {
			// A stray restart marker after the last entropy-coded
			// segment: harmless, and it has no length.
			continue
		}

		if err = d.readFull(d.tmp[:2]); err != nil {
			return nil, err
		}
		n := int(d.tmp[0])<<8 + int(d.tmp[1]) - 2
		if n < 0 {
			return nil, FormatError("short segment length")
		}

		switch marker {
		case sof0Marker, sof1Marker:
			d.baseline = marker == sof0Marker
			err = d.processSOF(n)
		case sof2Marker:
			err = ErrUnsupported // progressive
		case dhtMarker:
			err = d.processDHT(n)
		case dqtMarker:
			err = d.processDQT(n)
		case sosMarker:
			err = d.processSOS(n)
		case driMarker:
			err = d.processDRI(n)
		case app0Marker:
			err = d.processApp0Marker(n)
		case app14Marker:
			err = d.processApp14Marker(n)
		default:
			if app0Marker <= marker && marker <= app15Marker || marker == comMarker {
				err = d.ignore(n)
			} else if marker < 0xc0 { // See Table B.1 "Marker code assignments".
				err = FormatError("unknown marker")
			} else {
				// Lossless, hierarchical or arithmetic-coded frames,
				// arithmetic conditioning tables...
				err = ErrUnsupported
			}
		}
		if err != nil {
			return nil, err
		}
	}

	if d.img1 != nil {
		return d.img1, nil
	}
	if d.img3 != nil {
		if d.isRGB() {
			return nil, ErrUnsupported
		}
		return d.img3, nil
	}
	return nil, FormatError("missing SOS marker")
}

// isRGB is image/jpeg's guess that the three components are R, G and B
// rather than Y, Cb and Cr.
func (d *decoder) isRGB() bool {
	if d.jfif {
		return false
	}
	if d.adobeTransformValid && d.adobeTransform == adobeTransformUnknown {
		return true
	}
	return d.comp[0].c == 'R' && d.comp[1].c == 'G' && d.comp[2].c == 'B'
}

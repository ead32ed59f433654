// Copyright 2012 The Go Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

package jpegdec

import (
	"encoding/binary"
	"image"
)

// makeImg allocates the destination image as image/jpeg does: planes
// rounded up to whole MCUs, then cut to the image size, so that blocks on
// the right and bottom edges are written whole.
func (d *decoder) makeImg(mxx, myy int) {
	if d.nComp == 1 {
		m := image.NewGray(image.Rect(0, 0, 8*mxx, 8*myy))
		d.img1 = m.SubImage(image.Rect(0, 0, d.width, d.height)).(*image.Gray)
		return
	}

	h0 := d.comp[0].h
	v0 := d.comp[0].v
	hRatio := h0 / d.comp[1].h
	vRatio := v0 / d.comp[1].v
	var subsampleRatio image.YCbCrSubsampleRatio
	switch hRatio<<4 | vRatio {
	case 0x11:
		subsampleRatio = image.YCbCrSubsampleRatio444
	case 0x12:
		subsampleRatio = image.YCbCrSubsampleRatio440
	case 0x21:
		subsampleRatio = image.YCbCrSubsampleRatio422
	case 0x22:
		subsampleRatio = image.YCbCrSubsampleRatio420
	case 0x41:
		subsampleRatio = image.YCbCrSubsampleRatio411
	case 0x42:
		subsampleRatio = image.YCbCrSubsampleRatio410
	default:
		panic("unreachable") // processSOF admits no other ratio
	}
	m := image.NewYCbCr(image.Rect(0, 0, 8*h0*mxx, 8*v0*myy), subsampleRatio)
	d.img3 = m.SubImage(image.Rect(0, 0, d.width, d.height)).(*image.YCbCr)
}

// scanComp is what the block loop needs of one component of a scan. The
// AC look-up table and the quantization table are copied in next to the
// block being decoded, so that the hot loop reaches them from one pointer:
// fewer live registers, fewer spills.
type scanComp struct {
	b      block // the block being decoded, not dequantized yet
	q      block // quantization table, natural order
	aclut  [1 << lutBits]lutEntry
	ac, dc *huffman

	compIndex uint8
	hi, vi    int
	pix       []byte // the whole plane, from its first row
	stride    int
}

// Specified in section B.2.3.
func (d *decoder) processSOS(n int) error {
	if d.nComp == 0 {
		return FormatError("missing SOF marker")
	}
	if n < 6 || 4+2*d.nComp < n || n%2 != 0 {
		return FormatError("SOS has wrong length")
	}
	if err := d.readFull(d.tmp[:n]); err != nil {
		return err
	}
	nComp := int(d.tmp[0])
	if n != 4+2*nComp {
		return FormatError("SOS length inconsistent with number of components")
	}
	scan := &d.scan
	totalHV := 0
	for i := 0; i < nComp; i++ {
		cs := d.tmp[1+2*i] // Component selector.
		compIndex := -1
		for j, comp := range d.comp[:d.nComp] {
			if cs == comp.c {
				compIndex = j
			}
		}
		if compIndex < 0 {
			return FormatError("unknown component selector")
		}
		scan[i].compIndex = uint8(compIndex)
		for j := 0; j < i; j++ {
			if scan[i].compIndex == scan[j].compIndex {
				return FormatError("repeated component selector")
			}
		}
		totalHV += d.comp[compIndex].h * d.comp[compIndex].v

		// The baseline t <= 1 restriction is specified in table B.3.
		td := d.tmp[2+2*i] >> 4
		if td > maxTh || (d.baseline && td > 1) {
			return FormatError("bad Td value")
		}
		ta := d.tmp[2+2*i] & 0x0f
		if ta > maxTh || (d.baseline && ta > 1) {
			return FormatError("bad Ta value")
		}
		scan[i].dc = &d.huff[dcTable][td]
		scan[i].ac = &d.huff[acTable][ta]
		// image/jpeg fails on the first use of a table never defined,
		// which need not be the first block (end-of-band runs skip AC
		// tables): leave such scans to it.
		if scan[i].dc.nCodes == 0 || scan[i].ac.nCodes == 0 {
			return ErrUnsupported
		}
	}
	if d.nComp > 1 && totalHV > 10 {
		return FormatError("total sampling factors too large")
	}
	// Sequential scans have Ss=0, Se=63, Ah=Al=0 (table B.3), which
	// image/jpeg does not check either.

	// mxx and myy are the number of MCUs (Minimum Coded Units) in the image.
	h0, v0 := d.comp[0].h, d.comp[0].v
	mxx := (d.width + 8*h0 - 1) / (8 * h0)
	myy := (d.height + 8*v0 - 1) / (8 * v0)
	if d.img1 == nil && d.img3 == nil {
		d.makeImg(mxx, myy)
	}
	for i := 0; i < nComp; i++ {
		s := &scan[i]
		ci := s.compIndex
		s.hi, s.vi = d.comp[ci].h, d.comp[ci].v
		for k, z := range unzig {
			s.q[z] = d.quant[d.comp[ci].tq][k]
		}
		s.aclut = s.ac.lut
		if d.nComp == 1 {
			s.pix, s.stride = d.img1.Pix, d.img1.Stride
		} else {
			switch ci {
			case 0:
				s.pix, s.stride = d.img3.Y, d.img3.YStride
			case 1:
				s.pix, s.stride = d.img3.Cb, d.img3.CStride
			case 2:
				s.pix, s.stride = d.img3.Cr, d.img3.CStride
			}
		}
	}

	d.loadSegment()
	mcu, expectedRST := 0, uint8(rst0Marker)
	var (
		dc [maxComponents]int32
		// bx and by count the blocks of single-component scans, in
		// raster order (blockCount in image/jpeg).
		bx, by int
	)
	for my := 0; my < myy; my++ {
		for mx := 0; mx < mxx; mx++ {
			for i := 0; i < nComp; i++ {
				s := &scan[i]
				hi, vi := s.hi, s.vi
				// Interleaved scans visit the blocks of an MCU in raster
				// order within the MCU; single-component scans visit the
				// image's blocks in raster order, hi*vi of them per "MCU",
				// skipping those wholly outside the image (section A.2),
				// with image/jpeg's reading of "outside" and of which
				// blocks a restart interval counts.
				for jy := 0; jy < vi; jy++ {
					for jx := 0; jx < hi; jx++ {
						x, y := hi*mx+jx, vi*my+jy
						if nComp == 1 {
							x, y = bx, by
							if bx++; bx == mxx*hi {
								bx, by = 0, by+1
							}
							if x*8 >= d.width || y*8 >= d.height {
								continue
							}
						}
						s.b = block{}
						nz, err := d.decodeBlock(s, &dc[s.compIndex])
						if err != nil {
							return err
						}
						off := 8 * (y*s.stride + x)
						if off < 0 || off+7*s.stride+8 > len(s.pix) {
							return FormatError("block outside the image")
						}
						idct(&s.b, &s.q, nz, s.pix[off:], s.stride)
					}
				}
			}
			mcu++
			if d.ri > 0 && mcu%d.ri == 0 && mcu < mxx*myy {
				// The RST marker should follow at once; for corrupt
				// input, findRST resynchronizes as image/jpeg does.
				if err := d.readFull(d.tmp[:2]); err != nil {
					return err
				} else if d.tmp[0] != 0xff || d.tmp[1] != expectedRST {
					if err := d.findRST(expectedRST); err != nil {
						return err
					}
				}
				expectedRST++
				if expectedRST == rst7Marker+1 {
					expectedRST = rst0Marker
				}
				d.loadSegment()
				dc = [maxComponents]int32{}
				d.eobRun = 0
			}
		}
	}
	// d.pos is at the marker that ends the segment. image/jpeg's reading
	// stops at most there, and between the two lie only data bytes and
	// stuffed 0xFF 0x00 pairs, which its marker loop skips.
	return nil
}

// decodeBlock decodes the next block of s into s.b (zeroed), in natural
// order (idct dequantizes it), and returns a mask of the coefficients that may be
// nonzero (bit i for b[i]).
func (d *decoder) decodeBlock(s *scanComp, dcPred *int32) (uint64, error) {
	seg, p, acc, n := d.bits.seg, d.bits.p, d.bits.acc, d.bits.n
	if p > len(seg)-segPad/2 {
		// Cannot happen: p is at most 8 bytes past the data at the start
		// of a block (see the end of this function), and a block reads at
		// most 252 bytes. Checked so that the loads below cannot panic.
		return 0, d.bits.overrun()
	}
	// DC coefficient, section F.2.2.1.
	acc |= binary.BigEndian.Uint64(seg[p:]) >> (n & 63)
	p += int(63-n) >> 3
	n |= 56
	// next holds the 8 bytes from p on, loaded one refill ahead so that
	// the load is off the dependency chain from one code to the next.
	next := binary.BigEndian.Uint64(seg[p:])
	h := s.dc
	e := h.lut[acc>>(64-lutBits)]
	var delta int32
	if l := uint(e & 0xff); l != 0 && (e>>8&0xff == 0 || e>>16 != 0) {
		delta = e >> 16
		acc <<= l & 63
		n -= l
	} else {
		var sym uint8
		var l uint
		if l = uint(e & 0xff); l != 0 {
			sym = uint8(e >> 8)
		} else if sym, l = h.decodeSlow(acc); l == 0 {
			return 0, FormatError("bad Huffman code")
		}
		acc <<= l & 63
		n -= l
		if sym > 16 {
			// image/jpeg: UnsupportedError("excessive DC component").
			return 0, ErrUnsupported
		}
		if sym != 0 {
			delta = extend(acc, uint(sym))
			acc <<= sym
			n -= uint(sym)
		}
	}
	*dcPred += delta
	s.b[0] = *dcPred
	// last bounds the zig-zag index of the last coefficient stored.
	last := uint(0)

	if d.eobRun > 0 {
		d.eobRun--
	} else {
		// AC coefficients, section F.2.2.2.
		k := uint(1)
		for ; k < blockSize; k++ {
			// n >= 24 here (a refill leaves at least 56 bits, a code and
			// its value take at most 32), so the table index can be taken
			// before the refill, which leaves its top bits as they are:
			// the load of e does not wait for the refill.
			e := s.aclut[acc>>(64-lutBits)]
			// At most 31 bits are consumed below, and n >= 56 after this.
			acc |= next >> (n & 63)
			p += int(63-n) >> 3
			n |= 56
			next = binary.BigEndian.Uint64(seg[p:])
			if v := e >> 16; v != 0 {
				// Code and value in one probe.
				k += uint(uint32(e)>>12) & 0x0f
				if k >= blockSize {
					// image/jpeg ends the block without reading the value.
					l := uint(e&0xff) - uint(e>>8&0x0f)
					acc <<= l & 63
					n -= l
					break
				}
				l := uint(e & 0xff)
				acc <<= l & 63
				n -= l
				s.b[unzig[k]&63] = v
				continue
			}
			var sym uint8
			var l uint
			if l = uint(e & 0xff); l != 0 {
				sym = uint8(e >> 8)
			} else if sym, l = s.ac.decodeSlow(acc); l == 0 {
				return 0, FormatError("bad Huffman code")
			}
			acc <<= l & 63
			n -= l
			val0, val1 := sym>>4, sym&0x0f
			if val1 == 0 {
				if val0 == 0x0f {
					k += 0x0f // ZRL: sixteen zeros, with the loop's k++
					continue
				}
				// End of block; for val0 > 0, image/jpeg reads an
				// end-of-band run (section G.1.2.2) even in sequential
				// scans, and so does this decoder.
				d.eobRun = uint16(1) << val0
				if val0 != 0 {
					d.eobRun |= uint16(acc >> (64 - uint(val0)))
					acc <<= val0
					n -= uint(val0)
				}
				d.eobRun--
				break
			}
			k += uint(val0)
			if k >= blockSize {
				break
			}
			v := extend(acc, uint(val1))
			acc <<= val1
			n -= uint(val1)
			s.b[unzig[k]&63] = v
		}
		// The loop ends at an end of block that follows the last
		// coefficient, or past the block.
		last = min(k-1, blockSize-1)
	}

	d.bits.p, d.bits.acc, d.bits.n = p, acc, n
	if 8*p-int(n) > d.bits.bits {
		return 0, d.bits.overrun()
	}
	return zigMask[last], nil
}

// zigMask[k] has a bit for the natural-order index of each of the first
// k+1 coefficients in zig-zag order.
var zigMask = func() (m [blockSize]uint64) {
	var acc uint64
	for k, z := range unzig {
		acc |= 1 << z
		m[k] = acc
	}
	return m
}()

// findRST advances past the next RST restart marker that matches
// expectedRST, as image/jpeg does: other than the end of the data, it is
// an error to meet a marker other than 0x00, 0xFF or expectedRST.
//
// Precondition: d.tmp[:2] holds the next two bytes of the data.
func (d *decoder) findRST(expectedRST uint8) error {
	for {
		i := 0
		if d.tmp[0] == 0xff {
			if d.tmp[1] == expectedRST {
				return nil
			} else if d.tmp[1] == 0xff {
				i = 1
			} else if d.tmp[1] != 0x00 {
				return FormatError("bad RST marker")
			}
		} else if d.tmp[1] == 0xff {
			d.tmp[0] = 0xff
			i = 1
		}
		if err := d.readFull(d.tmp[i:2]); err != nil {
			return err
		}
	}
}

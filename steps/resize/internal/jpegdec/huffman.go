// Copyright 2009 The Go Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

package jpegdec

import "bytes"

// maxCodeLength is the maximum (inclusive) number of bits in a Huffman code.
const maxCodeLength = 16

// maxNCodes is the maximum (inclusive) number of codes in a Huffman tree.
const maxNCodes = 256

// lutBits is the log-2 size of the look-up table. Ten bits hold the code
// and the value of most AC coefficients of a photo in one probe; the table
// (4 KB) stays in L1 next to the other ones.
const lutBits = 10

// A lut entry describes the codes starting with its index's lutBits bits:
//
//	bits 0-7    bits to consume: the code length, plus the size of the
//	            value when the value is in the entry; 0 when the code is
//	            longer than lutBits (decodeSlow finds it)
//	bits 8-15   the decoded symbol
//	bits 16-31  the value the symbol's size bits stand for (EXTEND of
//	            section F.2.2.1) when code and value fit in lutBits,
//	            else 0 (a value of size >= 1 is never 0)
type lutEntry = int32

// huffman is a Huffman decoder, specified in section C.
type huffman struct {
	// nCodes is the number of codes in the tree; 0 for a table that was
	// never defined.
	nCodes int32
	lut    [1 << lutBits]lutEntry
	// vals are the decoded values, sorted by their encoding.
	vals [maxNCodes]uint8
	// minCodes[i] is the minimum code of length i+1, or -1 if there are
	// no codes of that length.
	minCodes [maxCodeLength]int32
	// maxCodes[i] is the maximum code of length i+1, or -1 if there are
	// no codes of that length.
	maxCodes [maxCodeLength]int32
	// valsIndices[i] is the index into vals of minCodes[i].
	valsIndices [maxCodeLength]int32
}

// processDHT processes a Define Huffman Table marker, and initializes a
// huffman struct from its contents. Specified in section B.2.4.2.
func (d *decoder) processDHT(n int) error {
	for n > 0 {
		if n < 17 {
			return FormatError("DHT has wrong length")
		}
		if err := d.readFull(d.tmp[:17]); err != nil {
			return err
		}
		tc := d.tmp[0] >> 4
		if tc > maxTc {
			return FormatError("bad Tc value")
		}
		th := d.tmp[0] & 0x0f
		// The baseline th <= 1 restriction is specified in table B.5.
		if th > maxTh || (d.baseline && th > 1) {
			return FormatError("bad Th value")
		}
		h := &d.huff[tc][th]

		h.nCodes = 0
		var nCodes [maxCodeLength]int32
		for i := range nCodes {
			nCodes[i] = int32(d.tmp[i+1])
			h.nCodes += nCodes[i]
		}
		if h.nCodes == 0 {
			return FormatError("Huffman table has zero length")
		}
		if h.nCodes > maxNCodes {
			return FormatError("Huffman table has excessive length")
		}
		n -= int(h.nCodes) + 17
		if n < 0 {
			return FormatError("DHT has wrong length")
		}
		if err := d.readFull(h.vals[:h.nCodes]); err != nil {
			return err
		}

		// Derive minCodes, maxCodes, and valsIndices.
		var c, index int32
		for i, n := range nCodes {
			if n == 0 {
				h.minCodes[i] = -1
				h.maxCodes[i] = -1
				h.valsIndices[i] = -1
			} else {
				h.minCodes[i] = c
				h.maxCodes[i] = c + n - 1
				h.valsIndices[i] = index
				c += n
				index += n
			}
			// More codes of length i+1 than i+1 bits can tell apart: no
			// prefix code. image/jpeg decodes such tables with its 8-bit
			// table and its bit-by-bit loop disagreeing; let it.
			if c > 1<<(i+1) {
				return ErrUnsupported
			}
			c <<= 1
		}
		h.buildLUT(tc == acTable)
	}
	return nil
}

// buildLUT fills h.lut from the canonical codes; for a prefix code this
// is what decodeSlow finds for every code of up to lutBits bits
// (TestLUTMatchesSlowPath).
func (h *huffman) buildLUT(ac bool) {
	clear(h.lut[:])
	var code, x int32
	for l := int32(1); l <= lutBits; l++ {
		nc := h.maxCodes[l-1] - h.minCodes[l-1] + 1
		if h.maxCodes[l-1] < 0 {
			nc = 0
		} else {
			code = h.minCodes[l-1]
			x = h.valsIndices[l-1]
		}
		for j := int32(0); j < nc; j, code, x = j+1, code+1, x+1 {
			sym := h.vals[x]
			size := int32(sym)
			if ac {
				size &= 0x0f
			}
			shift := lutBits - l
			for k := int32(0); k < 1<<shift; k++ {
				idx := code<<shift | k
				e := lutEntry(sym)<<8 | l
				if size != 0 && l+size <= lutBits {
					v := (idx >> (lutBits - l - size)) & (1<<size - 1)
					if v < 1<<(size-1) {
						v += -1<<size + 1
					}
					e = v<<16 | lutEntry(sym)<<8 | (l + size)
				}
				h.lut[idx] = e
			}
		}
	}
}

// decodeSlow decodes a code from the top 16 bits of acc as image/jpeg's
// slow path does, returning its symbol and length, or a length of 0 for a
// bad code.
func (h *huffman) decodeSlow(acc uint64) (uint8, uint) {
	code := int32(0)
	for i := uint(0); i < maxCodeLength; i++ {
		code |= int32(acc>>(63-i)) & 1
		if code <= h.maxCodes[i] {
			return h.vals[(h.valsIndices[i]+code-h.minCodes[i])&0xff], i + 1
		}
		code <<= 1
	}
	return 0, 0
}

// extend is the EXTEND of section F.2.2.1 on the top s bits of acc, s in
// [1, 16].
func extend(acc uint64, s uint) int32 {
	v := int32(acc >> (64 - s))
	if v < 1<<(s-1) {
		v += -1<<s + 1
	}
	return v
}

// bitReader reads the bits of one entropy-coded segment (the data
// between two markers), which loadSegment has copied into seg without its
// byte stuffing (0xFF 0x00 stands for 0xFF) and followed with zero bytes.
// The hot loop then refills acc with one 8-byte load, no test for 0xFF and
// no test for the end: the padding is longer than one block can consume,
// and decodeBlock stops the decoding at the end of any block that went
// past the data. image/jpeg errs at the first bit it cannot read; this
// reader errs at the end of that block: the same inputs fail.
//
// acc holds the next unread bits at its top; n of them are valid, and the
// bits below them are the next bits of seg, or zeros: refills OR the same
// bits into the same places. p is the next byte of seg not yet in acc.
type bitReader struct {
	seg  []byte
	p    int
	acc  uint64
	n    uint
	bits int // bits of data in seg, padding excluded
	stop uint8
}

// segPad is the zero padding after a segment: more than the bytes one
// block can consume (63 AC codes of at most 16+15 bits and a DC code of
// at most 16+16 bits: 252 bytes) plus the 8 bytes a refill loads.
const segPad = 512

var zeros [segPad]byte

const (
	stopMarker = iota // a marker ends the entropy-coded segment
	stopEOF           // the data ends inside the segment
)

// errShortHuffmanData and errMissingFF00 are image/jpeg's errors for
// entropy-coded data cut short by the end of the file and by a marker.
var (
	errShortHuffmanData = FormatError("short Huffman data")
	errMissingFF00      = FormatError("missing 0xff00 sequence")
)

func (br *bitReader) overrun() error {
	if br.stop == stopEOF {
		return errShortHuffmanData
	}
	return errMissingFF00
}

// loadSegment copies the entropy-coded segment that starts at d.pos into
// d.bits.seg and moves d.pos to the marker (or the end of the data) that
// ends it, where image/jpeg's reading stops too.
func (d *decoder) loadSegment() {
	br := &d.bits
	data := d.data[d.pos:]
	seg := br.seg[:0]
	if cap(seg) == 0 {
		// One allocation for all the segments of the file.
		seg = make([]byte, 0, len(data)+segPad)
	}
	br.stop = stopEOF
	for {
		i := bytes.IndexByte(data, 0xff)
		if i < 0 || i+1 >= len(data) {
			// No marker: the segment runs to the end of the data (a final
			// 0xFF is a marker cut off: image/jpeg reports short data).
			if i < 0 {
				i = len(data)
			}
			seg = append(seg, data[:i]...)
			d.pos += i
			break
		}
		seg = append(seg, data[:i+1]...)
		if data[i+1] != 0 {
			seg = seg[:len(seg)-1]
			d.pos += i
			br.stop = stopMarker
			break
		}
		data = data[i+2:]
		d.pos += i + 2
	}
	br.bits = 8 * len(seg)
	seg = append(seg, zeros[:]...)
	br.seg, br.p, br.acc, br.n = seg, 0, 0, 0
}

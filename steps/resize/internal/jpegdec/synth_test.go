package jpegdec

import (
	"bytes"
	"image/jpeg"
	"math/rand/v2"
	"slices"
	"testing"
)

// bitWriter writes the entropy-coded data of a scan: MSB first, 0xFF
// followed by a stuffed 0x00, the last byte padded with 1 bits.
type bitWriter struct {
	out   []byte
	acc   uint64
	nbits uint
}

func (w *bitWriter) put(v uint32, n uint) {
	for i := int(n) - 1; i >= 0; i-- {
		w.acc = w.acc<<1 | uint64(v>>uint(i)&1)
		if w.nbits++; w.nbits == 8 {
			w.out = append(w.out, byte(w.acc))
			if byte(w.acc) == 0xff {
				w.out = append(w.out, 0)
			}
			w.acc, w.nbits = 0, 0
		}
	}
}

func (w *bitWriter) flush() {
	for w.nbits != 0 {
		w.put(1, 1)
	}
}

// synthTable is a random canonical Huffman code for syms: lengths from 1
// to 16 bits, many long ones, Kraft sum at most 1.
type synthTable struct {
	counts [16]byte
	vals   []byte
	code   map[byte]uint32
	length map[byte]uint
}

func newSynthTable(r *rand.Rand, syms []byte) *synthTable {
	lens := make([]int, len(syms))
	kraft := 0 // in units of 2^-16
	for i := range lens {
		lens[i] = 1 + r.IntN(16)
		if r.IntN(2) == 0 {
			lens[i] = 12 + r.IntN(5) // long codes: the budget's worst case
		}
		kraft += 1 << (16 - lens[i])
	}
	for kraft > 1<<16 {
		i := r.IntN(len(lens))
		if lens[i] < 16 {
			kraft -= 1 << (16 - lens[i])
			lens[i]++
			kraft += 1 << (16 - lens[i])
		}
	}
	order := make([]int, len(syms))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return lens[a] - lens[b] })
	t := &synthTable{code: map[byte]uint32{}, length: map[byte]uint{}}
	code, l := uint32(0), 1
	for _, i := range order {
		for l < lens[i] {
			code <<= 1
			l++
		}
		t.counts[l-1]++
		t.vals = append(t.vals, syms[i])
		t.code[syms[i]], t.length[syms[i]] = code, uint(l)
		code++
	}
	return t
}

func (t *synthTable) put(w *bitWriter, sym byte) {
	w.put(t.code[sym], t.length[sym])
}

// synthJPEG writes a grayscale baseline JPEG whose scan uses random
// Huffman tables with codes of up to 16 bits and coefficients of every
// size, runs that run past the block, zero runs, end-of-band runs and
// restart intervals: the bit reader's corner cases, which encoders with
// the standard tables seldom reach.
func synthJPEG(r *rand.Rand) []byte {
	w, h := 8+r.IntN(40), 8+r.IntN(40)
	var dcSyms []byte
	for s := 0; s <= 16; s++ {
		dcSyms = append(dcSyms, byte(s))
	}
	acSyms := []byte{0x00, 0xf0}
	for run := 0; run < 16; run++ {
		for size := 1; size <= 15; size++ {
			if r.IntN(3) == 0 || size > 10 {
				acSyms = append(acSyms, byte(run<<4|size))
			}
		}
		if run > 0 && run < 15 && r.IntN(4) == 0 {
			acSyms = append(acSyms, byte(run<<4)) // end-of-band run
		}
	}
	dc, ac := newSynthTable(r, dcSyms), newSynthTable(r, acSyms)
	ri := 0
	if r.IntN(2) == 0 {
		ri = 1 + r.IntN(5)
	}

	value := func(s uint) uint32 { // the s bits of a random value of size s
		v := uint32(1)<<(s-1) | uint32(r.IntN(1<<(s-1)))
		if r.IntN(2) == 0 {
			v = ^v & (1<<s - 1) // negative: one's complement
		}
		return v
	}
	var bw bitWriter
	var scan []byte
	blocks := ((w + 7) / 8) * ((h + 7) / 8)
	eobRun := 0
	for b := 0; b < blocks; b++ {
		if ri > 0 && b > 0 && b%ri == 0 {
			bw.flush()
			scan = append(scan, bw.out...)
			scan = append(scan, 0xff, byte(rst0Marker+(b/ri-1)%8))
			bw = bitWriter{}
			eobRun = 0
		}
		s := byte(r.IntN(17))
		dc.put(&bw, s)
		if s > 0 {
			bw.put(value(uint(s)), uint(s))
		}
		if eobRun > 0 {
			eobRun--
			continue
		}
		for k := 1; k < 64; {
			sym := ac.vals[r.IntN(len(ac.vals))]
			if r.IntN(10) == 0 {
				sym = 0 // end of block
			}
			run, size := int(sym>>4), uint(sym&15)
			ac.put(&bw, sym)
			if size == 0 {
				if run == 15 {
					k += 16
					continue
				}
				if run > 0 {
					extra := r.IntN(1 << run)
					bw.put(uint32(extra), uint(run))
					eobRun = (1<<run | extra) - 1
				}
				break
			}
			k += run
			if k > 63 {
				break // the decoder reads no value
			}
			bw.put(value(size), size)
			k++
		}
	}
	bw.flush()
	scan = append(scan, bw.out...)

	var f []byte
	seg := func(marker byte, body ...byte) {
		f = append(f, 0xff, marker, byte((len(body)+2)>>8), byte(len(body)+2))
		f = append(f, body...)
	}
	f = append(f, 0xff, soiMarker)
	q := make([]byte, 65)
	for i := range 64 {
		q[1+i] = byte(1 + r.IntN(8))
	}
	seg(dqtMarker, q...)
	seg(sof1Marker, 8, byte(h>>8), byte(h), byte(w>>8), byte(w), 1, 1, 0x11, 0)
	seg(dhtMarker, slices.Concat([]byte{0x00}, dc.counts[:], dc.vals)...)
	seg(dhtMarker, slices.Concat([]byte{0x10}, ac.counts[:], ac.vals)...)
	if ri > 0 {
		seg(driMarker, byte(ri>>8), byte(ri))
	}
	seg(sosMarker, 1, 1, 0x00, 0, 63, 0)
	f = append(f, scan...)
	return append(f, 0xff, eoiMarker)
}

// TestSyntheticStreams decodes random streams built on random Huffman
// tables (see synthJPEG), whole and cut short, against image/jpeg.
func TestSyntheticStreams(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	decoded := 0
	for trial := range 2000 {
		data := synthJPEG(r)
		if err := compare(data); err != nil {
			t.Fatalf("trial %d: %v", trial, err)
		}
		if _, err := jpeg.Decode(bytes.NewReader(data)); err == nil {
			decoded++
		}
		cut := data[:len(data)-2-r.IntN(min(len(data)-2, 40))]
		if err := compare(cut); err != nil {
			t.Fatalf("trial %d cut to %d bytes: %v", trial, len(cut), err)
		}
	}
	// Most streams must be valid, or the test says little.
	if decoded < 1900 {
		t.Fatalf("image/jpeg decoded only %d of 2000 streams", decoded)
	}
}

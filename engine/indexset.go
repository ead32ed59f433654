package engine

import (
	"math/bits"
)

// indexSet is a set of item indices, one bit each: a barrier that keeps few
// items (top) still sees every index, and a bit per index keeps that at an
// eighth of a byte per item, up to maxIndexed.
type indexSet struct{ words []uint64 }

// maxIndexed bounds an indexSet at 16 MiB: past 134 million items, the
// events of a barrier's held-back items carry -1 rather than let a top-N
// over billions of items grow with them.
const maxIndexed = 1 << 27

func (s *indexSet) add(i int64) {
	if i < 0 || i >= maxIndexed {
		return // not an input's index, or past the bound: nothing to name
	}
	w := int(i >> 6)
	if w >= len(s.words) {
		s.words = append(s.words, make([]uint64, w+1-len(s.words))...)
	}
	s.words[w] |= 1 << (i & 63)
}

func (s *indexSet) remove(i int64) {
	if i < 0 || int(i>>6) >= len(s.words) {
		return
	}
	s.words[i>>6] &^= 1 << (i & 63)
}

// take calls f for n indices, the smallest of the set first, and with -1
// for those the set cannot name (an aggregate's output, an index seen
// twice).
func (s *indexSet) take(n int64, f func(int64)) {
	for w := 0; w < len(s.words) && n > 0; w++ {
		for x := s.words[w]; x != 0 && n > 0; x &= x - 1 {
			f(int64(w)<<6 | int64(bits.TrailingZeros64(x)))
			n--
		}
	}
	for ; n > 0; n-- {
		f(-1)
	}
}

package engine

import (
	"math/bits"
	"time"
)

// hist is a log-linear histogram of latencies: 8 sub-buckets per power of
// two of nanoseconds, so any quantile is within about 6% of the truth while
// the memory stays at 4 KiB per stage whatever the number of items.
type hist struct {
	counts [histBuckets]uint64
	n      uint64
	max    time.Duration
}

const (
	histSub     = 3 // log2 of the sub-buckets per power of two
	histBuckets = (64-histSub)<<histSub + 1<<histSub
)

func histIndex(v uint64) int {
	if v < 1<<histSub {
		return int(v)
	}
	e := bits.Len64(v) - 1
	sub := int(v>>(e-histSub)) - 1<<histSub
	return 1<<histSub + (e-histSub)<<histSub + sub
}

// histMid is the middle of bucket i.
func histMid(i int) uint64 {
	if i < 1<<histSub {
		return uint64(i)
	}
	i -= 1 << histSub
	e := i>>histSub + histSub
	sub := uint64(i & (1<<histSub - 1))
	lo := (1<<histSub + sub) << (e - histSub)
	return lo + (uint64(1)<<(e-histSub))/2
}

func (h *hist) record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[histIndex(uint64(d))]++
	h.n++
	if d > h.max {
		h.max = d
	}
}

// quantile returns the q-quantile (0 < q <= 1), never above the maximum seen.
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	target := uint64(q*float64(h.n) + 0.5)
	if target < 1 {
		target = 1
	}
	var cum uint64
	for i, c := range h.counts {
		cum += c
		if cum >= target {
			d := time.Duration(histMid(i))
			if d > h.max {
				d = h.max
			}
			return d
		}
	}
	return h.max
}

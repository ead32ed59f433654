package engine

import (
	"hash/fnv"
	"math/rand/v2"

	"github.com/flowrun/flow/clock"
)

// Every wait and every measure of time in a run goes through the run's
// clock (Options.Clock, clock.Real when nil): rate and concurrency limits,
// retry backoff and Retry-After, attempt timeouts, stage deadlines, the
// pipeline timeout, the report's times and durations, attempts' Start and
// End and the latency percentiles. The run's context carries it
// (clock.NewContext), so kinds that wait (compute's sleep, fetch's
// timeout) wait on the same clock. On a virtual clock (clock.Virtual, `flow
// test`) a run is then a function of its input: the same waits, times and
// outcomes on every run.

// jitter returns a number in [0, 1) that spreads one retry wait: random on
// the wall clock; on any other clock a function of the stage, the item and
// the attempt, so that a run on a virtual clock waits the same every time.
func (st *stepStage) jitter(index int64, attempt int) float64 {
	if clock.IsReal(st.r.clk) {
		return rand.Float64()
	}
	f := fnv.New64a()
	f.Write([]byte(st.name))
	h := splitmix(f.Sum64() ^ splitmix(uint64(index)<<8^uint64(attempt)))
	return float64(h>>11) / (1 << 53)
}

// splitmix is SplitMix64's finaliser: a cheap, well-spread hash of x.
func splitmix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

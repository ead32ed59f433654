package decimal

import (
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
)

func check(t *testing.T, v int64) {
	t.Helper()
	for _, prefix := range []string{"", "x,"} {
		// Both with and without room left in b: the digits are written in
		// place or after a growth.
		for _, room := range []int{0, 32} {
			b := make([]byte, len(prefix), len(prefix)+room)
			copy(b, prefix)
			if got, want := string(AppendInt(b, v)), prefix+strconv.FormatInt(v, 10); got != want {
				t.Fatalf("AppendInt(%q, %d) = %q, want %q", prefix, v, got, want)
			}
			if v >= 0 {
				u := uint64(v) * 2
				if got, want := string(AppendUint(b, u)), prefix+strconv.FormatUint(u, 10); got != want {
					t.Fatalf("AppendUint(%q, %d) = %q, want %q", prefix, u, got, want)
				}
			}
		}
	}
}

func TestAppendIntAsStrconv(t *testing.T) {
	for _, v := range []int64{0, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 9999, 10000, 10001, 99999, 123456789,
		-1, -9, -10, -99, -100, math.MaxInt64, math.MinInt64, math.MinInt64 + 1, math.MaxInt64 / 2} {
		check(t, v)
	}
	// Every power of ten and its neighbours, where the digit count moves.
	for p := int64(1); p <= math.MaxInt64/10; p *= 10 {
		for _, v := range []int64{p - 1, p, p + 1, -p, -p + 1, 10*p - 1} {
			check(t, v)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		check(t, int64(r.Uint64())>>r.IntN(64))
	}
	if got := string(AppendUint(nil, math.MaxUint64)); got != strconv.FormatUint(math.MaxUint64, 10) {
		t.Errorf("AppendUint(MaxUint64) = %s", got)
	}
}

func BenchmarkAppendInt(b *testing.B) {
	buf := make([]byte, 0, 1<<16)
	for i := 0; b.Loop(); i++ {
		if len(buf) > 1<<16-32 {
			buf = buf[:0]
		}
		buf = AppendInt(buf, int64(i&0xfffff)+1000000)
	}
}

func BenchmarkStrconvAppendInt(b *testing.B) {
	buf := make([]byte, 0, 1<<16)
	for i := 0; b.Loop(); i++ {
		if len(buf) > 1<<16-32 {
			buf = buf[:0]
		}
		buf = strconv.AppendInt(buf, int64(i&0xfffff)+1000000, 10)
	}
}

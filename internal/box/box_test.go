package box

import (
	"math"
	"runtime"
	"testing"
)

// The values made here are real int64 interface values: they compare,
// switch and print as ones Go boxed, and survive collections while the
// memory they point at is all that keeps them.
func TestInt64(t *testing.T) {
	cases := []int{0, 255, 256, -1, 1 << 40, math.MaxInt64, math.MinInt64}
	var kept []any
	for _, n := range cases {
		kept = append(kept, Int64(any(n)))
		x := new(int64)
		*x = int64(n)
		kept = append(kept, Int64At(x))
	}
	runtime.GC()
	runtime.GC()
	for i, v := range kept {
		want := int64(cases[i/2])
		got, ok := v.(int64)
		if !ok || got != want || v != any(want) {
			t.Errorf("value %d: %#v (%T), want int64 %d", i, v, v, want)
		}
		switch v.(type) {
		case int64:
		default:
			t.Errorf("value %d does not switch as an int64", i)
		}
	}
}

// Package decimal writes integers in decimal, in place: strconv.AppendInt
// formats into a buffer of its own and copies the digits over, which for
// the short numbers that cross a process pipe and fill a jsonl line by the
// million costs a third of the formatting.
package decimal

import "math/bits"

const pairs = "00010203040506070809" +
	"10111213141516171819" +
	"20212223242526272829" +
	"30313233343536373839" +
	"40414243444546474849" +
	"50515253545556575859" +
	"60616263646566676869" +
	"70717273747576777879" +
	"80818283848586878889" +
	"90919293949596979899"

// AppendInt appends v in decimal to b, as strconv.AppendInt(b, v, 10).
func AppendInt(b []byte, v int64) []byte {
	u := uint64(v)
	if v < 0 {
		b = append(b, '-')
		u = -u
	}
	return AppendUint(b, u)
}

// AppendUint appends u in decimal to b, as strconv.AppendUint(b, u, 10).
func AppendUint(b []byte, u uint64) []byte {
	if u < 10 {
		return append(b, byte('0'+u))
	}
	i := len(b) + digits(u)
	if cap(b) < i {
		b = append(b, make([]byte, i-len(b))...)
	}
	b = b[:i]
	for u >= 100 {
		q := u / 100
		r := (u - q*100) * 2
		i -= 2
		b[i+1], b[i] = pairs[r+1], pairs[r]
		u = q
	}
	if u >= 10 {
		b[i-1], b[i-2] = pairs[2*u+1], pairs[2*u]
	} else {
		b[i-1] = byte('0' + u)
	}
	return b
}

// digits is how many decimal digits u has: log10 from the bit length
// (1233/4096 is about log10(2)), corrected by one comparison.
func digits(u uint64) int {
	t := bits.Len64(u) * 1233 >> 12
	if u >= pow10[t] {
		t++
	}
	return t
}

var pow10 = [20]uint64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9,
	1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19}

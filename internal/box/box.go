// Package box makes int64 interface values without the allocation Go makes
// for each one it boxes beyond the first 256. It is the one place in flow
// that relies on the layout of an interface value (a type word and a
// pointer to the boxed value, the layout reflect and the compiler share);
// its tests check that layout on every build.
package box

import "unsafe"

// eface is the layout of an interface value with no methods.
type eface struct{ typ, data unsafe.Pointer }

var int64Type = func() unsafe.Pointer {
	var v any = int64(1 << 40)
	return (*eface)(unsafe.Pointer(&v)).typ
}()

// Int64At is the interface value of the int64 at x, which must never be
// written again: the value shares it, as Go's own boxed values are shared.
func Int64At(x *int64) any {
	var v any
	e := (*eface)(unsafe.Pointer(&v))
	e.typ, e.data = int64Type, unsafe.Pointer(x)
	return v
}

// Int64 is n, an int, as an int64 interface value. On 64-bit machines the
// two have the same bytes, so the boxed int is reused with an int64's type
// word instead of being boxed again; v must hold an int.
func Int64(v any) any {
	if unsafe.Sizeof(int(0)) != 8 {
		return int64(v.(int))
	}
	(*eface)(unsafe.Pointer(&v)).typ = int64Type
	return v
}

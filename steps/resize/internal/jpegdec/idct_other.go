//go:build !amd64 || purego

package jpegdec

var useAVX2 = false

func idctAVX2(b, q *block, dst *byte, stride int) { panic("unreachable") }

//go:build libjpeg && !cgo

package resize

// The libjpeg tag needs cgo (CGO_ENABLED=1, a C compiler, libjpeg's
// headers): say so, instead of a list of undefined names.
var _ = libjpegTagNeedsCgoEnabled

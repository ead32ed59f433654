package resize

import (
	"math"
	"sync"
)

// The resampler is a separable convolution on 8-bit samples with integer
// weights, the scheme Pillow uses: for each output column (then row) a
// fixed-size window of weights that sum to 1<<precision. Every plane of an
// image (Y, Cb, Cr, or interleaved RGBA) goes through it unchanged, so a
// JPEG is resized in its own YCbCr planes: 1.5 samples per pixel for 4:2:0
// instead of 4 for RGBA, and no color conversion either way. The filters are
// linear and YCbCr is an affine function of RGB, so the result is the same
// as resizing RGB, up to rounding.

// precision is the number of fraction bits of the weights. 255 times the sum
// of the absolute weights (at most about 1.3 for Lanczos) must fit in an
// int32 after scaling: 255 * 1.3 * 2^22 < 2^31.
const precision = 22

// Filter is a resampling kernel.
type Filter struct {
	Name    string
	Support float64 // radius, in source pixels at scale 1
	Kernel  func(x float64) float64
}

func sinc(x float64) float64 {
	if x == 0 {
		return 1
	}
	x *= math.Pi
	return math.Sin(x) / x
}

var (
	Lanczos = Filter{"lanczos", 3, func(x float64) float64 {
		if x > -3 && x < 3 {
			return sinc(x) * sinc(x/3)
		}
		return 0
	}}
	CatmullRom = Filter{"catmullrom", 2, func(x float64) float64 {
		// Keys cubic with a = -0.5, as Pillow's BICUBIC.
		const a = -0.5
		x = math.Abs(x)
		switch {
		case x < 1:
			return ((a+2)*x-(a+3))*x*x + 1
		case x < 2:
			return (((x-5)*x+8)*x - 4) * a
		}
		return 0
	}}
	Linear = Filter{"linear", 1, func(x float64) float64 {
		x = math.Abs(x)
		if x < 1 {
			return 1 - x
		}
		return 0
	}}
	Box = Filter{"box", 0.5, func(x float64) float64 {
		if x > -0.5 && x <= 0.5 {
			return 1
		}
		return 0
	}}
)

var filters = map[string]Filter{"lanczos": Lanczos, "catmullrom": CatmullRom, "linear": Linear, "box": Box}

// weights maps out samples onto the source interval [off, off+span) of a
// dimension of size in: out[i] = sum over k of coef[i*n+k] * src[start[i]+k].
// Every window has the same n taps (zero-padded), which keeps the inner loops
// free of per-output bounds.
type weights struct {
	n     int
	start []int
	coef  []int32
}

// weightKey identifies a set of weights; a batch of photos from one camera
// resized to one size needs the same few sets for every image, and making
// them (sin, cos) costs over a millisecond per image.
type weightKey struct {
	filter    string
	in, out   int
	off, span float64
}

var weightCache struct {
	sync.Mutex
	m map[weightKey]weights
}

// cachedWeights returns makeWeights' result, shared: weights are never
// written after they are made.
func cachedWeights(f Filter, in int, off, span float64, out int) weights {
	k := weightKey{f.Name, in, out, off, span}
	weightCache.Lock()
	w, ok := weightCache.m[k]
	weightCache.Unlock()
	if ok {
		return w
	}
	w = makeWeights(f, in, off, span, out)
	weightCache.Lock()
	if len(weightCache.m) >= 64 || weightCache.m == nil {
		weightCache.m = make(map[weightKey]weights) // bounded: start over
	}
	weightCache.m[k] = w
	weightCache.Unlock()
	return w
}

// bufPool recycles the large scratch buffers of resampling and decoding,
// which are the same size image after image: allocating them anew costs
// zeroing, page faults and garbage collections (measured: about 3 ms of
// CPU per 1920x1080 image on two workers).
var bufPool sync.Pool // of *[]byte

func getBuf(n int) []byte {
	if p, _ := bufPool.Get().(*[]byte); p != nil && cap(*p) >= n {
		return (*p)[:n]
	}
	return make([]byte, n)
}

func putBuf(b []byte) {
	if cap(b) > 0 {
		bufPool.Put(&b)
	}
}

func makeWeights(f Filter, in int, off, span float64, out int) weights {
	scale := span / float64(out)
	fscale := max(scale, 1) // widen the kernel when shrinking: antialiasing
	support := f.Support * fscale
	n := min(int(math.Ceil(support))*2+1, in)
	w := weights{n: n, start: make([]int, out), coef: make([]int32, out*n)}
	tmp := make([]float64, n)
	for i := 0; i < out; i++ {
		center := off + (float64(i)+0.5)*scale
		lo := max(int(math.Floor(center-support+0.5)), 0)
		hi := min(int(math.Floor(center+support+0.5)), in)
		if hi-lo > n { // rounding at the edges: keep the central n
			lo = hi - n
		}
		if hi <= lo { // degenerate: take the nearest sample
			lo = min(max(int(center), 0), in-1)
			hi = lo + 1
		}
		total := 0.0
		for x := lo; x < hi; x++ {
			v := f.Kernel((float64(x) - center + 0.5) / fscale)
			tmp[x-lo] = v
			total += v
		}
		if total == 0 { // a box narrower than a pixel can miss every sample
			for x := lo; x < hi; x++ {
				tmp[x-lo] = 0
			}
			tmp[min(max(int(center), lo), hi-1)-lo] = 1
			total = 1
		}
		// Shift the window left so that it fits in the source; the weights
		// then sit at an offset inside it.
		start := min(lo, in-n)
		shift := lo - start
		c := w.coef[i*n : (i+1)*n]
		// Round each weight, then give the rounding error to the largest, so
		// that a flat area stays exactly flat.
		sum, big := int32(0), shift
		for k := 0; k < hi-lo; k++ {
			v := int32(math.Round(tmp[k] / total * (1 << precision)))
			c[shift+k] = v
			sum += v
			if v > c[big] {
				big = shift + k
			}
		}
		c[big] += 1<<precision - sum
		w.start[i] = start
	}
	return w
}

func clip8(v int32) uint8 {
	if uint32(v) > 255 {
		if v < 0 {
			return 0
		}
		return 255
	}
	return uint8(v)
}

const half = 1 << (precision - 1)

// plane is c interleaved 8-bit channels of w x h pixels.
type plane struct {
	pix       []uint8
	w, h      int
	stride, c int
}

// resample resizes the region [x0,x0+sw) x [y0,y0+sh) (fractional, in
// source pixels) of src to dw x dh.
func resample(src plane, x0, y0, sw, sh float64, dw, dh int, f Filter) plane {
	c := src.c
	wx := cachedWeights(f, src.w, x0, sw, dw)
	wy := cachedWeights(f, src.h, y0, sh, dh)
	// Horizontal pass first, only over the source rows the vertical pass
	// reads: shrinking the width early makes the second pass cheaper.
	rlo := wy.start[0]
	rhi := wy.start[dh-1] + wy.n
	tmp := plane{pix: getBuf(dw * c * (rhi - rlo)), w: dw, h: rhi - rlo, stride: dw * c, c: c}
	defer putBuf(tmp.pix) // every row is written before it is read
	y := rlo
	if c == 1 {
		p01, p23 := make([]uint64, src.w), make([]uint64, src.w)
		for ; y+4 <= rhi; y += 4 {
			r := func(i int) []uint8 { return src.pix[(y+i)*src.stride : (y+i)*src.stride+src.w] }
			o := func(i int) []uint8 { return tmp.pix[(y+i-rlo)*tmp.stride : (y+i-rlo+1)*tmp.stride] }
			pack2(p01, r(0), r(1))
			pack2(p23, r(2), r(3))
			horizontal1x4(o(0), o(1), o(2), o(3), p01, p23, wx)
		}
	}
	for ; y < rhi; y++ {
		row := src.pix[y*src.stride : y*src.stride+src.w*c]
		out := tmp.pix[(y-rlo)*tmp.stride : (y-rlo+1)*tmp.stride]
		switch c {
		case 1:
			horizontal1(out, row, wx)
		case 4:
			horizontal4(out, row, wx)
		default:
			horizontalN(out, row, wx, c)
		}
	}
	dst := plane{pix: make([]uint8, dw*c*dh), w: dw, h: dh, stride: dw * c, c: c}
	acc := make([]int32, dw*c)
	for y := 0; y < dh; y++ {
		vertical(dst.pix[y*dst.stride:(y+1)*dst.stride], tmp, wy.start[y]-rlo, wy.coef[y*wy.n:(y+1)*wy.n], acc)
	}
	return dst
}

func horizontal1(out, row []uint8, w weights) {
	n := w.n
	for x := range out {
		s := w.start[x]
		cf := w.coef[x*n : x*n+n]
		src := row[s : s+len(cf)]
		acc := int32(half)
		for k, v := range cf {
			acc += v * int32(src[k])
		}
		out[x] = clip8(acc >> precision)
	}
}

// Rows are resampled four at a time in two 64-bit lanes pairs: a packed
// word holds one sample of two rows (row a in the low 32 bits, row b in the
// high ones), and one 64-bit multiply-add by a weight advances both sums.
// Each sum fits in an int32 (see precision), so the low lane is exactly the
// low 32 bits read as signed, and the high lane what remains; a negative
// low sum borrowing from the high lane is undone by that subtraction.

// pack2 interleaves two rows into words.
func pack2(dst []uint64, a, b []uint8) {
	b = b[:len(a)]
	dst = dst[:len(a)]
	for i, v := range a {
		dst[i] = uint64(v) | uint64(b[i])<<32
	}
}

const half2 = int64(half) | int64(half)<<32

func unpack2(acc int64) (uint8, uint8) {
	lo := int64(int32(acc))
	hi := (acc - lo) >> 32
	return clip8(int32(lo) >> precision), clip8(int32(hi) >> precision)
}

// horizontal1x4 resamples four rows given as two packed pairs.
func horizontal1x4(o0, o1, o2, o3 []uint8, p01, p23 []uint64, w weights) {
	n := w.n
	o1, o2, o3 = o1[:len(o0)], o2[:len(o0)], o3[:len(o0)]
	p23 = p23[:len(p01)]
	for x := range o0 {
		s := w.start[x]
		cf := w.coef[x*n : x*n+n]
		a, b := p01[s:s+len(cf)], p23[s:s+len(cf)]
		acc01, acc23 := half2, half2
		for k, v := range cf {
			acc01 += int64(v) * int64(a[k])
			acc23 += int64(v) * int64(b[k])
		}
		o0[x], o1[x] = unpack2(acc01)
		o2[x], o3[x] = unpack2(acc23)
	}
}

func horizontal4(out, row []uint8, w weights) {
	n := w.n
	for x := 0; x < len(out)/4; x++ {
		s := w.start[x] * 4
		src := row[s : s+4*n]
		cf := w.coef[x*n : x*n+n]
		a0, a1, a2, a3 := int32(half), int32(half), int32(half), int32(half)
		for k, v := range cf {
			p := src[4*k : 4*k+4]
			a0 += v * int32(p[0])
			a1 += v * int32(p[1])
			a2 += v * int32(p[2])
			a3 += v * int32(p[3])
		}
		o := out[4*x : 4*x+4]
		o[0], o[1], o[2], o[3] = clip8(a0>>precision), clip8(a1>>precision), clip8(a2>>precision), clip8(a3>>precision)
	}
}

func horizontalN(out, row []uint8, w weights, c int) {
	n := w.n
	for x := 0; x < len(out)/c; x++ {
		s := w.start[x] * c
		cf := w.coef[x*n : x*n+n]
		for ch := 0; ch < c; ch++ {
			acc := int32(half)
			for k, v := range cf {
				acc += v * int32(row[s+k*c+ch])
			}
			out[x*c+ch] = clip8(acc >> precision)
		}
	}
}

// vertical computes one output row from n rows of tmp starting at row r.
// Two source rows per sweep halve the traffic on the accumulators.
func vertical(out []uint8, tmp plane, r int, cf []int32, acc []int32) {
	acc = acc[:len(out)]
	for i := range acc {
		acc[i] = half
	}
	k := 0
	for ; k+2 <= len(cf); k += 2 {
		w0, w1 := cf[k], cf[k+1]
		if w0 == 0 && w1 == 0 {
			continue
		}
		r0 := tmp.pix[(r+k)*tmp.stride : (r+k)*tmp.stride+len(out)]
		r1 := tmp.pix[(r+k+1)*tmp.stride : (r+k+1)*tmp.stride+len(out)]
		for i := range acc {
			acc[i] += w0*int32(r0[i]) + w1*int32(r1[i])
		}
	}
	if k < len(cf) && cf[k] != 0 {
		w0 := cf[k]
		r0 := tmp.pix[(r+k)*tmp.stride : (r+k)*tmp.stride+len(out)]
		for i := range acc {
			acc[i] += w0 * int32(r0[i])
		}
	}
	for i, v := range acc {
		out[i] = clip8(v >> precision)
	}
}

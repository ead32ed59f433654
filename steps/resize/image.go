package resize

import (
	"image"
	"image/draw"
)

// region is a fractional rectangle of the source, in pixels.
type region struct{ x, y, w, h float64 }

// scaleImage resizes region r of img to dw x dh. JPEG images keep their
// YCbCr planes (and subsampling); grayscale stays one plane; everything else
// becomes premultiplied RGBA, so that transparent pixels do not bleed their
// (meaningless) color into their neighbours.
func scaleImage(img image.Image, r region, dw, dh int, f Filter) image.Image {
	switch m := img.(type) {
	case *image.YCbCr:
		return scaleYCbCr(m, r, dw, dh, f, m.SubsampleRatio)
	case *image.Gray:
		b := m.Rect
		p := plane{pix: m.Pix[m.PixOffset(b.Min.X, b.Min.Y):], w: b.Dx(), h: b.Dy(), stride: m.Stride, c: 1}
		out := resample(p, r.x, r.y, r.w, r.h, dw, dh, f)
		return &image.Gray{Pix: out.pix, Stride: out.stride, Rect: image.Rect(0, 0, dw, dh)}
	}
	rgba := toRGBA(img)
	b := rgba.Rect
	p := plane{pix: rgba.Pix, w: b.Dx(), h: b.Dy(), stride: rgba.Stride, c: 4}
	out := resample(p, r.x, r.y, r.w, r.h, dw, dh, f)
	return &image.RGBA{Pix: out.pix, Stride: out.stride, Rect: image.Rect(0, 0, dw, dh)}
}

func toRGBA(img image.Image) *image.RGBA {
	if m, ok := img.(*image.RGBA); ok && m.Rect.Min == (image.Point{}) {
		return m
	}
	b := img.Bounds()
	m := image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	draw.Draw(m, m.Rect, img, b.Min, draw.Src)
	return m
}

// scaleYCbCr resizes region r of m to dw x dh with chroma subsampled as
// ratio says (which may differ from m's).
func scaleYCbCr(m *image.YCbCr, r region, dw, dh int, f Filter, ratio image.YCbCrSubsampleRatio) *image.YCbCr {
	b := m.Rect
	out := image.NewYCbCr(image.Rect(0, 0, dw, dh), ratio)
	yp := plane{pix: m.Y[m.YOffset(b.Min.X, b.Min.Y):], w: b.Dx(), h: b.Dy(), stride: m.YStride, c: 1}
	y := resample(yp, r.x, r.y, r.w, r.h, dw, dh, f)
	out.Y, out.YStride = y.pix, y.stride

	// Chroma planes cover the same area with fewer samples; the region
	// scales with them.
	cw, ch := chromaSize(b.Dx(), b.Dy(), m.SubsampleRatio)
	ow, oh := chromaSize(dw, dh, ratio)
	sx, sy := float64(cw)/float64(b.Dx()), float64(ch)/float64(b.Dy())
	co := m.COffset(b.Min.X, b.Min.Y)
	for _, pl := range []*[]uint8{&out.Cb, &out.Cr} {
		src := m.Cb
		if pl == &out.Cr {
			src = m.Cr
		}
		cp := plane{pix: src[co:], w: cw, h: ch, stride: m.CStride, c: 1}
		res := resample(cp, r.x*sx, r.y*sy, r.w*sx, r.h*sy, ow, oh, f)
		*pl = res.pix
		out.CStride = res.stride
	}
	return out
}

// chromaSize is the size of the chroma planes of a w x h YCbCr image.
func chromaSize(w, h int, r image.YCbCrSubsampleRatio) (int, int) {
	switch r {
	case image.YCbCrSubsampleRatio422:
		return (w + 1) / 2, h
	case image.YCbCrSubsampleRatio420:
		return (w + 1) / 2, (h + 1) / 2
	case image.YCbCrSubsampleRatio440:
		return w, (h + 1) / 2
	case image.YCbCrSubsampleRatio411:
		return (w + 3) / 4, h
	case image.YCbCrSubsampleRatio410:
		return (w + 3) / 4, (h + 1) / 2
	}
	return w, h
}

package resize

import (
	"encoding/binary"
	"image"
)

// jpegOrientation returns the EXIF orientation (1-8) of a JPEG file, or 1
// when there is none or it cannot be read: a damaged EXIF block must not
// fail an image that decodes fine.
func jpegOrientation(data []byte) int {
	if len(data) < 4 || data[0] != 0xFF || data[1] != 0xD8 {
		return 1
	}
	p := 2
	for p+4 <= len(data) {
		if data[p] != 0xFF {
			return 1
		}
		marker := data[p+1]
		if marker == 0xFF { // fill byte
			p++
			continue
		}
		if marker == 0xDA || marker == 0xD9 { // start of scan, end of image: metadata is over
			return 1
		}
		if marker >= 0xD0 && marker <= 0xD7 || marker == 0x01 { // markers without a length
			p += 2
			continue
		}
		n := int(binary.BigEndian.Uint16(data[p+2:]))
		if n < 2 || p+2+n > len(data) {
			return 1
		}
		seg := data[p+4 : p+2+n]
		if marker == 0xE1 && len(seg) > 6 && string(seg[:6]) == "Exif\x00\x00" {
			if o := tiffOrientation(seg[6:]); o != 0 {
				return o
			}
		}
		p += 2 + n
	}
	return 1
}

// tiffOrientation reads tag 0x0112 of IFD0 of a TIFF structure; 0 if absent.
func tiffOrientation(t []byte) int {
	if len(t) < 8 {
		return 0
	}
	var bo binary.ByteOrder
	switch string(t[:2]) {
	case "II":
		bo = binary.LittleEndian
	case "MM":
		bo = binary.BigEndian
	default:
		return 0
	}
	if bo.Uint16(t[2:]) != 42 {
		return 0
	}
	ifd := int(bo.Uint32(t[4:]))
	if ifd < 8 || ifd+2 > len(t) {
		return 0
	}
	count := int(bo.Uint16(t[ifd:]))
	for i := 0; i < count; i++ {
		e := ifd + 2 + 12*i
		if e+12 > len(t) {
			return 0
		}
		if bo.Uint16(t[e:]) != 0x0112 {
			continue
		}
		typ := bo.Uint16(t[e+2:])
		var v int
		switch typ {
		case 3: // SHORT
			v = int(bo.Uint16(t[e+8:]))
		case 4: // LONG, seen in the wild
			v = int(bo.Uint32(t[e+8:]))
		default:
			return 0
		}
		if v >= 1 && v <= 8 {
			return v
		}
		return 0
	}
	return 0
}

// transposed reports whether an orientation swaps width and height.
func transposed(o int) bool { return o >= 5 && o <= 8 }

// orientPlane returns the displayed form of a stored plane: dst(x, y) =
// src(map(x, y)) for the EXIF orientation o.
func orientPlane(src plane, o int) plane {
	w, h, c := src.w, src.h, src.c
	dw, dh := w, h
	if transposed(o) {
		dw, dh = h, w
	}
	dst := plane{pix: make([]uint8, dw*dh*c), w: dw, h: dh, stride: dw * c, c: c}
	for y := 0; y < dh; y++ {
		row := dst.pix[y*dst.stride : (y+1)*dst.stride]
		for x := 0; x < dw; x++ {
			var sx, sy int
			switch o {
			case 2:
				sx, sy = w-1-x, y
			case 3:
				sx, sy = w-1-x, h-1-y
			case 4:
				sx, sy = x, h-1-y
			case 5:
				sx, sy = y, x
			case 6:
				sx, sy = y, h-1-x
			case 7:
				sx, sy = w-1-y, h-1-x
			case 8:
				sx, sy = w-1-y, x
			default:
				sx, sy = x, y
			}
			copy(row[x*c:x*c+c], src.pix[sy*src.stride+sx*c:])
		}
	}
	return dst
}

// orient applies an EXIF orientation to an image made by scaleImage.
func orient(img image.Image, o int) image.Image {
	if o <= 1 || o > 8 {
		return img
	}
	switch m := img.(type) {
	case *image.Gray:
		p := orientPlane(plane{pix: m.Pix, w: m.Rect.Dx(), h: m.Rect.Dy(), stride: m.Stride, c: 1}, o)
		return &image.Gray{Pix: p.pix, Stride: p.stride, Rect: image.Rect(0, 0, p.w, p.h)}
	case *image.RGBA:
		p := orientPlane(plane{pix: m.Pix, w: m.Rect.Dx(), h: m.Rect.Dy(), stride: m.Stride, c: 4}, o)
		return &image.RGBA{Pix: p.pix, Stride: p.stride, Rect: image.Rect(0, 0, p.w, p.h)}
	case *image.YCbCr:
		w, h := m.Rect.Dx(), m.Rect.Dy()
		ratio := m.SubsampleRatio
		if transposed(o) {
			switch ratio {
			case image.YCbCrSubsampleRatio422:
				ratio = image.YCbCrSubsampleRatio440
			case image.YCbCrSubsampleRatio440:
				ratio = image.YCbCrSubsampleRatio422
			case image.YCbCrSubsampleRatio411, image.YCbCrSubsampleRatio410:
				// No transposed form exists: go through RGBA.
				return orient(toRGBA(m), o)
			}
		}
		cw, ch := chromaSize(w, h, m.SubsampleRatio)
		y := orientPlane(plane{pix: m.Y, w: w, h: h, stride: m.YStride, c: 1}, o)
		cb := orientPlane(plane{pix: m.Cb, w: cw, h: ch, stride: m.CStride, c: 1}, o)
		cr := orientPlane(plane{pix: m.Cr, w: cw, h: ch, stride: m.CStride, c: 1}, o)
		return &image.YCbCr{Y: y.pix, Cb: cb.pix, Cr: cr.pix, YStride: y.stride, CStride: cb.stride,
			SubsampleRatio: ratio, Rect: image.Rect(0, 0, y.w, y.h)}
	}
	return orient(toRGBA(img), o)
}

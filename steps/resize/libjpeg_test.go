//go:build libjpeg

package resize

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/jpeg"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/steps/resize/internal/jpegenc"
)

// ycbcr converts m to YCbCr planes with the given subsampling, averaging
// chroma over each block as an encoder would.
func ycbcr(m *image.RGBA, ratio image.YCbCrSubsampleRatio) *image.YCbCr {
	b := m.Rect
	out := image.NewYCbCr(b, ratio)
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			p := m.RGBAAt(x, y)
			yy, cb, cr := color.RGBToYCbCr(p.R, p.G, p.B)
			out.Y[out.YOffset(x, y)] = yy
			// The last pixel of a chroma block wins: good enough for
			// smooth test images.
			out.Cb[out.COffset(x, y)] = cb
			out.Cr[out.COffset(x, y)] = cr
		}
	}
	return out
}

// planesOf returns the planes of a decoded image with their sizes.
func planesOf(t *testing.T, img image.Image) []plane {
	t.Helper()
	switch m := img.(type) {
	case *image.Gray:
		return []plane{{pix: m.Pix, w: m.Rect.Dx(), h: m.Rect.Dy(), stride: m.Stride, c: 1}}
	case *image.YCbCr:
		w, h := m.Rect.Dx(), m.Rect.Dy()
		cw, ch := chromaSize(w, h, m.SubsampleRatio)
		return []plane{
			{pix: m.Y, w: w, h: h, stride: m.YStride, c: 1},
			{pix: m.Cb, w: cw, h: ch, stride: m.CStride, c: 1},
			{pix: m.Cr, w: cw, h: ch, stride: m.CStride, c: 1},
		}
	}
	t.Fatalf("decoded a %T", img)
	return nil
}

// compare returns the largest difference and the PSNR of b against a.
func compare(a, b plane) (int, float64) {
	worst, sq := 0, 0.0
	for y := 0; y < a.h; y++ {
		for x := 0; x < a.w; x++ {
			d := int(a.pix[y*a.stride+x]) - int(b.pix[y*b.stride+x])
			worst = max(worst, d, -d)
			sq += float64(d * d)
		}
	}
	mse := sq / float64(a.w*a.h)
	if mse == 0 {
		return worst, math.Inf(1)
	}
	return worst, 10 * math.Log10(255*255/mse)
}

// TestLibjpegRoundTrip encodes with libjpeg in every subsampling it
// writes, at sizes that are not whole blocks, and decodes with both
// libjpeg and image/jpeg: the planes must agree with each other (two IDCTs
// round differently, by a step or two) and with the source.
func TestLibjpegRoundTrip(t *testing.T) {
	for _, size := range [][2]int{{64, 48}, {37, 23}, {1, 1}, {17, 200}} {
		src := photo(size[0], size[1], 3)
		for _, ratio := range []image.YCbCrSubsampleRatio{image.YCbCrSubsampleRatio444, image.YCbCrSubsampleRatio422,
			image.YCbCrSubsampleRatio420, image.YCbCrSubsampleRatio440} {
			in := ycbcr(src, ratio)
			data, ok, err := libjpegEncode(in, 95)
			if !ok || err != nil {
				t.Fatalf("%v %v: encode: %v %v", size, ratio, ok, err)
			}
			dgot, err := libjpegDecode(data, 8)
			if err != nil {
				t.Fatalf("%v %v: libjpeg decode: %v", size, ratio, err)
			}
			got := dgot.img
			want, err := jpeg.Decode(bytes.NewReader(data))
			if err != nil {
				t.Fatalf("%v %v: image/jpeg decode: %v", size, ratio, err)
			}
			if g, ok := got.(*image.YCbCr); !ok || g.SubsampleRatio != ratio || g.Rect != in.Rect {
				t.Fatalf("%v %v: decoded %T %v", size, ratio, got, got.Bounds())
			}
			gp, wp, sp := planesOf(t, got), planesOf(t, want), planesOf(t, in)
			for i := range gp {
				if d, _ := compare(wp[i], gp[i]); d > 2 {
					t.Errorf("%v %v plane %d: libjpeg and image/jpeg differ by %d", size, ratio, i, d)
				}
				// Quality 95 keeps every sample close to the source, edges
				// included (the padding repeats them).
				if d, _ := compare(sp[i], gp[i]); d > 12 {
					t.Errorf("%v %v plane %d: differs from the source by %d", size, ratio, i, d)
				}
			}
		}
	}
}

func TestLibjpegGray(t *testing.T) {
	src := image.NewGray(image.Rect(0, 0, 45, 31))
	for i := range src.Pix {
		src.Pix[i] = uint8(i * 7)
	}
	data, ok, err := libjpegEncode(src, 90)
	if !ok || err != nil {
		t.Fatalf("encode: %v %v", ok, err)
	}
	dgot, err := libjpegDecode(data, 8)
	if err != nil {
		t.Fatal(err)
	}
	got := dgot.img
	want, err := jpeg.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	g, ok := got.(*image.Gray)
	if !ok || g.Rect != src.Rect {
		t.Fatalf("decoded %T %v", got, got.Bounds())
	}
	if d, _ := compare(planesOf(t, want)[0], planesOf(t, got)[0]); d > 2 {
		t.Fatalf("libjpeg and image/jpeg differ by %d", d)
	}
}

// TestLibjpegDamage cuts and corrupts a JPEG in many ways: every attempt
// must return (an image or an error), never crash, never hang; cuts must
// be errors, as libjpeg would otherwise complete the image with grey.
func TestLibjpegDamage(t *testing.T) {
	full := encodeJPEG(t, photo(120, 90, 4), 90)
	for n := 0; n < len(full)-2; n += 1 + n/40 {
		_, err := libjpegDecode(full[:n], 8)
		if err == nil {
			t.Fatalf("a cut at %d of %d bytes decoded without error", n, len(full))
		}
	}
	r := rand.New(rand.NewPCG(5, 5))
	for i := 0; i < 300; i++ {
		bad := append([]byte{}, full...)
		for k := 0; k < 1+r.IntN(8); k++ {
			bad[r.IntN(len(bad))] = uint8(r.IntN(256))
		}
		d, err := libjpegDecode(bad, 1+r.IntN(8))
		if err == nil && d.img.Bounds().Empty() {
			t.Fatalf("attempt %d: no error and no pixels", i)
		}
	}
}

// TestLibjpegStepMatchesPureGo runs the step, which decodes and encodes
// with libjpeg in this build, and the pure-Go path (image/jpeg, the same
// resampler, jpegenc) on the same photo: the two outputs must look alike.
func TestLibjpegStepMatchesPureGo(t *testing.T) {
	dir := t.TempDir()
	data := encodeJPEG(t, photo(640, 400, 6), 90)
	writeFile(t, filepath.Join(dir, "p.jpg"), data)
	res := run(t, mustStep(t, dir, "width: 300\nheight: 200"), "p.jpg")
	got, _ := readImage(t, res["dest"].(string))

	s := mustStep(t, dir, "width: 300\nheight: 200").(*step)
	src, err := jpeg.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := jpegenc.Encode(&buf, s.transform(decoded{img: src, w: 640, h: 400, orientation: 1}, true), &jpegenc.Options{Quality: 85}); err != nil {
		t.Fatal(err)
	}
	want, err := jpeg.Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	gp, wp := planesOf(t, got), planesOf(t, want)
	for i := range gp {
		if _, psnr := compare(wp[i], gp[i]); psnr < 40 {
			t.Errorf("plane %d: PSNR %.1f dB between the libjpeg and pure-Go outputs, want >= 40", i, psnr)
		}
	}
}

// TestFastDecode checks that 'fast_decode' decodes large JPEGs at a
// reduced scale and that the output stays close to the full decode's.
func TestFastDecode(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "big.jpg"), encodeJPEG(t, benchPhoto(3), 90))
	for _, tc := range []struct {
		opts string
		num  int
	}{
		{"width: 400\nheight: 300", 4},             // 1/2: 960x540
		{"width: 200\nheight: 120", 1},             // 1/8: 240x135
		{"width: 800\nheight: 600", 8},             // 5/8 would do, but is slower than the full decode
		{"width: 100\nheight: 100\nfit: cover", 1}, // out of the central 1080x1080
		{"width: 300\nheight: 300\nfit: cover", 4}, // 2/8 would leave 270x270
	} {
		s := mustStep(t, dir, tc.opts+"\nfast_decode: true").(*step)
		if num := s.shrink(1920, 1080, 1); num != tc.num {
			t.Errorf("%q: decodes at %d/8, want %d/8", tc.opts, num, tc.num)
		}
	}
	// Orientation 6 swaps the axes: 300 wide, 400 high out of 1080x1920
	// displayed needs 1/2 (540x960), not 1/4 (270x480).
	s := mustStep(t, dir, "width: 300\nheight: 400\nfast_decode: true").(*step)
	if num := s.shrink(1920, 1080, 6); num != 4 {
		t.Errorf("orientation 6: %d/8, want 4/8", num)
	}

	for _, opts := range []string{"width: 400\nheight: 300", "width: 200\nheight: 112", "width: 300\nheight: 300\nfit: cover"} {
		full := run(t, mustStep(t, dir, opts+"\nname: full.jpg\nfast_decode: false\nquality: 100"), "big.jpg")
		fast := run(t, mustStep(t, dir, opts+"\nname: fast.jpg\nquality: 100"), "big.jpg") // on by default
		if fast["width"] != full["width"] || fast["height"] != full["height"] {
			t.Fatalf("%q: fast %v, full %v", opts, fast, full)
		}
		a, _ := readImage(t, full["dest"].(string))
		b, _ := readImage(t, fast["dest"].(string))
		ap, bp := planesOf(t, a), planesOf(t, b)
		if _, psnr := compare(ap[0], bp[0]); math.IsInf(psnr, 1) {
			t.Errorf("%q: the same output with and without 'fast_decode'", opts)
		}
		for i := range ap {
			_, psnr := compare(ap[i], bp[i])
			t.Logf("%q plane %d: PSNR %.1f dB", opts, i, psnr)
			if psnr < 45 {
				t.Errorf("%q plane %d: PSNR %.1f dB against the full decode, want >= 45", opts, i, psnr)
			}
		}
	}
}

// TestLibjpegFallsBackToImageJPEG gives libjpeg an RGB-coded JPEG (an
// Adobe marker saying "no transform", no JFIF marker), which it cannot
// hand over as YCbCr planes: image/jpeg decodes it instead.
func TestLibjpegFallsBackToImageJPEG(t *testing.T) {
	data, ok, err := libjpegEncode(ycbcr(quadrants(32, 32), image.YCbCrSubsampleRatio444), 95)
	if !ok || err != nil {
		t.Fatalf("encode: %v %v", ok, err)
	}
	if data[2] != 0xFF || data[3] != 0xE0 {
		t.Fatalf("no JFIF segment first: % x", data[:4])
	}
	app0 := 4 + int(data[4])<<8 | int(data[5])
	adobe := []byte{0xFF, 0xEE, 0, 14, 'A', 'd', 'o', 'b', 'e', 0, 100, 0, 0, 0, 0, 0}
	rgb := append(append(append([]byte{}, data[:2]...), adobe...), data[app0:]...)
	if _, err := libjpegDecode(rgb, 8); err != errNotRaw {
		t.Fatalf("libjpeg decode: %v, want errNotRaw", err)
	}
	d, err := decode(rgb, 1e9, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := d.img.(*image.YCbCr); ok {
		t.Fatalf("decoded as YCbCr, want RGB")
	}
	// The bytes were YCbCr, read as RGB: red comes out in Y, Cb, Cr.
	y, cb, cr := color.RGBToYCbCr(255, 0, 0)
	if c := d.img.At(4, 4); !near(c, color.RGBA{y, cb, cr, 255}, 6) {
		t.Fatalf("pixel %v, want the YCbCr of red read as RGB (%d %d %d)", c, y, cb, cr)
	}
}

func TestLibjpegDecodeError(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "empty.jpg"), []byte{0xFF, 0xD8, 0xFF})
	_, err := mustStep(t, dir, "width: 10").Do(context.Background(), steps.Input{Item: "empty.jpg"})
	if err == nil {
		t.Fatal("a JPEG of three bytes decoded")
	}
	if _, err := os.Stat(filepath.Join(dir, "resized", "empty.jpg")); err == nil {
		t.Fatal("a failed item left an output")
	}
}

// TestJPEGOutputIs420 resizes 4:4:4 and 4:2:2 JPEGs: the output is 4:2:0,
// as the default build (jpegenc) and Pillow write it, with or without a
// reduced-scale decoding.
func TestJPEGOutputIs420(t *testing.T) {
	dir := t.TempDir()
	for _, ratio := range []image.YCbCrSubsampleRatio{image.YCbCrSubsampleRatio444, image.YCbCrSubsampleRatio422} {
		data, ok, err := libjpegEncode(ycbcr(photo(640, 480, 7), ratio), 90)
		if !ok || err != nil {
			t.Fatalf("encode: %v %v", ok, err)
		}
		writeFile(t, filepath.Join(dir, "s.jpg"), data)
		for _, opts := range []string{"width: 320\nfast_decode: false", "width: 100"} {
			res := run(t, mustStep(t, dir, opts), "s.jpg")
			m, _ := readImage(t, res["dest"].(string))
			y, ok := m.(*image.YCbCr)
			if !ok || y.SubsampleRatio != image.YCbCrSubsampleRatio420 {
				t.Errorf("%v source, %q: output %T %v, want 4:2:0", ratio, opts, m, y.SubsampleRatio)
			}
		}
	}
}

package jpegenc

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"math/rand/v2"
	"testing"
)

// The fork must write exactly what image/jpeg writes.
func TestSameBytesAsImageJPEG(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var imgs []image.Image
	for _, size := range [][2]int{{1, 1}, {8, 8}, {16, 16}, {17, 9}, {33, 47}, {161, 121}, {101, 3}} {
		w, h := size[0], size[1]
		for _, ratio := range []image.YCbCrSubsampleRatio{image.YCbCrSubsampleRatio420, image.YCbCrSubsampleRatio444, image.YCbCrSubsampleRatio422} {
			m := image.NewYCbCr(image.Rect(0, 0, w, h), ratio)
			for i := range m.Y {
				m.Y[i] = uint8(r.IntN(256))
			}
			for i := range m.Cb {
				m.Cb[i], m.Cr[i] = uint8(r.IntN(256)), uint8(r.IntN(256))
			}
			imgs = append(imgs, m)
		}
		g := image.NewGray(image.Rect(0, 0, w, h))
		rgba := image.NewRGBA(image.Rect(0, 0, w, h))
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				g.SetGray(x, y, color.Gray{uint8(x*7 + y*3)})
				rgba.SetRGBA(x, y, color.RGBA{uint8(r.IntN(256)), uint8(x), uint8(y), 255})
			}
		}
		imgs = append(imgs, g, rgba)
	}
	// A sub-image whose origin is not (0, 0) takes the generic path.
	imgs = append(imgs, imgs[len(imgs)-5].(*image.YCbCr).SubImage(image.Rect(3, 5, 300, 200)))
	for i, m := range imgs {
		for _, q := range []int{1, 30, 85, 100} {
			var want, got bytes.Buffer
			if err := jpeg.Encode(&want, m, &jpeg.Options{Quality: q}); err != nil {
				t.Fatal(err)
			}
			if err := Encode(&got, m, &Options{Quality: q}); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), want.Bytes()) {
				t.Fatalf("image %d (%T %v) quality %d: output differs from image/jpeg", i, m, m.Bounds(), q)
			}
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	m := image.NewYCbCr(image.Rect(0, 0, 800, 600), image.YCbCrSubsampleRatio420)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range m.Y {
		m.Y[i] = uint8(i%800/4 + r.IntN(30))
	}
	for i := range m.Cb {
		m.Cb[i], m.Cr[i] = uint8(i%400/2), uint8(i/400)
	}
	var buf bytes.Buffer
	b.Run("image-jpeg", func(b *testing.B) {
		for b.Loop() {
			buf.Reset()
			_ = jpeg.Encode(&buf, m, &jpeg.Options{Quality: 85})
		}
	})
	b.Run("jpegenc", func(b *testing.B) {
		for b.Loop() {
			buf.Reset()
			_ = Encode(&buf, m, &Options{Quality: 85})
		}
	})
}

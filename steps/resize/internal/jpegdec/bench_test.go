package jpegdec

import (
	"bytes"
	"image"
	"image/jpeg"
	"math"
	"math/rand/v2"
	"os"
	"testing"
)

// benchJPEG is the JPEG to decode: $FLOW_BENCH_IMAGE (for example one of
// the bench harness's bench/out/images/200x1920x1080/*.jpg), or a
// 1920x1080 quality 90 photo-like image made as the harness makes its
// own: smooth color fields, hard-edged discs and per-pixel grain, whose
// blocks carry many coefficients (decoding time depends on content).
func benchJPEG(b *testing.B) []byte {
	if p := os.Getenv("FLOW_BENCH_IMAGE"); p != "" {
		data, err := os.ReadFile(p)
		if err != nil {
			b.Fatal(err)
		}
		return data
	}
	const w, h = 1920, 1080
	r := rand.New(rand.NewPCG(1, 2))
	m := image.NewRGBA(image.Rect(0, 0, w, h))
	type disc struct{ x, y, r2, c float64 }
	discs := make([]disc, 6)
	for i := range discs {
		rad := h * (0.03 + r.Float64()*0.12)
		discs[i] = disc{r.Float64() * w, r.Float64() * h, rad * rad, r.Float64() * 255}
	}
	for y := range h {
		for x := range w {
			fx, fy := float64(x)/w, float64(y)/h
			base := [3]float64{
				120 + 60*math.Sin(fx*5+fy*2),
				110 + 50*math.Cos(fx*11-fy*7),
				130 + 40*math.Sin(fx*23+fy*17)*math.Cos(fy*3),
			}
			for _, d := range discs {
				if dx, dy := float64(x)-d.x, float64(y)-d.y; dx*dx+dy*dy < d.r2 {
					base = [3]float64{base[0]*0.3 + d.c*0.7, base[1]*0.3 + (255-d.c)*0.7, base[2]}
				}
			}
			grain := r.NormFloat64() * 6
			o := m.PixOffset(x, y)
			for c := range 3 {
				m.Pix[o+c] = clamp8(base[c] + grain + r.NormFloat64()*3)
			}
			m.Pix[o+3] = 255
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, m, &jpeg.Options{Quality: 90}); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkDecode compares this package with image/jpeg on the same
// image; ns/op is the time to decode one image.
func BenchmarkDecode(b *testing.B) {
	data := benchJPEG(b)
	b.Run("jpegdec", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if _, err := Decode(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("image-jpeg", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if _, err := jpeg.Decode(bytes.NewReader(data)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

package resize

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/jpeg"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowrun/flow/steps"
)

// benchPhoto is a 1920x1080 image with photo-like content: smooth shapes,
// edges and noise (JPEG cost depends on content; flat images flatter it).
func benchPhoto(seed uint64) *image.RGBA {
	r := rand.New(rand.NewPCG(seed, 9))
	m := image.NewRGBA(image.Rect(0, 0, 1920, 1080))
	fx, fy := r.Float64()*0.05, r.Float64()*0.05
	for y := 0; y < 1080; y++ {
		for x := 0; x < 1920; x++ {
			v := math.Sin(float64(x)*fx)*math.Cos(float64(y)*fy)*60 + 128
			i := m.PixOffset(x, y)
			m.Pix[i+0] = uint8(x * 255 / 1920)
			m.Pix[i+1] = uint8(v + r.Float64()*20)
			m.Pix[i+2] = uint8(y * 255 / 1080)
			m.Pix[i+3] = 255
		}
	}
	return m
}

// benchImages returns the images to resize: those in $FLOW_BENCH_IMAGES
// (for comparisons with other tools on the very same files), or eight
// generated ones.
func benchImages(b *testing.B) []string {
	if dir := os.Getenv("FLOW_BENCH_IMAGES"); dir != "" {
		paths, _ := filepath.Glob(filepath.Join(dir, "*.jpg"))
		sort.Strings(paths)
		if len(paths) == 0 {
			b.Fatalf("no *.jpg in %s", dir)
		}
		return paths
	}
	dir := b.TempDir()
	var paths []string
	for i := 0; i < 8; i++ {
		var buf bytes.Buffer
		if err := jpeg.Encode(&buf, benchPhoto(uint64(i)), &jpeg.Options{Quality: 90}); err != nil {
			b.Fatal(err)
		}
		p := filepath.Join(dir, fmt.Sprintf("img%02d.jpg", i))
		if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
			b.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

// BenchmarkResize is the guide's resize_image: 1920x1080 JPEG to 800x600,
// Lanczos, quality 85, read from and written to disk, with as many workers
// as -cpu says (flow's `workers`). images/s is the number to compare.
func BenchmarkResize(b *testing.B) {
	paths := benchImages(b)
	s := mustStep(b, b.TempDir(), "width: 800\nheight: 600\nfilter: lanczos\nquality: 85\nout_dir: out")
	var next atomic.Int64
	ct := startCPU()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1)
			if _, err := s.Do(context.Background(), steps.Input{Index: i, Item: paths[int(i)%len(paths)]}); err != nil {
				b.Error(err)
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "images/s")
	ct.report(b, b.N)
}

// BenchmarkPhases splits one image's cost: decode (in full, and at the
// scale 'fast_decode' picks for a 400x300 output: 1/2), resample, encode.
// Built with -tags libjpeg, decode and encode are libjpeg's.
func BenchmarkPhases(b *testing.B) {
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, benchPhoto(1), &jpeg.Options{Quality: 90}); err != nil {
		b.Fatal(err)
	}
	data := buf.Bytes()
	d, err := decode(data, 1e9, nil)
	if err != nil {
		b.Fatal(err)
	}
	img := d.img
	b.Run("decode", func(b *testing.B) {
		ct := startCPU()
		for b.Loop() {
			if _, err := decode(data, 1e9, nil); err != nil {
				b.Fatal(err)
			}
		}
		ct.report(b, b.N)
	})
	if haveLibjpeg {
		s := mustStep(b, b.TempDir(), "width: 400\nheight: 300\nfast_decode: true").(*step)
		b.Run("decode-fast-400x300", func(b *testing.B) {
			ct := startCPU()
			for b.Loop() {
				if _, err := decode(data, 1e9, s.shrink); err != nil {
					b.Fatal(err)
				}
			}
			ct.report(b, b.N)
		})
	}
	for _, f := range []Filter{Lanczos, CatmullRom, Linear, Box} {
		b.Run("resample-"+f.Name, func(b *testing.B) {
			ct := startCPU()
			for b.Loop() {
				scaleImage(img, region{0, 0, 1920, 1080}, 800, 600, f)
			}
			ct.report(b, b.N)
		})
	}
	b.Run("resample-lanczos-rgba", func(b *testing.B) {
		rgba := toRGBA(img)
		ct := startCPU()
		for b.Loop() {
			scaleImage(rgba, region{0, 0, 1920, 1080}, 800, 600, Lanczos)
		}
		ct.report(b, b.N)
	})
	small := scaleImage(img, region{0, 0, 1920, 1080}, 800, 600, Lanczos)
	b.Run("encode", func(b *testing.B) {
		var out bytes.Buffer
		ct := startCPU()
		for b.Loop() {
			out.Reset()
			if err := encode(&out, small, "jpeg", 85); err != nil {
				b.Fatal(err)
			}
		}
		ct.report(b, b.N)
	})
}

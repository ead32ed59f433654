package resize

import (
	"math"
	"math/rand/v2"
	"testing"
)

func randomPlane(r *rand.Rand, w, h, c int) plane {
	p := plane{pix: make([]uint8, w*h*c), w: w, h: h, stride: w * c, c: c}
	for i := range p.pix {
		p.pix[i] = uint8(r.IntN(256))
	}
	return p
}

func TestResampleIdentity(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	for _, f := range []Filter{Lanczos, CatmullRom, Linear, Box} {
		for _, c := range []int{1, 3, 4} {
			src := randomPlane(r, 37, 23, c)
			out := resample(src, 0, 0, 37, 23, 37, 23, f)
			for i := range src.pix {
				if out.pix[i] != src.pix[i] {
					t.Fatalf("%s c=%d: same-size resample changed sample %d: %d -> %d", f.Name, c, i, src.pix[i], out.pix[i])
				}
			}
		}
	}
}

func TestResampleFlatStaysFlat(t *testing.T) {
	for _, f := range []Filter{Lanczos, CatmullRom, Linear, Box} {
		for _, v := range []uint8{0, 1, 128, 254, 255} {
			src := plane{pix: make([]uint8, 300*200), w: 300, h: 200, stride: 300, c: 1}
			for i := range src.pix {
				src.pix[i] = v
			}
			for _, size := range [][2]int{{7, 5}, {123, 77}, {301, 199}, {900, 20}} {
				out := resample(src, 0, 0, 300, 200, size[0], size[1], f)
				for i, got := range out.pix {
					if got != v {
						t.Fatalf("%s %v: flat %d became %d at %d", f.Name, size, v, got, i)
					}
				}
			}
		}
	}
}

// reference resamples in float64 with the textbook formula, no windows
// shared, no fixed point.
func reference(src plane, dw, dh int, f Filter) []float64 {
	axis := func(in, out int) [][2][]float64 {
		scale := float64(in) / float64(out)
		fs := math.Max(scale, 1)
		res := make([][2][]float64, out)
		for i := range res {
			center := (float64(i) + 0.5) * scale
			var idx, ws []float64
			total := 0.0
			for x := 0; x < in; x++ {
				w := f.Kernel((float64(x) + 0.5 - center) / fs)
				if w != 0 {
					idx, ws = append(idx, float64(x)), append(ws, w)
					total += w
				}
			}
			for k := range ws {
				ws[k] /= total
			}
			res[i] = [2][]float64{idx, ws}
		}
		return res
	}
	ax, ay := axis(src.w, dw), axis(src.h, dh)
	out := make([]float64, dw*dh)
	for y := 0; y < dh; y++ {
		for x := 0; x < dw; x++ {
			v := 0.0
			for j, sy := range ay[y][0] {
				row := 0.0
				for i, sx := range ax[x][0] {
					row += ax[x][1][i] * float64(src.pix[int(sy)*src.stride+int(sx)])
				}
				// The fixed-point kernel rounds and clamps between passes.
				v += ay[y][1][j] * math.Min(255, math.Max(0, math.Round(row)))
			}
			out[y*dw+x] = math.Min(255, math.Max(0, v))
		}
	}
	return out
}

func TestResampleMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	for _, f := range []Filter{Lanczos, CatmullRom, Linear, Box} {
		for _, size := range [][4]int{{64, 48, 25, 19}, {50, 50, 120, 80}, {200, 10, 33, 3}, {9, 9, 4, 13}} {
			src := randomPlane(r, size[0], size[1], 1)
			got := resample(src, 0, 0, float64(size[0]), float64(size[1]), size[2], size[3], f)
			want := reference(src, size[2], size[3], f)
			for i, w := range want {
				if d := math.Abs(float64(got.pix[i]) - w); d > 1.5 { // one step of intermediate rounding, half a step of final rounding
					t.Fatalf("%s %v: sample %d = %d, reference %.2f", f.Name, size, i, got.pix[i], w)
				}
			}
		}
	}
}

package main

import (
	"bufio"
	"fmt"
	"image"
	"image/jpeg"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// genVersion is part of every cache key: bump it when a generator changes
// so that stale inputs are not reused.
const genVersion = 1

// cached runs gen into dir unless a previous complete run with the same key
// is there. The marker is written last, so an interrupted generation is
// redone rather than trusted.
func cached(dir, key string, gen func(dir string) error) error {
	marker := filepath.Join(dir, ".complete")
	if b, err := os.ReadFile(marker); err == nil && string(b) == key {
		return nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := gen(dir); err != nil {
		return err
	}
	return os.WriteFile(marker, []byte(key), 0o644)
}

// parallelFiles runs fn(i) for i in [0, n) on two goroutines per CPU.
func parallelFiles(n, workers int, fn func(i int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  = make(chan int)
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

var (
	services = []string{"api", "auth", "billing", "search", "worker", "gateway", "cache", "mailer"}
	methods  = []string{"GET", "GET", "GET", "POST", "PUT", "DELETE"}
	paths    = []string{"/v1/orders", "/v1/users", "/v1/items", "/v1/carts", "/healthz", "/v1/search", "/v2/invoices"}
	infoMsgs = []string{"request served", "cache hit", "cache miss", "connection reused", "job scheduled", "job finished", "token refreshed"}
	warnMsgs = []string{"slow response", "retrying request", "pool nearly exhausted", "deprecated endpoint called", "retrying after upstream ERROR"}
	errMsgs  = []string{"upstream timeout", "connection refused", "panic recovered", "write failed: disk full", "invalid token"}
)

// genLogs writes files log files of about size bytes each. Levels: about 2%
// ERROR, 5% WARN, 12% DEBUG, the rest INFO; one WARN message in five quotes
// an upstream ERROR, so that first-match-wins (a line counts once, as an
// error) differs from counting each word separately, as real logs do.
func genLogs(dir string, files int, size int64, workers int) error {
	return parallelFiles(files, workers, func(i int) error {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("app-%03d.log", i)))
		if err != nil {
			return err
		}
		// Sized to the file: a 1 MiB buffer for each of 10,000 small files
		// raised the harness's own peak RSS, which every child inherits in
		// its ru_maxrss (see harnessHWM).
		w := bufio.NewWriterSize(f, int(min(1<<20, size+4096)))
		r := rand.New(rand.NewPCG(uint64(i), genVersion))
		var line []byte
		var written int64
		sec := int64(1_714_550_400 + i*86400) // 2024-05-01 + i days
		for n := 0; written < size; n++ {
			sec += int64(r.IntN(3))
			line = line[:0]
			line = appendStamp(line, sec, r.IntN(1000))
			var msg string
			switch x := r.IntN(100); {
			case x < 2:
				line = append(line, " ERROR "...)
				msg = errMsgs[r.IntN(len(errMsgs))]
			case x < 7:
				line = append(line, " WARN  "...)
				msg = warnMsgs[r.IntN(len(warnMsgs))]
			case x < 19:
				line = append(line, " DEBUG "...)
				msg = infoMsgs[r.IntN(len(infoMsgs))]
			default:
				line = append(line, " INFO  "...)
				msg = infoMsgs[r.IntN(len(infoMsgs))]
			}
			line = append(line, services[r.IntN(len(services))]...)
			line = append(line, '-')
			line = strconv.AppendInt(line, int64(r.IntN(12)), 10)
			line = append(line, ' ')
			line = append(line, methods[r.IntN(len(methods))]...)
			line = append(line, ' ')
			line = append(line, paths[r.IntN(len(paths))]...)
			line = append(line, '/')
			line = strconv.AppendInt(line, int64(r.IntN(100000)), 10)
			line = append(line, " status="...)
			line = strconv.AppendInt(line, int64(200+r.IntN(4)*100), 10)
			line = append(line, " took="...)
			line = strconv.AppendInt(line, int64(r.IntN(900)), 10)
			line = append(line, "ms trace="...)
			line = strconv.AppendUint(line, r.Uint64()>>16, 16)
			line = append(line, " msg=\""...)
			line = append(line, msg...)
			line = append(line, "\"\n"...)
			if _, err := w.Write(line); err != nil {
				f.Close()
				return err
			}
			written += int64(len(line))
		}
		if err := w.Flush(); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	})
}

func appendStamp(b []byte, sec int64, ms int) []byte {
	return time.Unix(sec, int64(ms)*1e6).UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z")
}

// genImages writes n JPEGs of w x h with photographic-ish content: smooth
// colour fields at three scales plus per-pixel grain, so that neither the
// decoder nor the encoder gets the easy ride of flat colour.
func genImages(dir string, n, w, h int, workers int) error {
	return parallelFiles(n, workers, func(i int) error {
		img := synthImage(uint64(i), w, h)
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("img-%03d.jpg", i)))
		if err != nil {
			return err
		}
		bw := bufio.NewWriter(f)
		if err := jpeg.Encode(bw, img, &jpeg.Options{Quality: 90}); err != nil {
			f.Close()
			return err
		}
		if err := bw.Flush(); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	})
}

// noiseGrid is a random lattice of RGB values sampled with bilinear
// interpolation: value noise at one scale.
type noiseGrid struct {
	gw, gh int
	v      []float64
}

func newGrid(r *rand.Rand, gw, gh int, amp float64) noiseGrid {
	g := noiseGrid{gw: gw, gh: gh, v: make([]float64, (gw+1)*(gh+1)*3)}
	for i := range g.v {
		g.v[i] = (r.Float64()*2 - 1) * amp
	}
	return g
}

func (g noiseGrid) at(fx, fy float64, c int) float64 {
	x, y := fx*float64(g.gw), fy*float64(g.gh)
	x0, y0 := int(x), int(y)
	tx, ty := x-float64(x0), y-float64(y0)
	// Smoothstep hides the lattice.
	tx, ty = tx*tx*(3-2*tx), ty*ty*(3-2*ty)
	i := func(xx, yy int) float64 { return g.v[(yy*(g.gw+1)+xx)*3+c] }
	a := i(x0, y0) + (i(x0+1, y0)-i(x0, y0))*tx
	b := i(x0, y0+1) + (i(x0+1, y0+1)-i(x0, y0+1))*tx
	return a + (b-a)*ty
}

func synthImage(seed uint64, w, h int) *image.RGBA {
	r := rand.New(rand.NewPCG(seed, genVersion+100))
	coarse := newGrid(r, 4, 3, 90)
	mid := newGrid(r, 24, 14, 40)
	fine := newGrid(r, 160, 90, 18)
	base := [3]float64{90 + r.Float64()*80, 90 + r.Float64()*80, 90 + r.Float64()*80}
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	// A sky-to-ground gradient and a few hard-edged discs, as photos have.
	type disc struct {
		x, y, r2 float64
		c        [3]float64
	}
	discs := make([]disc, 6)
	for i := range discs {
		rad := float64(h) * (0.03 + r.Float64()*0.12)
		discs[i] = disc{r.Float64() * float64(w), r.Float64() * float64(h), rad * rad,
			[3]float64{r.Float64() * 255, r.Float64() * 255, r.Float64() * 255}}
	}
	for y := range h {
		fy := float64(y) / float64(h)
		for x := range w {
			fx := float64(x) / float64(w)
			var px [3]float64
			for c := range 3 {
				px[c] = base[c] + (0.5-fy)*60 + coarse.at(fx, fy, c) + mid.at(fx, fy, c) + fine.at(fx, fy, c)
			}
			for _, d := range discs {
				dx, dy := float64(x)-d.x, float64(y)-d.y
				if dx*dx+dy*dy < d.r2 {
					for c := range 3 {
						px[c] = px[c]*0.3 + d.c[c]*0.7 + fine.at(fx, fy, c)
					}
				}
			}
			grain := r.NormFloat64() * 6
			o := img.PixOffset(x, y)
			for c := range 3 {
				img.Pix[o+c] = clamp8(px[c] + grain + r.NormFloat64()*3)
			}
			img.Pix[o+3] = 255
		}
	}
	return img
}

func clamp8(v float64) uint8 {
	return uint8(math.Max(0, math.Min(255, math.Round(v))))
}

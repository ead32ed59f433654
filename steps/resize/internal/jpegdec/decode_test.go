package jpegdec

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// compare checks the property this package promises: where image/jpeg
// decodes data, Decode returns the same image or ErrUnsupported; where
// image/jpeg fails, Decode fails too. It reports a violation as an error.
func compare(data []byte) error {
	want, wantErr := jpeg.Decode(bytes.NewReader(data))
	got, err := Decode(data)
	switch {
	case wantErr != nil && err == nil:
		return fmt.Errorf("image/jpeg fails (%v), Decode succeeds", wantErr)
	case wantErr != nil:
		return nil
	case errors.Is(err, ErrUnsupported):
		return nil
	case err != nil:
		return fmt.Errorf("image/jpeg decodes it, Decode fails: %v", err)
	}
	return sameImage(got, want)
}

// sameImage compares everything image/jpeg's result exposes: type,
// bounds, subsampling, strides and the planes whole (the padding to whole
// MCUs included).
func sameImage(got, want image.Image) error {
	switch w := want.(type) {
	case *image.YCbCr:
		g, ok := got.(*image.YCbCr)
		if !ok {
			return fmt.Errorf("got %T, want %T", got, want)
		}
		if g.Rect != w.Rect || g.SubsampleRatio != w.SubsampleRatio || g.YStride != w.YStride || g.CStride != w.CStride {
			return fmt.Errorf("got %v %v strides %d/%d, want %v %v strides %d/%d",
				g.Rect, g.SubsampleRatio, g.YStride, g.CStride, w.Rect, w.SubsampleRatio, w.YStride, w.CStride)
		}
		for _, p := range []struct {
			name      string
			got, want []byte
		}{{"Y", g.Y, w.Y}, {"Cb", g.Cb, w.Cb}, {"Cr", g.Cr, w.Cr}} {
			if i := firstDiff(p.got, p.want); i >= 0 {
				return fmt.Errorf("%s plane differs at byte %d of %d", p.name, i, len(p.want))
			}
		}
	case *image.Gray:
		g, ok := got.(*image.Gray)
		if !ok {
			return fmt.Errorf("got %T, want %T", got, want)
		}
		if g.Rect != w.Rect || g.Stride != w.Stride {
			return fmt.Errorf("got %v stride %d, want %v stride %d", g.Rect, g.Stride, w.Rect, w.Stride)
		}
		if i := firstDiff(g.Pix, w.Pix); i >= 0 {
			return fmt.Errorf("gray plane differs at byte %d of %d", i, len(w.Pix))
		}
	default:
		return fmt.Errorf("image/jpeg returned %T, which Decode should have left to it", want)
	}
	return nil
}

func firstDiff(a, b []byte) int {
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// photo draws photo-like content: gradients, a hard-edged disc and grain,
// so that blocks carry many coefficients as well as few.
func photo(w, h int, seed uint64, gray bool) image.Image {
	r := rand.New(rand.NewPCG(seed, 3))
	rgba := image.NewRGBA(image.Rect(0, 0, w, h))
	g := image.NewGray(rgba.Rect)
	cx, cy, rad := r.Float64()*float64(w), r.Float64()*float64(h), float64(min(w, h))/3
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			n := r.NormFloat64() * 8
			v := 128 + 60*math.Sin(float64(x)/9)*math.Cos(float64(y)/13) + n
			c := color.RGBA{uint8(x * 255 / max(w, 1)), clamp8(v), uint8(y * 255 / max(h, 1)), 255}
			if dx, dy := float64(x)-cx, float64(y)-cy; dx*dx+dy*dy < rad*rad {
				c = color.RGBA{230, clamp8(40 + n), clamp8(200 - n), 255}
			}
			rgba.SetRGBA(x, y, c)
			g.SetGray(x, y, color.Gray{c.G})
		}
	}
	if gray {
		return g
	}
	return rgba
}

func clamp8(v float64) uint8 { return uint8(max(0, min(255, math.Round(v)))) }

// corpus is image/jpeg-encoded images of many sizes (odd ones, not
// multiples of 8 or 16) and qualities, in color (4:2:0) and gray, white
// noise, and the files of testdata/ (other layouts, restart intervals,
// other encoders).
func corpus(t testing.TB) map[string][]byte {
	files := map[string][]byte{}
	sizes := [][2]int{{1, 1}, {2, 3}, {7, 5}, {8, 8}, {9, 17}, {16, 16}, {17, 9}, {33, 47}, {64, 48}, {101, 3}, {3, 101}, {161, 121}}
	for i, s := range sizes {
		for _, q := range []int{1, 25, 75, 90, 100} {
			for _, gray := range []bool{false, true} {
				var buf bytes.Buffer
				if err := jpeg.Encode(&buf, photo(s[0], s[1], uint64(i), gray), &jpeg.Options{Quality: q}); err != nil {
					t.Fatal(err)
				}
				files[fmt.Sprintf("go-%dx%d-q%d-gray=%v", s[0], s[1], q, gray)] = buf.Bytes()
			}
		}
	}
	// White noise at high quality: the longest codes and the largest
	// values, which is where the bit budget of a refill is spent.
	r := rand.New(rand.NewPCG(9, 9))
	for _, q := range []int{95, 100} {
		for _, gray := range []bool{false, true} {
			m := image.NewRGBA(image.Rect(0, 0, 128, 96))
			for i := range m.Pix {
				m.Pix[i] = uint8(r.IntN(256))
			}
			var img image.Image = m
			if gray {
				g := image.NewGray(m.Rect)
				copy(g.Pix, m.Pix)
				img = g
			}
			var buf bytes.Buffer
			if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: q}); err != nil {
				t.Fatal(err)
			}
			files[fmt.Sprintf("go-noise-q%d-gray=%v", q, gray)] = buf.Bytes()
		}
	}
	paths, err := filepath.Glob("testdata/*.jpg")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files[filepath.Base(p)] = b
	}
	return files
}

// fallback names the testdata files that Decode must leave to image/jpeg.
var fallback = map[string]bool{
	"pil-progressive.jpg":  true,
	"pil-cmyk.jpg":         true,
	"cjpeg-rgb.jpg":        true,
	"cjpeg-arithmetic.jpg": true, // image/jpeg fails on it too
}

func TestSameAsImageJPEG(t *testing.T) {
	files := corpus(t)
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range files {
			if !yield(n) {
				return
			}
		}
	})
	for _, name := range names {
		data := files[name]
		want, wantErr := jpeg.Decode(bytes.NewReader(data))
		got, err := Decode(data)
		if fallback[name] {
			if !errors.Is(err, ErrUnsupported) {
				t.Errorf("%s: err = %v, want ErrUnsupported", name, err)
			}
			continue
		}
		if name == "cjpeg-420-noninterleaved-restart.jpg" {
			// image/jpeg counts restart intervals wrongly in
			// non-interleaved scans of subsampled images; so must Decode.
			if wantErr == nil || err == nil || err.Error() != wantErr.Error() {
				t.Errorf("%s: err = %v, want image/jpeg's %v", name, err, wantErr)
			}
			continue
		}
		if wantErr != nil {
			t.Fatalf("%s: image/jpeg cannot decode a corpus file: %v", name, wantErr)
		}
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if err := sameImage(got, want); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestLayouts makes sure the corpus reaches the code paths it is meant to:
// every subsampling image/jpeg supports, gray, restart intervals and
// non-interleaved scans.
func TestLayouts(t *testing.T) {
	for name, want := range map[string]string{
		"cjpeg-440.jpg":                "4:4:0",
		"cjpeg-411.jpg":                "4:1:1",
		"cjpeg-410.jpg":                "4:1:0",
		"pil-422.jpg":                  "4:2:2",
		"pil-444.jpg":                  "4:4:4",
		"cjpeg-420-noninterleaved.jpg": "4:2:0",
		"cjpeg-gray-2x2.jpg":           "gray",
	} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		m, err := Decode(data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got := "gray"
		if y, ok := m.(*image.YCbCr); ok {
			got = y.SubsampleRatio.String()
			got = strings.TrimPrefix(got, "YCbCrSubsampleRatio")
			got = got[:1] + ":" + got[1:2] + ":" + got[2:]
		}
		if got != want {
			t.Errorf("%s: decoded as %s, want %s", name, got, want)
		}
	}
	for _, name := range []string{"cjpeg-420-restart.jpg", "cjpeg-gray-restart.jpg", "cjpeg-444-noninterleaved-restart.jpg"} {
		data, _ := os.ReadFile(filepath.Join("testdata", name))
		if !bytes.Contains(data, []byte{0xff, rst0Marker}) {
			t.Errorf("%s has no restart marker", name)
		}
	}
}

// TestTruncated cuts every corpus file at many lengths: each cut must fail
// as it does with image/jpeg (which needs the End Of Image marker).
func TestTruncated(t *testing.T) {
	for name, data := range corpus(t) {
		step := max(1, len(data)/120)
		for n := 0; n < len(data); n += step {
			if err := compare(data[:n]); err != nil {
				t.Fatalf("%s cut to %d bytes: %v", name, n, err)
			}
			if _, err := Decode(data[:n]); err == nil {
				t.Fatalf("%s cut to %d bytes decodes", name, n)
			}
		}
		// The last bytes, one by one: EOI, then the end of the scan.
		for n := max(0, len(data)-24); n < len(data); n++ {
			if err := compare(data[:n]); err != nil {
				t.Fatalf("%s cut to %d bytes: %v", name, n, err)
			}
		}
	}
}

// TestTruncatedErrors pins the errors of a cut file: those of image/jpeg.
func TestTruncatedErrors(t *testing.T) {
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, photo(64, 48, 1, false), &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	for _, n := range []int{len(data) / 2, len(data) - 2, len(data) - 1, 3, 100} {
		_, wantErr := jpeg.Decode(bytes.NewReader(data[:n]))
		_, err := Decode(data[:n])
		if err == nil || wantErr == nil || err.Error() != wantErr.Error() {
			t.Errorf("cut to %d bytes: err = %v, want %v", n, err, wantErr)
		}
	}
}

// TestCorrupt damages corpus files: bytes overwritten with random values,
// with 0xFF (markers in entropy-coded data), with 0x00 (stuffing) and
// runs removed. Decode must agree with image/jpeg, and never panic.
func TestCorrupt(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	files := corpus(t)
	n := 0
	for name, data := range files {
		trials := 40
		if testing.Short() {
			trials = 8
		}
		for range trials {
			bad := slices.Clone(data)
			switch k := r.IntN(5); k {
			case 0, 1, 2:
				for range 1 + r.IntN(3) {
					i := r.IntN(len(bad))
					bad[i] = []byte{byte(r.Uint32()), 0xff, 0x00}[k]
				}
			case 3:
				i := r.IntN(len(bad))
				j := min(len(bad), i+1+r.IntN(16))
				bad = append(bad[:i], bad[j:]...)
			case 4:
				// A restart or end marker in the middle of the scan.
				i := len(bad)/2 + r.IntN(len(bad)/2)
				bad = slices.Insert(bad, i, 0xff, byte(0xd0+r.IntN(10)))
			}
			if err := compare(bad); err != nil {
				t.Fatalf("%s, damaged (trial %d): %v", name, n, err)
			}
			n++
		}
	}
}

// TestRestartMarkers damages the restart markers of a file that has them:
// a wrong marker number fails as in image/jpeg, and data between the end
// of an interval and its marker is skipped as image/jpeg does.
func TestRestartMarkers(t *testing.T) {
	data, err := os.ReadFile("testdata/cjpeg-420-restart.jpg")
	if err != nil {
		t.Fatal(err)
	}
	sos := bytes.Index(data, []byte{0xff, sosMarker})
	rst := sos + bytes.Index(data[sos:], []byte{0xff, rst0Marker})
	if sos < 0 || rst <= sos {
		t.Fatal("no restart marker after the SOS")
	}
	for name, bad := range map[string][]byte{
		"wrong number":   slices.Concat(data[:rst], []byte{0xff, rst0Marker + 3}, data[rst+2:]),
		"bytes before":   slices.Concat(data[:rst], []byte{1, 2, 3}, data[rst:]),
		"stuffed before": slices.Concat(data[:rst], []byte{0xff, 0x00, 0x42}, data[rst:]),
		"fill bytes":     slices.Concat(data[:rst], []byte{0xff, 0xff}, data[rst:]),
		"no marker":      slices.Concat(data[:rst], data[rst+2:]),
		"end instead":    slices.Concat(data[:rst], []byte{0xff, eoiMarker}, data[rst+2:]),
	} {
		if err := compare(bad); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		_, wantErr := jpeg.Decode(bytes.NewReader(bad))
		_, err := Decode(bad)
		if (err == nil) != (wantErr == nil) || err != nil && err.Error() != wantErr.Error() {
			t.Errorf("%s: err = %v, image/jpeg's %v", name, err, wantErr)
		}
	}
}

// TestLUTMatchesSlowPath checks the look-up table against the bit-by-bit
// decoding (image/jpeg's) for random prefix codes, full and not.
func TestLUTMatchesSlowPath(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	for trial := range 300 {
		var counts [maxCodeLength]int
		room, total := 1, 0 // room: free codes at the current length
		for l := range maxCodeLength {
			room *= 2
			c := 0
			if room > 0 && total < maxNCodes && r.IntN(3) > 0 {
				c = r.IntN(min(room, maxNCodes-total, 40) + 1)
			}
			if trial%2 == 0 && l == maxCodeLength-1 {
				// Fill up the code space where possible.
				c = min(room, maxNCodes-total)
			}
			counts[l] = c
			total += c
			room -= c
		}
		if total == 0 {
			continue
		}
		seg := []byte{0}
		if trial%3 == 0 {
			seg[0] = 0x10 // AC table
		}
		for _, c := range counts {
			seg = append(seg, byte(c))
		}
		for i := range total {
			seg = append(seg, byte(r.IntN(256)&^0x0f|i%16))
		}
		d := &decoder{data: seg}
		if err := d.processDHT(len(seg)); err != nil {
			t.Fatalf("trial %d: %v", trial, err)
		}
		h := &d.huff[seg[0]>>4][0]
		for idx := range 1 << lutBits {
			e := h.lut[idx]
			acc := uint64(idx)<<(64-lutBits) | r.Uint64()>>lutBits
			sym, l := h.decodeSlow(acc)
			if l > lutBits || l == 0 {
				if e != 0 {
					t.Fatalf("trial %d: index %x has entry %x for a code of %d bits", trial, idx, e, l)
				}
				continue
			}
			if uint8(e>>8) != sym {
				t.Fatalf("trial %d: index %x: symbol %x, slow path %x", trial, idx, uint8(e>>8), sym)
			}
			size := int(sym)
			if seg[0] == 0x10 {
				size &= 0x0f
			}
			if v := e >> 16; v != 0 {
				if int(e&0xff) != int(l)+size || v != extend(acc<<uint(l), uint(size)) {
					t.Fatalf("trial %d: index %x: entry %x, code %d bits, size %d", trial, idx, e, l, size)
				}
			} else if uint(e&0xff) != l {
				t.Fatalf("trial %d: index %x: length %d, slow path %d", trial, idx, e&0xff, l)
			}
		}
	}
}

// An over-full code table (more codes than their lengths can tell apart)
// is left to image/jpeg.
func TestOversubscribedTable(t *testing.T) {
	seg := []byte{0x00, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3}
	d := &decoder{data: seg}
	if err := d.processDHT(len(seg)); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("err = %v, want ErrUnsupported", err)
	}
}

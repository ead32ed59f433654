package jpegdec

import (
	"bytes"
	"image/jpeg"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// FuzzDecode: wherever image/jpeg decodes the input, Decode returns the
// same image or ErrUnsupported; wherever image/jpeg fails, Decode fails;
// it never panics. The seeds are the testdata files (every layout, restart
// intervals, progressive, CMYK, arithmetic), small image/jpeg outputs and
// synthetic streams (synthJPEG).
//
//	go test -fuzz FuzzDecode ./steps/resize/internal/jpegdec
func FuzzDecode(f *testing.F) {
	paths, _ := filepath.Glob("testdata/*.jpg")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for i, s := range [][2]int{{1, 1}, {17, 9}, {33, 20}} {
		for _, gray := range []bool{false, true} {
			var buf bytes.Buffer
			if err := jpeg.Encode(&buf, photo(s[0], s[1], uint64(i), gray), &jpeg.Options{Quality: 50}); err != nil {
				f.Fatal(err)
			}
			f.Add(buf.Bytes())
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 4 {
		f.Add(synthJPEG(r))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// Huge canvases cost time and memory in both decoders and say
		// nothing more than small ones.
		cfg, err := jpeg.DecodeConfig(bytes.NewReader(data))
		if err == nil && cfg.Width*cfg.Height > 1<<20 {
			return
		}
		if err := compare(data); err != nil {
			t.Fatal(err)
		}
	})
}

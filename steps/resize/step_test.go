package resize

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/steps"
)

func buildStep(t testing.TB, dir, opts string) (steps.Step, error) {
	t.Helper()
	r := steps.NewRegistry()
	Register(r)
	k, ok := r.Lookup("resize")
	if !ok {
		t.Fatal("resize not registered")
	}
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(opts), &n); err != nil {
		t.Fatal(err)
	}
	v, err := k.Build(n.Content[0], nil, &steps.Env{Dir: dir})
	if err != nil {
		return nil, err
	}
	return v.Step, nil
}

func mustStep(t testing.TB, dir, opts string) steps.Step {
	t.Helper()
	s, err := buildStep(t, dir, opts)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	return s
}

func run(t testing.TB, s steps.Step, item any) map[string]any {
	t.Helper()
	v, err := s.Do(context.Background(), steps.Input{Item: item})
	if err != nil {
		t.Fatalf("Do(%v): %v", item, err)
	}
	return v.(map[string]any)
}

// quadrants paints the four quadrants of a w x h image red, green, blue and
// white (top left, top right, bottom left, bottom right).
func quadrants(w, h int) *image.RGBA {
	m := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := color.RGBA{255, 0, 0, 255}
			switch {
			case x >= w/2 && y < h/2:
				c = color.RGBA{0, 255, 0, 255}
			case x < w/2 && y >= h/2:
				c = color.RGBA{0, 0, 255, 255}
			case x >= w/2 && y >= h/2:
				c = color.RGBA{255, 255, 255, 255}
			}
			m.SetRGBA(x, y, c)
		}
	}
	return m
}

// photo is smooth gradients plus noise, which JPEG compresses like a
// photograph (quality changes the size noticeably).
func photo(w, h int, seed uint64) *image.RGBA {
	r := rand.New(rand.NewPCG(seed, 7))
	m := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			n := uint8(r.IntN(24))
			m.SetRGBA(x, y, color.RGBA{uint8(x*200/w) + n, uint8(y*200/h) + n, uint8((x+y)*100/(w+h)) + n, 255})
		}
	}
	return m
}

func encodeJPEG(t testing.TB, m image.Image, q int) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, m, &jpeg.Options{Quality: q}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func encodePNG(t testing.TB, m image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, m); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// withEXIF inserts an APP1 EXIF segment holding only an orientation tag
// right after the SOI marker, as cameras do.
func withEXIF(data []byte, orientation int, order binary.ByteOrder) []byte {
	var tiff bytes.Buffer
	if order == binary.BigEndian {
		tiff.WriteString("MM")
	} else {
		tiff.WriteString("II")
	}
	w := func(v any) { _ = binary.Write(&tiff, order, v) }
	w(uint16(42))
	w(uint32(8))      // IFD0 right after the header
	w(uint16(2))      // two entries: an unrelated one first
	w(uint16(0x010F)) // Make, ASCII, 4 bytes inline
	w(uint16(2))
	w(uint32(4))
	tiff.WriteString("ACM\x00")
	w(uint16(0x0112)) // Orientation, SHORT
	w(uint16(3))
	w(uint32(1))
	w(uint16(orientation))
	w(uint16(0))
	w(uint32(0)) // no next IFD
	seg := append([]byte("Exif\x00\x00"), tiff.Bytes()...)
	app1 := []byte{0xFF, 0xE1, 0, 0}
	binary.BigEndian.PutUint16(app1[2:], uint16(len(seg)+2))
	out := append([]byte{}, data[:2]...)
	out = append(out, app1...)
	out = append(out, seg...)
	return append(out, data[2:]...)
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func readImage(t testing.TB, path string) (image.Image, string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, format, err := image.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m, format
}

func TestFitModes(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "in", "wide.png"), encodePNG(t, quadrants(400, 200)))
	for _, tc := range []struct {
		opts string
		w, h int
	}{
		{"width: 100\nheight: 100", 100, 100},
		{"width: 100\nheight: 100\nfit: exact", 100, 100},
		{"width: 100\nheight: 100\nfit: contain", 100, 50},
		{"width: 300\nheight: 100\nfit: contain", 200, 100},
		{"width: 100\nheight: 100\nfit: cover", 100, 100},
		{"width: 100", 100, 50},
		{"height: 50", 100, 50},
		{"width: 800", 800, 400}, // enlarging works too
	} {
		s := mustStep(t, dir, tc.opts)
		res := run(t, s, "in/wide.png")
		m, _ := readImage(t, res["dest"].(string))
		if b := m.Bounds(); b.Dx() != tc.w || b.Dy() != tc.h || res["width"] != int64(tc.w) || res["height"] != int64(tc.h) {
			t.Errorf("%q: got %dx%d (result %v), want %dx%d", tc.opts, b.Dx(), b.Dy(), res, tc.w, tc.h)
		}
	}
}

func near(c color.Color, want color.RGBA, tol int) bool {
	r, g, b, _ := c.RGBA()
	d := func(a uint32, b uint8) bool { x := int(a>>8) - int(b); return x <= tol && x >= -tol }
	return d(r, want.R) && d(g, want.G) && d(b, want.B)
}

var (
	red   = color.RGBA{255, 0, 0, 255}
	green = color.RGBA{0, 255, 0, 255}
	blue  = color.RGBA{0, 0, 255, 255}
	white = color.RGBA{255, 255, 255, 255}
)

func TestCoverCropsTheCenter(t *testing.T) {
	// 300x100: red | white | blue in thirds; cover to 100x100 keeps the
	// middle third only.
	m := image.NewRGBA(image.Rect(0, 0, 300, 100))
	for y := 0; y < 100; y++ {
		for x := 0; x < 300; x++ {
			m.SetRGBA(x, y, []color.RGBA{red, white, blue}[x/100])
		}
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.png"), encodePNG(t, m))
	res := run(t, mustStep(t, dir, "width: 50\nheight: 50\nfit: cover"), "a.png")
	out, _ := readImage(t, res["dest"].(string))
	for _, x := range []int{3, 25, 46} {
		if c := out.At(x, 25); !near(c, white, 8) {
			t.Errorf("pixel (%d,25) = %v, want white: cover must crop the sides", x, c)
		}
	}
	res = run(t, mustStep(t, dir, "width: 60\nheight: 60\nfit: contain\nname: contain.png"), "a.png")
	out, _ = readImage(t, res["dest"].(string))
	if !near(out.At(2, 10), red, 8) || !near(out.At(57, 10), blue, 8) {
		t.Errorf("contain lost the sides: %v %v", out.At(2, 10), out.At(57, 10))
	}
}

func TestQualityChangesSize(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.jpg"), encodeJPEG(t, photo(640, 480, 1), 95))
	sizes := map[int]int64{}
	for _, q := range []int{30, 95} {
		s := mustStep(t, dir, "width: 320\nquality: "+strconv.Itoa(q)+"\nname: '{stem}-q"+strconv.Itoa(q)+".{ext}'")
		res := run(t, s, "p.jpg")
		st, err := os.Stat(res["dest"].(string))
		if err != nil || st.Size() != res["bytes"].(int64) {
			t.Fatalf("bytes %v vs file %v (%v)", res["bytes"], st, err)
		}
		sizes[q] = st.Size()
	}
	if sizes[95] < sizes[30]*3/2 {
		t.Fatalf("quality 95 gave %d bytes, quality 30 %d: quality is not applied", sizes[95], sizes[30])
	}
	// The default is 85: between the two.
	res := run(t, mustStep(t, dir, "width: 320\nname: d.jpg"), "p.jpg")
	if b := res["bytes"].(int64); b <= sizes[30] || b >= sizes[95] {
		t.Fatalf("default quality gave %d bytes, not between %d and %d", b, sizes[30], sizes[95])
	}
}

func TestFormats(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.png"), encodePNG(t, quadrants(64, 64)))
	writeFile(t, filepath.Join(dir, "b.JPG"), encodeJPEG(t, quadrants(64, 64), 90))
	var g bytes.Buffer
	if err := gif.Encode(&g, quadrants(64, 64), nil); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "c.gif"), g.Bytes())
	for _, tc := range []struct{ opts, src, dest, format string }{
		{"format: jpeg", "a.png", "a.jpg", "jpeg"},
		{"format: png", "b.JPG", "b.png", "png"},
		{"format: same", "b.JPG", "b.JPG", "jpeg"}, // the source spelling stays
		{"format: same", "a.png", "a.png", "png"},
		{"format: same", "c.gif", "c.png", "png"}, // GIF is written as PNG
		{"format: jpeg", "c.gif", "c.jpg", "jpeg"},
	} {
		res := run(t, mustStep(t, dir, "width: 32\nout_dir: out-"+tc.format+"\n"+tc.opts), tc.src)
		want := filepath.Join(dir, "out-"+tc.format, tc.dest)
		if res["dest"] != want {
			t.Errorf("%s %s: dest %v, want %s", tc.opts, tc.src, res["dest"], want)
			continue
		}
		m, format := readImage(t, want)
		if format != tc.format || m.Bounds().Dx() != 32 {
			t.Errorf("%s %s: wrote %s %v", tc.opts, tc.src, format, m.Bounds())
		}
		if !near(m.At(8, 8), red, 40) || !near(m.At(24, 24), white, 40) {
			t.Errorf("%s %s: colors lost: %v %v", tc.opts, tc.src, m.At(8, 8), m.At(24, 24))
		}
	}
}

func TestTransparencyOntoWhiteForJPEG(t *testing.T) {
	dir := t.TempDir()
	m := image.NewNRGBA(image.Rect(0, 0, 32, 32)) // fully transparent black
	writeFile(t, filepath.Join(dir, "t.png"), encodePNG(t, m))
	res := run(t, mustStep(t, dir, "width: 16\nformat: jpeg"), "t.png")
	out, _ := readImage(t, res["dest"].(string))
	if !near(out.At(8, 8), white, 2) {
		t.Fatalf("transparent pixel became %v, want white", out.At(8, 8))
	}
	// PNG keeps the alpha channel.
	res = run(t, mustStep(t, dir, "width: 16\nformat: png"), "t.png")
	out, _ = readImage(t, res["dest"].(string))
	if _, _, _, a := out.At(8, 8).RGBA(); a != 0 {
		t.Fatalf("alpha = %d, want 0", a)
	}
}

func TestEXIFOrientation(t *testing.T) {
	// Stored 40x20 quadrants; corners of the displayed image per orientation.
	want := map[int][2]color.RGBA{ // displayed top-left, top-right quadrant
		1: {red, green}, 2: {green, red}, 3: {white, blue}, 4: {blue, white},
		5: {red, blue}, 6: {blue, red}, 7: {white, green}, 8: {green, white},
	}
	dir := t.TempDir()
	base := encodeJPEG(t, quadrants(40, 20), 95)
	for o := 1; o <= 8; o++ {
		for _, order := range []binary.ByteOrder{binary.BigEndian, binary.LittleEndian} {
			writeFile(t, filepath.Join(dir, "o.jpg"), withEXIF(base, o, order))
			dw, dh := 40, 20
			if o >= 5 {
				dw, dh = 20, 40
			}
			// Ask for the displayed width: no scaling, the height follows.
			res := run(t, mustStep(t, dir, "width: "+strconv.Itoa(dw)), "o.jpg")
			m, _ := readImage(t, res["dest"].(string))
			if b := m.Bounds(); b.Dx() != dw || b.Dy() != dh {
				t.Fatalf("orientation %d: %v, want %dx%d", o, b, dw, dh)
			}
			tl, tr := m.At(dw/4, dh/4), m.At(3*dw/4, dh/4)
			if !near(tl, want[o][0], 60) || !near(tr, want[o][1], 60) {
				t.Errorf("orientation %d (%v): top quadrants %v %v, want %v %v", o, order, tl, tr, want[o][0], want[o][1])
			}
		}
	}
}

func TestOrientation6Rotates(t *testing.T) {
	// The case cameras produce most: held upright, stored sideways.
	dir := t.TempDir()
	m := image.NewRGBA(image.Rect(0, 0, 80, 40)) // left half red, right half blue
	for y := 0; y < 40; y++ {
		for x := 0; x < 80; x++ {
			m.SetRGBA(x, y, map[bool]color.RGBA{true: red, false: blue}[x < 40])
		}
	}
	writeFile(t, filepath.Join(dir, "cam.jpg"), withEXIF(encodeJPEG(t, m, 95), 6, binary.BigEndian))
	res := run(t, mustStep(t, dir, "width: 20"), "cam.jpg")
	if res["width"] != int64(20) || res["height"] != int64(40) {
		t.Fatalf("got %v, want 20x40 (rotated)", res)
	}
	out, _ := readImage(t, res["dest"].(string))
	if !near(out.At(10, 5), red, 60) || !near(out.At(10, 35), blue, 60) {
		t.Fatalf("top %v bottom %v, want red over blue", out.At(10, 5), out.At(10, 35))
	}
}

func TestJPEGOrientationParser(t *testing.T) {
	base := encodeJPEG(t, quadrants(8, 8), 50)
	if o := jpegOrientation(base); o != 1 {
		t.Errorf("no EXIF: %d", o)
	}
	good := withEXIF(base, 6, binary.LittleEndian)
	if o := jpegOrientation(good); o != 6 {
		t.Errorf("EXIF 6: %d", o)
	}
	// Every truncation of the EXIF block reads as 1, never panics.
	for n := 0; n < 60; n++ {
		_ = jpegOrientation(good[:n])
	}
	bad := append([]byte{}, good...)
	bad[2+4+6+4+1] = 0x7F // IFD0 offset (after SOI, APP1 header, "Exif\0\0", "II", 42) now points past the end
	if o := jpegOrientation(bad); o != 1 {
		t.Errorf("corrupt EXIF: %d", o)
	}
}

func TestBrokenImages(t *testing.T) {
	dir := t.TempDir()
	full := encodeJPEG(t, photo(200, 150, 2), 90)
	writeFile(t, filepath.Join(dir, "truncated.jpg"), full[:len(full)/2])
	corrupt := append([]byte{}, full...)
	for i := 700; i < len(corrupt)-2; i += 7 {
		corrupt[i] = 0xFF // markers in the middle of entropy-coded data
	}
	writeFile(t, filepath.Join(dir, "corrupt.jpg"), corrupt)
	p := encodePNG(t, quadrants(50, 50))
	writeFile(t, filepath.Join(dir, "truncated.png"), p[:len(p)-30])
	writeFile(t, filepath.Join(dir, "text.jpg"), []byte("hello, not an image"))
	s := mustStep(t, dir, "width: 50")
	for name, want := range map[string]string{
		"truncated.jpg": "truncated", "corrupt.jpg": "corrupt", "truncated.png": "PNG",
		"text.jpg": "not a JPEG, PNG, GIF or WebP image", "missing.jpg": "no such file",
	} {
		_, err := s.Do(context.Background(), steps.Input{Item: name})
		var se *steps.Error
		if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, name)) || !strings.Contains(err.Error(), want) || !errors.As(err, &se) || !se.Permanent {
			t.Errorf("%s: err = %v, want a permanent error naming the file and %q", name, err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "resized")); err == nil {
		entries, _ := os.ReadDir(filepath.Join(dir, "resized"))
		if len(entries) > 0 {
			t.Errorf("broken images left files: %v", entries)
		}
	}
}

func TestMaxPixels(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "big.png"), encodePNG(t, quadrants(100, 100)))
	_, err := mustStep(t, dir, "width: 10\nmax_pixels: 9999").Do(context.Background(), steps.Input{Item: "big.png"})
	if err == nil || !strings.Contains(err.Error(), "max_pixels") {
		t.Fatalf("err = %v", err)
	}
}

func TestNames(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "src", "pic.png"), encodePNG(t, quadrants(40, 20)))
	res := run(t, mustStep(t, dir, "width: 20\nout_dir: out\nname: 'thumbs/{stem}-{width}x{height}.{ext}'"), "src/pic.png")
	if want := filepath.Join(dir, "out", "thumbs", "pic-20x10.png"); res["dest"] != want {
		t.Errorf("dest = %v, want %s", res["dest"], want)
	}
	res = run(t, mustStep(t, dir, "width: 20\nname: '${ index }-{name}'"), "src/pic.png")
	if want := filepath.Join(dir, "resized", "0-pic.png"); res["dest"] != want || res["src"] != filepath.Join(dir, "src", "pic.png") {
		t.Errorf("got %v, want dest %s", res, want)
	}
}

func TestPathEscapeRefused(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pic.png"), encodePNG(t, quadrants(40, 20)))
	// Constant names are refused when the pipeline is checked.
	for _, name := range []string{"../x.png", "/tmp/x.png", "a/../../x.png", "{foo}.png", "{stem"} {
		if _, err := buildStep(t, dir, "width: 10\nname: '"+name+"'"); err == nil {
			t.Errorf("name %q accepted", name)
		}
	}
	// Computed names are refused per item.
	outside := filepath.Join(dir, "outside")
	for _, name := range []string{"${ '../outside/' }{name}", "${ '" + outside + "/' }{name}", "${ '' }"} {
		_, err := mustStep(t, dir, "width: 10\nname: \""+name+"\"").Do(context.Background(), steps.Input{Item: "pic.png"})
		if err == nil || !strings.Contains(err.Error(), "name") {
			t.Errorf("name %q: err = %v", name, err)
		}
	}
	// A symbolic link inside out_dir does not lead outside either.
	if err := os.MkdirAll(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "resized"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "resized", "link")); err != nil {
		t.Fatal(err)
	}
	_, err := mustStep(t, dir, "width: 10\nname: 'link/{name}'").Do(context.Background(), steps.Input{Item: "pic.png"})
	if err == nil {
		t.Error("write through a symlink leaving out_dir succeeded")
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("files written outside out_dir: %v", entries)
	}
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

func TestAtomicWrite(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pic.png"), encodePNG(t, quadrants(40, 20)))
	// An existing file is replaced whole.
	writeFile(t, filepath.Join(dir, "resized", "pic.png"), bytes.Repeat([]byte("old"), 100000))
	res := run(t, mustStep(t, dir, "width: 20"), "pic.png")
	data, err := os.ReadFile(res["dest"].(string))
	if err != nil || int64(len(data)) != res["bytes"].(int64) || bytes.Contains(data, []byte("oldold")) {
		t.Fatalf("destination not replaced whole: %d bytes, result %v", len(data), res)
	}
	if got := listDir(t, filepath.Join(dir, "resized")); strings.Join(got, ",") != "pic.png" {
		t.Fatalf("out_dir holds %v, want only pic.png (no temporary files)", got)
	}
	// A failed rename (the destination is a non-empty directory) leaves no
	// temporary file behind.
	writeFile(t, filepath.Join(dir, "resized", "busy.png", "keep"), []byte("x"))
	_, err = mustStep(t, dir, "width: 20\nname: busy.png").Do(context.Background(), steps.Input{Item: "pic.png"})
	if err == nil || !strings.Contains(err.Error(), "busy.png") {
		t.Fatalf("err = %v", err)
	}
	if got := listDir(t, filepath.Join(dir, "resized")); strings.Join(got, ",") != "busy.png,pic.png" {
		t.Fatalf("out_dir holds %v after a failed write", got)
	}
}

func TestValidation(t *testing.T) {
	for _, tc := range []struct{ opts, want string }{
		{"fit: cover", "set 'width', 'height' or both"},
		{"width: 10\nfit: cover", "needs both"},
		{"width: -1", "negative"},
		{"width: 10\nquality: 101", "between 1 and 100"},
		{"width: 10\nfit: stretch", "must be one of"},
		{"width: 10\nfilter: bicubic", "must be one of"},
		{"width: 10\nformat: webp", "must be one of"},
	} {
		if _, err := buildStep(t, t.TempDir(), tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want %q", tc.opts, err, tc.want)
		}
	}
}

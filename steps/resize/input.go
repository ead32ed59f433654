package resize

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"io"
	"math"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/flowrun/flow/internal/regular"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/tmpl"
)

// sizing is the target of one image: 'width', 'height' (0 derives one from
// the other) and 'fit'.
type sizing struct {
	width, height int
	fit           string
}

const maxSide = 1 << 15

func (z sizing) check() error {
	switch {
	case z.width < 0 || z.height < 0:
		return fmt.Errorf("'width' and 'height' must not be negative, got %dx%d", z.width, z.height)
	case z.width == 0 && z.height == 0:
		return errors.New("'width' and 'height' are both 0; set one of them, or both")
	case z.width > maxSide || z.height > maxSide:
		return fmt.Errorf("'width' and 'height' must be at most %d, got %dx%d", maxSide, z.width, z.height)
	case (z.fit == "contain" || z.fit == "cover") && (z.width == 0 || z.height == 0):
		return fmt.Errorf("'fit: %s' needs both 'width' and 'height', got %dx%d", z.fit, z.width, z.height)
	}
	return nil
}

// constSizing is the sizing when neither size depends on an item or a
// variable; ok is false otherwise.
func (o *Options) constSizing() (z sizing, ok bool, err error) {
	z.fit = o.Fit
	if z.fit == "" {
		z.fit = "exact"
	}
	for _, f := range []struct {
		name string
		t    *tmpl.T
		dst  *int
	}{{"width", o.Width, &z.width}, {"height", o.Height, &z.height}} {
		if f.t == nil {
			continue
		}
		if !f.t.IsConst() {
			return z, false, nil
		}
		v, err := f.t.Eval(&tmpl.Scope{Ctx: context.Background()})
		if err != nil {
			return z, false, err
		}
		if *f.dst, err = sizeValue(f.name, v); err != nil {
			return z, false, err
		}
	}
	return z, true, nil
}

// sizeValue reads a size: a whole number, or a string of digits (what
// 'env' and some '--set' values give).
func sizeValue(name string, v any) (int, error) {
	var n int64
	ok := false
	switch x := v.(type) {
	case int:
		n, ok = int64(x), true
	case int64:
		n, ok = x, true
	case float64:
		if x == math.Trunc(x) && math.Abs(x) <= maxSide*2 {
			n, ok = int64(x), true
		}
	case string:
		i, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64)
		n, ok = i, err == nil
	}
	if !ok {
		return 0, fmt.Errorf("'%s' must be a whole number of pixels, got %s", name, tmpl.Stringify(v))
	}
	if n < math.MinInt32 || n > math.MaxInt32 {
		return 0, fmt.Errorf("'%s' must be at most %d, got %d", name, maxSide, n)
	}
	return int(n), nil
}

// sizingFor evaluates the sizes of one item.
func (s *step) sizingFor(ctx context.Context, in steps.Input) (sizing, error) {
	if s.constSize {
		return s.sizing, nil
	}
	z := s.sizing
	for _, f := range []struct {
		name string
		t    *tmpl.T
		dst  *int
	}{{"width", s.o.Width, &z.width}, {"height", s.o.Height, &z.height}} {
		if f.t == nil {
			continue
		}
		v, err := f.t.Eval(s.env.Scope(ctx, in))
		if err != nil {
			return z, err
		}
		if *f.dst, err = sizeValue(f.name, v); err != nil {
			return z, err
		}
	}
	return z, z.check()
}

const outsideHint = "write inside the pipeline directory, or set 'allow_outside: true'"

// relInside refuses a path relative to the pipeline directory that climbs
// out of it; shown is how the user wrote it.
func relInside(rel, shown string) error {
	c := filepath.Clean(rel)
	if c == ".." || strings.HasPrefix(c, ".."+string(filepath.Separator)) {
		return fmt.Errorf("out_dir %q leaves the pipeline directory; %s", shown, outsideHint)
	}
	return nil
}

// outDir resolves out_dir. Unless allow_outside is set, it must stay in
// the pipeline directory: rel is then its path relative to it, which
// writes follow through an os.Root so that symbolic links cannot lead out
// either.
func (s *step) outDir(v any) (dir, rel string, err error) {
	p, ok := v.(string)
	if !ok || p == "" {
		return "", "", fmt.Errorf("resize needs 'out_dir' as a path, got %s", tmpl.Stringify(v))
	}
	dir = p
	if !filepath.IsAbs(p) && s.env.Dir != "" {
		dir = filepath.Join(s.env.Dir, p)
	}
	if s.o.AllowOutside {
		return dir, "", nil
	}
	abs := p
	if !filepath.IsAbs(p) {
		abs = filepath.Join(s.base, p)
	}
	rel, err = filepath.Rel(s.base, abs)
	if err == nil {
		err = relInside(rel, p)
	}
	if err != nil {
		return "", "", fmt.Errorf("out_dir %q is outside the pipeline directory %s; %s", p, s.base, outsideHint)
	}
	return dir, rel, nil
}

// headerLimit bounds what is read to find an image's size: JPEG metadata
// segments (EXIF, ICC, XMP) before the frame header take up to 64 KiB each.
const headerLimit = 16 << 20

// fileSlack is what the file may hold beyond 8 bytes per pixel: metadata
// of any format, and room to spare.
const fileSlack = 16 << 20

// input is what readImage hands over: the file's bytes, the header's
// size, and the share of the decode budget to give back.
type input struct {
	data  []byte
	cfg   image.Config
	size  int64 // of the file
	cut   bool  // data is a prefix of the file
	grant int64
}

// readImage reads the image at src with every bound checked before the
// memory is taken: src must be a regular file (a FIFO would block the open
// past every timeout; a device never ends), its header must declare at
// most max_pixels, and no more of it is read than any encoding of that
// many pixels needs (8 bytes per pixel, for an uncompressed 16-bit RGBA
// PNG, plus fileSlack): a 20 GB file behind a small header is not read
// whole. It then waits for the image's share of the decode budget.
// at is where the file is read: src itself, or where a test's mocks keep
// it; messages name src.
func (s *step) readImage(ctx context.Context, at, src string, z sizing) (in input, err error) {
	f, fi, err := regular.Open(at)
	if err != nil {
		return in, fileError(src, err)
	}
	defer f.Close()
	decodeErr := func(err error) error {
		return &steps.Error{Err: fmt.Errorf("%s: %v", src, err), Class: "decode", Permanent: true}
	}
	cfg, _, err := image.DecodeConfig(bufio.NewReader(io.LimitReader(f, headerLimit)))
	if err != nil {
		return in, decodeErr(describeDecodeError(err, ""))
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return in, decodeErr(fmt.Errorf("image has no pixels (%dx%d)", cfg.Width, cfg.Height))
	}
	px := int64(cfg.Width) * int64(cfg.Height)
	if px > s.o.MaxPixels {
		return in, decodeErr(fmt.Errorf("image is %dx%d pixels, over 'max_pixels' (%d)", cfg.Width, cfg.Height, s.o.MaxPixels))
	}
	in.cfg, in.size = cfg, fi.Size()
	n := min(in.size, 8*px+fileSlack)
	in.cut = n < in.size
	need := n + estimate(cfg, z.plan)
	if need > s.memory {
		return in, &steps.Error{Class: "too_large", Permanent: true, Err: fmt.Errorf(
			"%s: resizing this %dx%d image needs about %s, more than 'decode_memory' (%s); raise 'decode_memory' or lower 'max_pixels'",
			src, cfg.Width, cfg.Height, mib(need), mib(s.memory))}
	}
	if err := decodeBudget.acquire(ctx, need, s.memory); err != nil {
		return in, err
	}
	in.grant = need
	defer func() {
		if err != nil {
			decodeBudget.release(need)
			in.grant = 0
		}
	}()
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return in, fileError(src, err)
	}
	in.data = make([]byte, n)
	if _, err := io.ReadFull(f, in.data); err != nil {
		if err == io.ErrUnexpectedEOF || err == io.EOF {
			err = errors.New("the file shrank while being read (it is being rewritten?); read it again once it is complete")
			return in, &steps.Error{Err: fmt.Errorf("%s: %v", src, err), Class: "io"}
		}
		return in, fileError(src, err)
	}
	return in, ctx.Err()
}

// estimate is the memory, beyond the file's bytes, that resizing an image
// with this header takes at most: its decoded pixels, the RGBA copy most
// non-JPEG images are converted to, the intermediate image of the
// separable filter, and the output with its encoded form.
func estimate(cfg image.Config, plan func(w, h, o int) (region, int, int)) int64 {
	px := int64(cfg.Width) * int64(cfg.Height)
	var perPixel int64
	switch cfg.ColorModel {
	case color.GrayModel:
		perPixel = 1
	case color.YCbCrModel:
		perPixel = 3 // up to 4:4:4; resampled plane by plane, no RGBA copy
	case color.Gray16Model:
		perPixel = 2 + 4
	case color.RGBAModel:
		perPixel = 4
	case color.NRGBAModel, color.CMYKModel:
		perPixel = 4 + 4
	case color.RGBA64Model, color.NRGBA64Model:
		perPixel = 8 + 4
	default:
		if _, ok := cfg.ColorModel.(color.Palette); ok {
			perPixel = 1 + 4
		} else {
			perPixel = 8 + 4
		}
	}
	_, dw, dh := plan(cfg.Width, cfg.Height, 1)
	out := int64(dw) * int64(dh) * 4
	mid := int64(max(dw, dh)) * int64(max(cfg.Width, cfg.Height)) * 4
	return px*perPixel + mid + 2*out
}

func mib(n int64) string {
	if n >= 10<<20 {
		return strconv.FormatInt(n>>20, 10) + " MiB"
	}
	return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB"
}

// Package resize implements the resize step: decode an image, honour its
// EXIF orientation, resample it with a separable filter (Lanczos by
// default), and write it atomically into an output directory it can never
// leave.
//
// # JPEG decoding and encoding
//
// A default build is cgo-free: jpegdec (internal/jpegdec, image/jpeg's
// decoder forked for baseline JPEGs: the same pixels, about 4x faster, with
// an AVX2 inverse DCT where the CPU has one) decodes, image/jpeg takes the
// JPEGs jpegdec leaves (progressive, CMYK...), and jpegenc (a faster fork
// of image/jpeg's encoder) encodes, so `go build` and `go run ./cmd/flow`
// work anywhere, cross-compiled or with CGO_ENABLED=0. Built with
//
//	go build -tags libjpeg ./cmd/flow
//
// (cgo, a C compiler and the libjpeg headers and library: Debian's
// libjpeg62-turbo-dev), JPEGs are decoded and encoded by libjpeg-turbo
// through its plain libjpeg API, straight from and to YCbCr planes
// (raw_data_out / raw_data_in: no colour conversion, no chroma upsampling),
// which the resampler works on anyway. The tag is an opt-in because cgo
// costs portability: a C toolchain at build time, a shared library at run
// time. JPEGs libjpeg cannot hand over as planes (CMYK, RGB-coded, unusual
// sampling) still go to image/jpeg. libjpeg warnings about damaged data
// (a premature end, a bad Huffman code...) fail the item, as image/jpeg
// does, instead of letting libjpeg fill the image with grey; errors return
// through setjmp/longjmp inside the C functions, never across Go frames.
//
// CPU time per 1920x1080 JPEG to 800x600 (Lanczos, quality 85), measured
// on the bench harness's generated photos (`go test -bench 'Resize|Phases'
// -cpu 1`, load about 1.5):
//
//	                 decode  resample  encode  whole step (BenchmarkResize)
//	default build    6-8 ms  14-17 ms  7 ms    28 ms
//	-tags libjpeg    7 ms    14-15 ms  0.9 ms  21-23 ms
//	Pillow 9.4       ~9 ms   ~26 ms    ~2.7 ms 37 ms (ProcessPoolExecutor(2))
//
// So the default build needs about 0.75 times Pillow's CPU per image, and
// the libjpeg build about 0.6 times, the difference being the encoder. The
// resampler is now the largest part of either.
//
// With libjpeg, 'fast_decode' (on by default) decodes large JPEGs at 1/2,
// 1/4 or 1/8 scale in the DCT domain when the output is small enough; the
// difference from a full decode is below what JPEG quality 100 loses
// (TestFastDecode: luma PSNR 47 to 53 dB). Other scales (5/8 for
// 1920x1080 to 800x600) are not used: libjpeg-turbo has no SIMD code for
// them and decodes them slower than the full image.
package resize

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"image"
	_ "image/gif"
	_ "image/jpeg" // decoder, registered with image.Decode; encoding is jpegenc
	"image/png"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	_ "golang.org/x/image/webp" // decoders register themselves with image.Decode

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/internal/leftover"
	"github.com/flowrun/flow/internal/regular"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/steps/resize/internal/jpegdec"
	"github.com/flowrun/flow/steps/resize/internal/jpegenc"
	"github.com/flowrun/flow/tmpl"
)

// Options are the `with:` keys of resize.
type Options struct {
	Src     *tmpl.T `yaml:"src" desc:"The image to read (JPEG, PNG, GIF or WebP; GIF gives its first frame). Relative paths resolve against the directory of the pipeline file." default:"${ item }" example:"${ item.path }"`
	Width   *tmpl.T `yaml:"width" desc:"Target width in pixels, a whole number or an expression giving one (such as '${ vars.width }', so that '--set width=1024' works; a string of digits is read as the number). Omit it (or give 0) to derive it from 'height' and the aspect ratio." example:"800"`
	Height  *tmpl.T `yaml:"height" desc:"Target height in pixels, a whole number or an expression giving one. Omit it (or give 0) to derive it from 'width' and the aspect ratio." example:"600"`
	Fit     string  `yaml:"fit" enum:"exact,contain,cover" default:"exact" desc:"How the image meets 'width' x 'height': 'exact' stretches to exactly that size, 'contain' scales to fit inside it keeping the aspect ratio (one side may be smaller), 'cover' scales to fill it keeping the aspect ratio and crops the overflow around the center. 'contain' and 'cover' need both 'width' and 'height'."`
	Filter  string  `yaml:"filter" enum:"lanczos,catmullrom,linear,box" default:"lanczos" desc:"Resampling filter: 'lanczos' (Lanczos3, sharpest), 'catmullrom' (bicubic), 'linear' (bilinear, faster) or 'box' (area average, fastest, softest)."`
	Quality int     `yaml:"quality" default:"85" desc:"JPEG quality, 1 (smallest file) to 100 (best image). Ignored for PNG output." example:"85"`
	Format  string  `yaml:"format" enum:"same,jpeg,png" default:"same" desc:"Output format. 'same' keeps JPEG as JPEG and PNG as PNG, and writes GIF and WebP sources as PNG. JPEG output of an image with transparency is flattened onto white."`
	OutDir  *tmpl.T `yaml:"out_dir" default:"resized" desc:"Directory for the resized images, created when missing. Relative paths resolve against the directory of the pipeline file. It must stay inside the pipeline directory (an absolute path inside it is fine), also when computed from an item and through symbolic links, unless 'allow_outside' is true. Files are written atomically (a temporary file in this directory, then a rename), and never outside it." example:"thumbs"`
	// AllowOutside is the write sink's opt-out, under the same name.
	AllowOutside bool    `yaml:"allow_outside" default:"false" desc:"Allow an 'out_dir' outside the pipeline directory: absolute, through '..' or through a symbolic link. Off by default so that a pipeline, or an item, cannot make flow write images elsewhere."`
	Name         *tmpl.T `yaml:"name" default:"{stem}.{ext}" desc:"File name of the output inside 'out_dir'. Placeholders: '{stem}' (source name without extension), '{ext}' (extension of the output format: the source extension when the format is unchanged, else 'jpg' or 'png'), '{name}' (source file name), '{width}' and '{height}' (output size). '${ }' expressions may be used too. Subdirectories are allowed; a name that leaves 'out_dir' ('..', an absolute path) fails the item." example:"{stem}-{width}x{height}.{ext}"`
	// FastDecode is libjpeg's scaled decoding (Pillow's draft mode), on by
	// default as the difference is far below what JPEG quality 100 loses
	// (measured in TestFastDecode: luma PSNR 47 to 53 dB, chroma equal).
	FastDecode *bool `yaml:"fast_decode" default:"true" desc:"With a build that decodes JPEG with libjpeg ('go build -tags libjpeg'), decode a large JPEG directly at 1/2, 1/4 or 1/8 of its size when that still leaves at least the output size, then resample fewer pixels: a 3840x2160 photo to 800x600 decodes at 1920x1080 and takes about a third less CPU time. The output differs from a full decode by less than JPEG quality 100 loses (PSNR above 47 dB). Set 'false' for the full decode always. Without libjpeg every JPEG is decoded in full."`
	// MaxPixels guards against decompression bombs: a small file can
	// declare a huge canvas.
	MaxPixels int64 `yaml:"max_pixels" default:"100000000" desc:"Largest source image accepted, in pixels (width times height), read from the image header: larger images fail the item before the rest of the file is read. Of a file, at most 8 bytes per pixel of its header's size plus 16 MiB is read (more than any encoding of the image needs), so a huge file behind a small header fails quickly too."`
	// DecodeMemory bounds what max_pixels cannot: many images within it
	// at once.
	DecodeMemory *spec.ByteSize `yaml:"decode_memory" default:"2GiB" desc:"Most memory the images being resized at the same time may take together in this process, all resize stages counted: an image waits (honouring timeouts and cancellation) while the others leave too little, and one that needs more on its own fails its item. The need of an image is estimated from its header before its file is read: the bytes read, the decoded pixels (from 1 byte per pixel for grey to 8 for 16-bit RGBA PNGs, plus 4 for a colour conversion), and the resized copies. The default takes any image within the default 'max_pixels'. Each worker process of a stage in process mode has a budget of its own." example:"512MiB"`
}

// defaultDecodeMemory is decode_memory's default: a 100-megapixel 16-bit
// RGBA PNG (the largest the default max_pixels lets through) needs about
// 1.2 GB decoded and converted, plus its file.
const defaultDecodeMemory = 2 << 30

var placeholders = map[string]bool{"stem": true, "ext": true, "name": true, "width": true, "height": true}

// Validate checks what a field alone cannot. Sizes given as expressions
// are checked per item.
func (o *Options) Validate() error {
	switch {
	case o.Width == nil && o.Height == nil:
		return errors.New("set 'width', 'height' or both")
	case (o.Fit == "contain" || o.Fit == "cover") && (o.Width == nil || o.Height == nil):
		return fmt.Errorf("'fit: %s' needs both 'width' and 'height'", o.Fit)
	case o.Quality != 0 && (o.Quality < 1 || o.Quality > 100):
		return fmt.Errorf("'quality' must be between 1 and 100, got %d", o.Quality)
	case o.MaxPixels < 0:
		return errors.New("'max_pixels' must be positive")
	case o.DecodeMemory != nil && *o.DecodeMemory <= 0:
		return errors.New("'decode_memory' must be positive")
	}
	if z, ok, err := o.constSizing(); err != nil {
		return err
	} else if ok {
		if err := z.check(); err != nil {
			return err
		}
	}
	if o.OutDir != nil && o.OutDir.IsConst() && !o.AllowOutside {
		v, _ := o.OutDir.Eval(&tmpl.Scope{Ctx: context.Background()})
		if p, ok := v.(string); ok && p != "" && !filepath.IsAbs(p) {
			if err := relInside(p, p); err != nil {
				return err
			}
		}
	}
	if o.Name != nil {
		if err := checkPlaceholders(o.Name.Source()); err != nil {
			return err
		}
		if o.Name.IsConst() {
			name, _ := expand(o.Name.Source(), map[string]string{"stem": "a", "ext": "jpg", "name": "a.jpg", "width": "1", "height": "1"})
			if err := localName(name); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkPlaceholders finds the {word} placeholders of a name template outside
// its ${ } expressions and refuses unknown ones.
func checkPlaceholders(src string) error {
	for i := 0; i < len(src); i++ {
		switch {
		case strings.HasPrefix(src[i:], "${"):
			// Skip the expression, braces and quotes included.
			depth, quote := 0, byte(0)
			for i += 2; i < len(src); i++ {
				c := src[i]
				if quote != 0 {
					if c == '\\' {
						i++
					} else if c == quote {
						quote = 0
					}
					continue
				}
				if c == '"' || c == '\'' || c == '`' {
					quote = c
				} else if c == '{' {
					depth++
				} else if c == '}' {
					if depth == 0 {
						break
					}
					depth--
				}
			}
		case src[i] == '{':
			j := strings.IndexByte(src[i:], '}')
			if j < 0 {
				return fmt.Errorf("'name' has an unclosed %q; placeholders look like '{stem}'", src[i:])
			}
			if p := src[i+1 : i+j]; !placeholders[p] {
				return fmt.Errorf("'name' has an unknown placeholder {%s}; use {stem}, {ext}, {name}, {width} or {height}", p)
			}
			i += j
		}
	}
	return nil
}

// expand replaces placeholders in an evaluated name.
func expand(name string, vals map[string]string) (string, error) {
	var b strings.Builder
	for {
		i := strings.IndexByte(name, '{')
		if i < 0 {
			b.WriteString(name)
			return b.String(), nil
		}
		j := strings.IndexByte(name[i:], '}')
		if j < 0 {
			return "", fmt.Errorf("output name %q has an unclosed '{'", name)
		}
		v, ok := vals[name[i+1:i+j]]
		if !ok {
			return "", fmt.Errorf("output name %q has an unknown placeholder %s", name, name[i:i+j+1])
		}
		b.WriteString(name[:i])
		b.WriteString(v)
		name = name[i+j+1:]
	}
}

// localName refuses names that would leave the output directory.
func localName(name string) error {
	if name == "" {
		return errors.New("the output name is empty")
	}
	if filepath.IsAbs(name) || strings.HasPrefix(name, "/") || !filepath.IsLocal(name) {
		return fmt.Errorf("output name %q would be written outside 'out_dir'; use a relative name without '..'", name)
	}
	return nil
}

// Register adds this package's kinds to r.
func Register(r *steps.Registry) {
	steps.RegisterStep(r, steps.Kind{
		Name:    "resize",
		Summary: "Resize an image (JPEG, PNG, GIF, WebP) and write it to an output directory",
		Doc: "Decodes one image per item, turns it upright according to its EXIF orientation, resizes it " +
			"and writes it atomically into `out_dir` (a temporary file there, then a rename: readers never see " +
			"half an image, and an existing file is replaced whole). The output can never land outside " +
			"`out_dir`, even through a symbolic link. Resampling is a separable convolution in 8-bit fixed " +
			"point (the scheme Pillow uses), run on the JPEG's own YCbCr planes, which spares the color " +
			"conversions; it is single-threaded per image, as the stage's `workers` run images side by side. " +
			"JPEG output has 4:2:0 chroma subsampling, whatever the source's, as most encoders write by default. " +
			"JPEG decoding and encoding are Go's own by default (a decoder that gives image/jpeg's pixels " +
			"about 4x faster); a `flow` built with `-tags libjpeg` uses libjpeg-turbo instead (about 8x " +
			"faster to encode: a quarter less CPU time per photo) and can then decode large JPEGs at a " +
			"reduced scale (`fast_decode`). " +
			"A corrupt or truncated image fails its item with an error naming the file, and so does, at " +
			"once, anything but a regular file (a FIFO, a device). Memory is bounded before it is taken: " +
			"`max_pixels` is checked on the header, no more of a file is read than its image can need, and " +
			"the images of all resize stages share `decode_memory`. Metadata (EXIF, ICC " +
			"profiles) is not copied; 16-bit PNGs are written with 8 bits per channel.",
		Result:  "`{src: /abs/photos/a.jpg, dest: /abs/resized/a.jpg, width: 800, height: 600, bytes: 91234}`: the resolved source and destination paths, the output size in pixels and in bytes.",
		Example: "src: \"${ item }\"\nwidth: 800\nheight: 600\nfit: cover\nquality: 85\nout_dir: thumbs\nname: \"{stem}-800.{ext}\"\n",
	}, build)
}

type step struct {
	o      *Options
	env    *steps.Env
	filter Filter
	// sizing holds the sizes when they are constant (constSize), and the
	// fit always; sizingFor fills in the sizes of each item otherwise.
	sizing
	constSize bool
	// base is the pipeline directory, absolute: out_dir stays inside it.
	base string
	// memory is decode_memory, in bytes.
	memory int64
	// swept holds the output directories already cleared of leftovers in
	// this run: each is read once, when the first image goes there.
	swept sync.Map
}

func build(o *Options, env *steps.Env) (steps.Step, error) {
	if o.Quality == 0 {
		o.Quality = 85
	}
	if o.Fit == "" {
		o.Fit = "exact"
	}
	if o.Format == "" {
		o.Format = "same"
	}
	if o.MaxPixels == 0 {
		o.MaxPixels = 100_000_000
	}
	f := Lanczos
	if o.Filter != "" {
		f = filters[o.Filter]
	}
	z, constSize, err := o.constSizing()
	if err != nil {
		return nil, err
	}
	// Sizes and out_dir that come from vars and env (--set width=...) are
	// evaluated once, so that a bad value stops the run before any item.
	once := &tmpl.Scope{Vars: env.Vars, Env: env.Env, Ctx: context.Background()}
	if !constSize && (o.Width == nil || !o.Width.UsesItem()) && (o.Height == nil || !o.Height.UsesItem()) {
		for _, f := range []struct {
			name string
			t    *tmpl.T
			dst  *int
		}{{"width", o.Width, &z.width}, {"height", o.Height, &z.height}} {
			if f.t == nil {
				continue
			}
			v, err := f.t.Eval(once)
			if err == nil {
				*f.dst, err = sizeValue(f.name, v)
			}
			if err != nil {
				return nil, at(f.t, "%v", err)
			}
		}
		if err := z.check(); err != nil {
			return nil, at(o.Width, "%v", err)
		}
		constSize = true
	}
	base := env.Dir
	if base == "" {
		base = "."
	}
	if base, err = filepath.Abs(base); err != nil {
		return nil, err
	}
	s := &step{o: o, env: env, filter: f, sizing: z, constSize: constSize, base: base, memory: defaultDecodeMemory}
	if o.DecodeMemory != nil {
		s.memory = int64(*o.DecodeMemory)
	}
	// An out_dir outside the pipeline directory that does not depend on
	// the item is refused before any item runs.
	if o.OutDir != nil && !o.OutDir.UsesItem() {
		v, err := o.OutDir.Eval(once)
		if err == nil {
			_, _, err = s.outDir(v)
		}
		if err != nil {
			return nil, at(o.OutDir, "%v", err)
		}
	}
	return s, nil
}

// at places a build-time error at the option's position in the pipeline
// file, as validation errors are.
func at(t *tmpl.T, format string, args ...any) error {
	if t != nil && t.Node() != nil {
		return conf.Errorf(conf.NodePos(t.Node()), format, args...)
	}
	return fmt.Errorf(format, args...)
}

func (s *step) path(v any, what string) (string, error) {
	p, ok := v.(string)
	if !ok || p == "" {
		return "", fmt.Errorf("resize needs %s as a path, got %s", what, tmpl.Stringify(v))
	}
	if !filepath.IsAbs(p) && s.env.Dir != "" {
		p = filepath.Join(s.env.Dir, p)
	}
	return p, nil
}

func (s *step) eval(ctx context.Context, in steps.Input, t *tmpl.T, def any) (any, error) {
	if t == nil {
		return def, nil
	}
	return t.Eval(s.env.Scope(ctx, in))
}

func (s *step) Do(ctx context.Context, in steps.Input) (any, error) {
	v, err := s.eval(ctx, in, s.o.Src, in.Item)
	if err != nil {
		return nil, steps.Permanent(err)
	}
	src, err := s.path(v, "'src'")
	if err != nil {
		return nil, steps.Permanent(fmt.Errorf("%v; set 'src', for example src: \"${ item.path }\"", err))
	}
	if v, err = s.eval(ctx, in, s.o.OutDir, "resized"); err != nil {
		return nil, steps.Permanent(err)
	}
	outDir, outRel, err := s.outDir(v)
	if err != nil {
		return nil, steps.Permanent(err)
	}
	nameT, err := s.eval(ctx, in, s.o.Name, "{stem}.{ext}")
	if err != nil {
		return nil, steps.Permanent(err)
	}
	z, err := s.sizingFor(ctx, in)
	if err != nil {
		return nil, steps.Permanent(err)
	}

	// Where src is read: src itself, or where a test's mocks keep it.
	at, err := steps.ReadPath(ctx, s.env, in.Index, src)
	if err != nil {
		return nil, err
	}
	img, err := s.readImage(ctx, at, src, z)
	if err != nil {
		return nil, err
	}
	defer decodeBudget.release(img.grant)
	d, err := decode(img.data, s.o.MaxPixels, s.shrinker(z))
	read := int64(len(img.data))
	img.data = nil // the decoded image no longer needs it
	if err != nil {
		if img.cut {
			err = fmt.Errorf("%v; only the first %s of this %s file were read, more than any %dx%d image needs, so it is not a plain image file",
				err, mib(read), mib(img.size), img.cfg.Width, img.cfg.Height)
		}
		return nil, &steps.Error{Err: fmt.Errorf("%s: %v", src, err), Class: "decode", Permanent: true}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	format := d.format
	outFormat, ext := s.o.Format, ""
	if outFormat == "same" {
		outFormat = format
		if format != "jpeg" {
			outFormat = "png"
		}
		// Keep the source spelling (.JPG, .jpeg) when the format is unchanged.
		se := strings.TrimPrefix(filepath.Ext(src), ".")
		if outFormat == format && extFormat[strings.ToLower(se)] == format {
			ext = se
		}
	}
	if ext == "" {
		ext = map[string]string{"jpeg": "jpg", "png": "png"}[outFormat]
	}
	out := s.transformTo(d, outFormat == "jpeg", z)
	d.release() // out never shares pixels with its source
	base := filepath.Base(src)
	b := out.Bounds()
	name, err := expand(tmpl.Stringify(nameT), map[string]string{
		"stem": strings.TrimSuffix(base, filepath.Ext(base)), "ext": ext, "name": base,
		"width": fmt.Sprint(b.Dx()), "height": fmt.Sprint(b.Dy()),
	})
	if err == nil {
		err = localName(name)
	}
	if err != nil {
		return nil, steps.Permanent(fmt.Errorf("%s: %v", src, err))
	}

	var buf bytes.Buffer
	if err := encode(&buf, out, outFormat, s.o.Quality); err != nil {
		return nil, fmt.Errorf("%s: encoding %s: %v", src, outFormat, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := s.writeAtomic(ctx, in.Index, outDir, outRel, name, buf.Bytes()); err != nil {
		return nil, &steps.Error{Err: err, Class: "io", Permanent: errors.Is(err, fs.ErrPermission)}
	}
	return map[string]any{
		"src":    src,
		"dest":   filepath.Join(outDir, filepath.FromSlash(name)),
		"width":  int64(b.Dx()),
		"height": int64(b.Dy()),
		"bytes":  int64(buf.Len()),
	}, nil
}

var extFormat = map[string]string{"jpg": "jpeg", "jpeg": "jpeg", "jpe": "jpeg", "png": "png"}

func fileError(path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return &steps.Error{Err: fmt.Errorf("%s: %v", path, err), Class: "io",
		Permanent: errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) || errors.Is(err, regular.ErrNotRegular)}
}

// decoded is an image as read, before any resampling.
type decoded struct {
	img         image.Image
	format      string
	orientation int
	w, h        int // stored size: img is smaller when decoded at a reduced scale
	// pooled holds img's pixels when they come from bufPool: release
	// gives them back once resampled.
	pooled []byte
}

func (d *decoded) release() {
	putBuf(d.pooled)
	d.pooled, d.img = nil, nil
}

// decode reads the image and its EXIF orientation, refusing canvases larger
// than maxPixels before decoding them. shrink, when set, is asked for the
// JPEG decoding scale (in eighths) given the stored size and orientation;
// the image returned is then that much smaller than the stored one.
func decode(data []byte, maxPixels int64, shrink func(w, h, o int) int) (decoded, error) {
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return decoded{}, describeDecodeError(err, "")
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return decoded{}, fmt.Errorf("image has no pixels (%dx%d)", cfg.Width, cfg.Height)
	}
	if px := int64(cfg.Width) * int64(cfg.Height); px > maxPixels {
		return decoded{}, fmt.Errorf("image is %dx%d pixels, over 'max_pixels' (%d)", cfg.Width, cfg.Height, maxPixels)
	}
	o := 1
	if format == "jpeg" {
		o = jpegOrientation(data)
		if haveLibjpeg {
			num := 8
			if shrink != nil {
				num = shrink(cfg.Width, cfg.Height, o)
			}
			d, err := libjpegDecode(data, num)
			if err == nil {
				d.format, d.orientation, d.w, d.h = format, o, cfg.Width, cfg.Height
				return d, nil
			}
			if !errors.Is(err, errNotRaw) {
				return decoded{}, describeDecodeError(err, format)
			}
		}
		// jpegdec returns image/jpeg's image, pixel for pixel, in about a
		// fifth of the time; what it leaves (progressive, CMYK...) goes on
		// to image/jpeg below.
		img, err := jpegdec.Decode(data)
		if err == nil {
			return decoded{img: img, format: format, orientation: o, w: cfg.Width, h: cfg.Height}, nil
		}
		if !errors.Is(err, jpegdec.ErrUnsupported) {
			return decoded{}, describeDecodeError(err, format)
		}
	}
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return decoded{}, describeDecodeError(err, format)
	}
	return decoded{img: img, format: format, orientation: o, w: cfg.Width, h: cfg.Height}, nil
}

func describeDecodeError(err error, format string) error {
	switch {
	case errors.Is(err, image.ErrFormat):
		return errors.New("not a JPEG, PNG, GIF or WebP image")
	case strings.Contains(err.Error(), "unexpected EOF") || isTruncated(err):
		return fmt.Errorf("cannot decode %s: the file is truncated", strings.ToUpper(format))
	case format == "":
		return fmt.Errorf("cannot read the image header: %v", err)
	}
	return fmt.Errorf("cannot decode %s: %v (the file is corrupt)", strings.ToUpper(format), err)
}

func isTruncated(err error) bool {
	t, ok := err.(interface{ truncated() bool })
	return ok && t.truncated()
}

// plan computes, for a stored image of w x h pixels with EXIF orientation
// o, the region of the stored image to resample and the size to resample
// it to (both in the stored orientation: orient turns the result upright).
func (s sizing) plan(w, h, o int) (region, int, int) {
	sw, sh := float64(w), float64(h)
	if transposed(o) {
		sw, sh = sh, sw
	}
	tw, th := float64(s.width), float64(s.height)
	switch {
	case tw == 0:
		tw = sw * th / sh
	case th == 0:
		th = sh * tw / sw
	}
	r := region{0, 0, sw, sh}
	switch s.fit {
	case "contain":
		k := math.Min(tw/sw, th/sh)
		tw, th = sw*k, sh*k
	case "cover":
		k := math.Max(tw/sw, th/sh)
		cw, ch := tw/k, th/k
		r = region{(sw - cw) / 2, (sh - ch) / 2, cw, ch}
	}
	dw, dh := max(int(math.Round(tw)), 1), max(int(math.Round(th)), 1)
	// The crop is centered, so flips leave it in place; only a transposition
	// swaps its axes.
	if transposed(o) {
		r = region{r.y, r.x, r.h, r.w}
		dw, dh = dh, dw
	}
	return r, dw, dh
}

// transform resamples the decoded image, which may be smaller than the
// stored one (decoded at a reduced scale), and turns the result upright.
// For JPEG output, YCbCr chroma is resampled straight to 4:2:0, what
// image/jpeg's encoder and Pillow write: a 4:4:4 source (or a reduced-scale
// decoding, which libjpeg returns as 4:4:4) costs no extra conversion.
func (s *step) transform(d decoded, jpegOut bool) image.Image {
	return s.transformTo(d, jpegOut, s.sizing)
}

// transformTo is transform to the sizes of z.
func (s *step) transformTo(d decoded, jpegOut bool, z sizing) image.Image {
	r, dw, dh := z.plan(d.w, d.h, d.orientation)
	b := d.img.Bounds()
	if b.Dx() != d.w || b.Dy() != d.h {
		kx, ky := float64(b.Dx())/float64(d.w), float64(b.Dy())/float64(d.h)
		r = region{r.x * kx, r.y * ky, r.w * kx, r.h * ky}
	}
	var out image.Image
	if m, ok := d.img.(*image.YCbCr); ok && jpegOut {
		out = scaleYCbCr(m, r, dw, dh, s.filter, image.YCbCrSubsampleRatio420)
	} else {
		out = scaleImage(d.img, r, dw, dh, s.filter)
	}
	return orient(out, d.orientation)
}

// shrinker is what decode asks for the JPEG decoding scale, nil for a
// full decode always.
func (s *step) shrinker(z sizing) func(w, h, o int) int {
	if s.o.FastDecode != nil && !*s.o.FastDecode {
		return nil
	}
	return z.shrink
}

// shrink is the JPEG decoding scale, in eighths, for 'fast_decode': the
// smallest that keeps the region to resample at least as large as the
// output in both directions, so that the filter still only shrinks. Only
// 1/8, 1/4 and 1/2 are offered: libjpeg-turbo has SIMD code for those,
// while its other scales (3/8, 5/8...) decode slower than the full image
// (measured: 5/8 of a 1920x1080 image 10.5 ms, the full image 6.2 ms).
func (s sizing) shrink(w, h, o int) int {
	r, dw, dh := s.plan(w, h, o)
	for num := 1; num < 8; num *= 2 {
		if r.w*float64(num)/8 >= float64(dw) && r.h*float64(num)/8 >= float64(dh) {
			return num
		}
	}
	return 8
}

func encode(buf *bytes.Buffer, img image.Image, format string, quality int) error {
	if format == "png" {
		if m, ok := img.(*image.YCbCr); ok {
			img = toRGBA(m)
		}
		return (&png.Encoder{CompressionLevel: png.DefaultCompression}).Encode(buf, img)
	}
	if m, ok := img.(*image.RGBA); ok {
		flatten(m)
	}
	if data, ok, err := libjpegEncode(img, quality); ok {
		if err == nil {
			buf.Write(data)
		}
		return err
	}
	return jpegenc.Encode(buf, img, &jpegenc.Options{Quality: quality})
}

// flatten composites premultiplied RGBA onto white, as JPEG has no alpha.
func flatten(m *image.RGBA) {
	for i := 0; i+3 < len(m.Pix); i += 4 {
		p := m.Pix[i : i+4 : i+4]
		if a := p[3]; a != 255 {
			p[0] += 255 - a
			p[1] += 255 - a
			p[2] += 255 - a
			p[3] = 255
		}
	}
}

// openOutDir creates and opens out_dir, dir. With rel set (out_dir
// confined to the pipeline directory, as rel inside it), every step goes
// through an os.Root of the pipeline directory, so that a symbolic link on
// the way cannot lead out of it, whenever it was put there. Under a test's
// mocks the folder opened is where they keep dir or the pipeline directory.
func (s *step) openOutDir(ctx context.Context, index int64, dir, rel string) (*os.Root, error) {
	if rel == "" {
		at, err := steps.WritePath(ctx, s.env, index, dir)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(at, 0o755); err != nil {
			return nil, fmt.Errorf("creating 'out_dir': %w", err)
		}
		return os.OpenRoot(at)
	}
	top, err := steps.WritePath(ctx, s.env, index, s.base)
	if err != nil {
		return nil, err
	}
	base, err := os.OpenRoot(top)
	if err != nil {
		return nil, fmt.Errorf("opening the pipeline directory: %w", err)
	}
	defer base.Close()
	if rel != "." {
		if err := base.MkdirAll(rel, 0o755); err != nil {
			return nil, outDirError(dir, err)
		}
	}
	root, err := base.OpenRoot(rel)
	if err != nil {
		return nil, outDirError(dir, err)
	}
	return root, nil
}

// outDirError explains os.Root's refusal to follow a link out.
func outDirError(dir string, err error) error {
	if strings.Contains(err.Error(), "escapes") {
		return fmt.Errorf("out_dir %s leads out of the pipeline directory through a symbolic link; %s: %w", dir, outsideHint, fs.ErrPermission)
	}
	return fmt.Errorf("creating 'out_dir': %w", err)
}

// writeAtomic writes data to name inside out_dir (dir, rel: see
// openOutDir): a temporary file in the same directory, then a rename over
// the destination. All file operations go through an os.Root, so neither
// '..' nor a symbolic link can lead outside dir.
func (s *step) writeAtomic(ctx context.Context, index int64, dir, rel, name string, data []byte) error {
	root, err := s.openOutDir(ctx, index, dir, rel)
	if err != nil {
		return err
	}
	defer root.Close()
	swept := &s.swept
	sub := filepath.Dir(name)
	if sub != "." {
		if err := root.MkdirAll(sub, 0o755); err != nil {
			return fmt.Errorf("%s: %w", filepath.Join(dir, name), err)
		}
	}
	// The pid in the name says which run a leftover belongs to: a run
	// killed with SIGKILL cannot remove its temporary files, so the next
	// run removes those of dead pids, once per directory it writes to.
	if _, seen := swept.LoadOrStore(filepath.Join(dir, sub), true); !seen {
		leftover.Sweep(root, sub, tempOwner)
	}
	var rnd [tempRandom / 2]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(sub, "."+filepath.Base(name)+".tmp-"+strconv.Itoa(os.Getpid())+"-"+hex.EncodeToString(rnd[:]))
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(dir, name), err)
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = root.Rename(tmp, name)
	}
	if err != nil {
		_ = root.Remove(tmp)
		return fmt.Errorf("writing %s: %w", filepath.Join(dir, name), err)
	}
	return nil
}

// tempRandom is the length of the random hex part of a temporary name.
const tempRandom = 12

// tempOwner recognises the temporary files writeAtomic names
// ".NAME.tmp-PID-RANDOM", RANDOM being tempRandom lower-case hex digits,
// and returns their writer's pid.
func tempOwner(name string) (int, bool) {
	i := strings.LastIndex(name, ".tmp-")
	if !strings.HasPrefix(name, ".") || i < 2 {
		return 0, false
	}
	pid, rnd, ok := strings.Cut(name[i+len(".tmp-"):], "-")
	if !ok || !leftover.AllDigits(pid) || len(rnd) != tempRandom || strings.Trim(rnd, "0123456789abcdef") != "" {
		return 0, false
	}
	n, err := strconv.Atoi(pid)
	return n, err == nil
}

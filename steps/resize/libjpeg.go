//go:build libjpeg

package resize

/*
#cgo LDFLAGS: -ljpeg
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <jpeglib.h>
#include <jerror.h>

// libjpeg reports errors by calling error_exit, which must not return. It
// longjmps back to the C function that called into libjpeg, never across a
// Go frame: every exported function below sets its own jump point.
typedef struct {
	struct jpeg_error_mgr pub;
	jmp_buf jb;
	int code;
	char msg[JMSG_LENGTH_MAX];
} flow_err;

static void flow_error_exit(j_common_ptr c) {
	flow_err *e = (flow_err *)c->err;
	e->code = e->pub.msg_code;
	(*c->err->format_message)(c, e->msg);
	longjmp(e->jb, 1);
}

// Warnings are where libjpeg carries on over damage: a truncated file is
// completed with grey, a corrupt segment skipped. The item must fail
// instead, as with image/jpeg. Stray bytes before a marker are tolerated,
// as image/jpeg tolerates them.
static void flow_emit_message(j_common_ptr c, int level) {
	flow_err *e = (flow_err *)c->err;
	if (level >= 0 || e->pub.msg_code == JWRN_EXTRANEOUS_DATA) {
		return;
	}
	flow_error_exit(c);
}

static void flow_err_init(flow_err *e) {
	jpeg_std_error(&e->pub);
	e->pub.error_exit = flow_error_exit;
	e->pub.emit_message = flow_emit_message;
	e->code = 0;
	e->msg[0] = 0;
}

typedef struct {
	struct jpeg_decompress_struct d;
	flow_err err;
	int created;
} flow_dec;

enum { FLOW_MAXC = 3 };

// Layout of the decoded planes: per component its size, the row length
// libjpeg writes (whole blocks) and the rows it writes (whole iMCU rows).
typedef struct {
	int width, height, ncomp;
	int hr, vr; // luma samples per chroma sample, across and down
	int cw[FLOW_MAXC], ch[FLOW_MAXC], stride[FLOW_MAXC], rows[FLOW_MAXC];
} flow_layout;

// flow_dec_header reads the header. *raw is set when the planes can be
// read as they are stored (grey, or YCbCr with subsampled chroma that
// image.YCbCr can describe); other colour spaces go to image/jpeg.
static int flow_dec_header(flow_dec *h, const unsigned char *data, unsigned long n, int *w, int *hgt, int *raw) {
	flow_err_init(&h->err);
	h->d.err = &h->err.pub;
	if (setjmp(h->err.jb)) {
		return 1;
	}
	jpeg_create_decompress(&h->d);
	h->created = 1;
	jpeg_mem_src(&h->d, data, n);
	jpeg_read_header(&h->d, TRUE);
	*w = h->d.image_width;
	*hgt = h->d.image_height;
	*raw = 0;
	jpeg_component_info *c = h->d.comp_info;
	if (h->d.num_components == 1 && h->d.jpeg_color_space == JCS_GRAYSCALE) {
		*raw = 1;
	} else if (h->d.num_components == 3 && h->d.jpeg_color_space == JCS_YCbCr &&
	           c[1].h_samp_factor == 1 && c[1].v_samp_factor == 1 &&
	           c[2].h_samp_factor == 1 && c[2].v_samp_factor == 1 &&
	           (c[0].h_samp_factor == 1 || c[0].h_samp_factor == 2 || c[0].h_samp_factor == 4) &&
	           (c[0].v_samp_factor == 1 || c[0].v_samp_factor == 2)) {
		*raw = 1;
	}
	return 0;
}

// flow_dec_start starts decompression at scale num/8 and reports the
// plane layout.
static int flow_dec_start(flow_dec *h, int num, flow_layout *l) {
	if (setjmp(h->err.jb)) {
		return 1;
	}
	h->d.raw_data_out = TRUE;
	h->d.out_color_space = h->d.jpeg_color_space;
	h->d.scale_num = num;
	h->d.scale_denom = 8;
	h->d.dct_method = JDCT_ISLOW;
	jpeg_start_decompress(&h->d);
	l->width = h->d.output_width;
	l->height = h->d.output_height;
	l->ncomp = h->d.num_components;
	int imcu = h->d.max_v_samp_factor * h->d.min_DCT_scaled_size;
	int nimcu = (h->d.output_height + imcu - 1) / imcu;
	l->hr = l->vr = 1;
	if (h->d.num_components == 3) {
		jpeg_component_info *y = &h->d.comp_info[0], *c = &h->d.comp_info[1];
		l->hr = (y->h_samp_factor * y->DCT_scaled_size) / (c->h_samp_factor * c->DCT_scaled_size);
		l->vr = (y->v_samp_factor * y->DCT_scaled_size) / (c->v_samp_factor * c->DCT_scaled_size);
	}
	for (int i = 0; i < h->d.num_components && i < FLOW_MAXC; i++) {
		jpeg_component_info *c = &h->d.comp_info[i];
		l->cw[i] = c->downsampled_width;
		l->ch[i] = c->downsampled_height;
		l->stride[i] = c->width_in_blocks * c->DCT_scaled_size;
		l->rows[i] = nimcu * c->v_samp_factor * c->DCT_scaled_size;
	}
	return 0;
}

// flow_dec_read decodes into planes laid out as flow_dec_start said.
static int flow_dec_read(flow_dec *h, unsigned char *p0, unsigned char *p1, unsigned char *p2) {
	JSAMPROW rows[FLOW_MAXC][4 * DCTSIZE * 2];
	JSAMPARRAY arr[FLOW_MAXC];
	unsigned char *planes[FLOW_MAXC] = {p0, p1, p2};
	if (setjmp(h->err.jb)) {
		return 1;
	}
	int imcu = h->d.max_v_samp_factor * h->d.min_DCT_scaled_size;
	int y = 0;
	while (h->d.output_scanline < h->d.output_height) {
		for (int i = 0; i < h->d.num_components; i++) {
			jpeg_component_info *c = &h->d.comp_info[i];
			int n = c->v_samp_factor * c->DCT_scaled_size;
			int stride = c->width_in_blocks * c->DCT_scaled_size;
			for (int r = 0; r < n; r++) {
				rows[i][r] = planes[i] + (size_t)(y * n + r) * stride;
			}
			arr[i] = rows[i];
		}
		if (jpeg_read_raw_data(&h->d, arr, imcu) == 0) {
			// Only a suspending data source returns short; memory does not.
			ERREXIT(&h->d, JERR_INPUT_EMPTY);
		}
		y++;
	}
	jpeg_finish_decompress(&h->d);
	return 0;
}

static void flow_dec_destroy(flow_dec *h) {
	if (h->created) {
		jpeg_destroy_decompress(&h->d);
	}
}

// flow_dest collects the compressed bytes in a buffer that grows by
// doubling. It is ours, not libjpeg's, so that the error path can free it
// (jpeg_mem_dest loses track of its buffer when it fails half way).
typedef struct {
	struct jpeg_destination_mgr pub;
	unsigned char *buf;
	size_t cap;
} flow_dest;

static void flow_dest_init(j_compress_ptr c) {
	flow_dest *d = (flow_dest *)c->dest;
	d->pub.next_output_byte = d->buf;
	d->pub.free_in_buffer = d->cap;
}

static boolean flow_dest_empty(j_compress_ptr c) {
	flow_dest *d = (flow_dest *)c->dest;
	size_t n = d->cap * 2;
	unsigned char *nb = realloc(d->buf, n);
	if (nb == NULL) {
		ERREXIT1(c, JERR_OUT_OF_MEMORY, 10);
	}
	d->buf = nb;
	d->pub.next_output_byte = nb + d->cap;
	d->pub.free_in_buffer = n - d->cap;
	d->cap = n;
	return TRUE;
}

static void flow_dest_term(j_compress_ptr c) {}

// flow_encode compresses planes (grey: one; YCbCr: three, chroma
// subsampled by hs x vs) at quality q into d->buf, which the caller frees.
// Rows are padded to whole blocks by repeating the last column and row,
// as libjpeg does itself when it subsamples.
static int flow_encode(int w, int h, int ncomp, int hs, int vs,
                       unsigned char *p0, int s0, unsigned char *p1, unsigned char *p2, int s1,
                       int q, flow_dest *d, size_t *outlen, char *msg) {
	struct jpeg_compress_struct c;
	flow_err err;
	unsigned char *volatile scratch = NULL;
	volatile int created = 0;
	flow_err_init(&err);
	c.err = &err.pub;
	if (setjmp(err.jb)) {
		strcpy(msg, err.msg);
		if (created) {
			jpeg_destroy_compress(&c);
		}
		free(scratch);
		return 1;
	}
	jpeg_create_compress(&c);
	created = 1;
	d->cap = (size_t)w * h / 4 + 4096;
	d->buf = malloc(d->cap);
	if (d->buf == NULL) {
		ERREXIT1(&c, JERR_OUT_OF_MEMORY, 11);
	}
	d->pub.init_destination = flow_dest_init;
	d->pub.empty_output_buffer = flow_dest_empty;
	d->pub.term_destination = flow_dest_term;
	c.dest = &d->pub;
	c.image_width = w;
	c.image_height = h;
	c.input_components = ncomp;
	c.in_color_space = ncomp == 1 ? JCS_GRAYSCALE : JCS_YCbCr;
	jpeg_set_defaults(&c);
	jpeg_set_quality(&c, q, TRUE);
	c.dct_method = JDCT_ISLOW;
	c.raw_data_in = TRUE;
	if (ncomp == 3) {
		c.comp_info[0].h_samp_factor = hs;
		c.comp_info[0].v_samp_factor = vs;
		for (int i = 1; i < 3; i++) {
			c.comp_info[i].h_samp_factor = 1;
			c.comp_info[i].v_samp_factor = 1;
		}
	} else {
		c.comp_info[0].h_samp_factor = 1;
		c.comp_info[0].v_samp_factor = 1;
	}
	jpeg_start_compress(&c, TRUE);

	unsigned char *planes[FLOW_MAXC] = {p0, p1, p2};
	int strides[FLOW_MAXC] = {s0, s1, s1};
	int pw[FLOW_MAXC], ph[FLOW_MAXC], padw[FLOW_MAXC];
	size_t total = 0;
	int lines = c.max_v_samp_factor * DCTSIZE;
	for (int i = 0; i < ncomp; i++) {
		jpeg_component_info *ci = &c.comp_info[i];
		pw[i] = (w * ci->h_samp_factor + c.max_h_samp_factor - 1) / c.max_h_samp_factor;
		ph[i] = (h * ci->v_samp_factor + c.max_v_samp_factor - 1) / c.max_v_samp_factor;
		padw[i] = ci->width_in_blocks * DCTSIZE;
		total += (size_t)padw[i] * ci->v_samp_factor * DCTSIZE;
	}
	scratch = malloc(total);
	if (scratch == NULL) {
		ERREXIT1(&c, JERR_OUT_OF_MEMORY, 12);
	}
	JSAMPROW rows[FLOW_MAXC][2 * DCTSIZE];
	JSAMPARRAY arr[FLOW_MAXC];
	for (int y = 0; c.next_scanline < c.image_height; y++) {
		unsigned char *s = scratch;
		for (int i = 0; i < ncomp; i++) {
			int n = c.comp_info[i].v_samp_factor * DCTSIZE;
			for (int r = 0; r < n; r++) {
				int sy = y * n + r;
				if (sy >= ph[i]) {
					sy = ph[i] - 1;
				}
				unsigned char *src = planes[i] + (size_t)sy * strides[i];
				if (padw[i] == pw[i]) {
					rows[i][r] = src;
				} else {
					memcpy(s, src, pw[i]);
					memset(s + pw[i], src[pw[i] - 1], padw[i] - pw[i]);
					rows[i][r] = s;
				}
				s += padw[i];
			}
			arr[i] = rows[i];
		}
		jpeg_write_raw_data(&c, arr, lines);
	}
	jpeg_finish_compress(&c);
	*outlen = d->cap - d->pub.free_in_buffer;
	jpeg_destroy_compress(&c);
	free(scratch);
	return 0;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"image"
	"runtime"
	"unsafe"
)

// haveLibjpeg says that JPEGs go through libjpeg(-turbo).
const haveLibjpeg = true

// errNotRaw sends a JPEG libjpeg cannot hand over as planes (CMYK, YCCK,
// RGB, unusual sampling) to image/jpeg.
var errNotRaw = errors.New("libjpeg: no plane layout for this JPEG")

// jpegError is a failure reported by libjpeg.
type jpegError struct {
	code int
	msg  string
}

func (e *jpegError) Error() string { return e.msg }

// truncated says whether the data ended early.
func (e *jpegError) truncated() bool {
	return e.code == C.JWRN_JPEG_EOF || e.code == C.JERR_INPUT_EMPTY || e.code == C.JERR_INPUT_EOF
}

func decError(h *C.flow_dec) error {
	return &jpegError{code: int(h.err.code), msg: C.GoString(&h.err.msg[0])}
}

// libjpegDecode decodes a JPEG at scale num/8 into its own planes
// (*image.YCbCr or *image.Gray, in d.img). The planes come from bufPool:
// d.release gives them back.
func libjpegDecode(data []byte, num int) (d decoded, err error) {
	if len(data) == 0 {
		return d, &jpegError{code: C.JERR_INPUT_EMPTY, msg: "empty file"}
	}
	h := (*C.flow_dec)(C.calloc(1, C.sizeof_flow_dec))
	if h == nil {
		return d, errors.New("libjpeg: out of memory")
	}
	defer func() {
		C.flow_dec_destroy(h)
		C.free(unsafe.Pointer(h))
	}()
	// libjpeg keeps reading data between calls: it must not move.
	var pin runtime.Pinner
	pin.Pin(&data[0])
	defer pin.Unpin()
	var w, ht, raw C.int
	if C.flow_dec_header(h, (*C.uchar)(&data[0]), C.ulong(len(data)), &w, &ht, &raw) != 0 {
		return d, decError(h)
	}
	if raw == 0 {
		return d, errNotRaw
	}
	var l C.flow_layout
	if C.flow_dec_start(h, C.int(num), &l) != 0 {
		return d, decError(h)
	}
	width, height := int(l.width), int(l.height)
	total := 0
	for i := 0; i < int(l.ncomp); i++ {
		total += int(l.stride[i]) * int(l.rows[i])
	}
	// libjpeg writes every sample of these planes, padding included.
	buf := getBuf(total)
	defer func() {
		if err != nil {
			putBuf(buf)
		}
	}()
	var planes [3][]byte
	for i, off := 0, 0; i < int(l.ncomp); i++ {
		n := int(l.stride[i]) * int(l.rows[i])
		planes[i] = buf[off : off+n : off+n]
		off += n
	}
	ptr := func(i int) *C.uchar {
		if planes[i] == nil {
			return nil
		}
		return (*C.uchar)(&planes[i][0])
	}
	if C.flow_dec_read(h, ptr(0), ptr(1), ptr(2)) != 0 {
		return d, decError(h)
	}
	rect := image.Rect(0, 0, width, height)
	if l.ncomp == 1 {
		return decoded{img: &image.Gray{Pix: planes[0], Stride: int(l.stride[0]), Rect: rect}, pooled: buf}, nil
	}
	if l.stride[1] != l.stride[2] || l.cw[1] != l.cw[2] {
		return d, errNotRaw
	}
	// Scaled decoding may return the chroma at another ratio than stored
	// (libjpeg prefers scaling chroma up in its IDCT to upsampling it).
	ratio, ok := ratios[[2]int{int(l.hr), int(l.vr)}]
	cw, ch := chromaSize(width, height, ratio)
	if !ok || int(l.cw[0]) != width || int(l.ch[0]) != height || int(l.cw[1]) != cw || int(l.ch[1]) != ch {
		return d, fmt.Errorf("libjpeg: unexpected planes %dx%d, %dx%d (1:%d, 1:%d) for %dx%d", l.cw[0], l.ch[0], l.cw[1], l.ch[1], l.hr, l.vr, width, height)
	}
	return decoded{img: &image.YCbCr{Y: planes[0], Cb: planes[1], Cr: planes[2], YStride: int(l.stride[0]), CStride: int(l.stride[1]),
		SubsampleRatio: ratio, Rect: rect}, pooled: buf}, nil
}

// ratios names chroma subsampling by its luma samples per chroma sample,
// across and down.
var ratios = map[[2]int]image.YCbCrSubsampleRatio{
	{1, 1}: image.YCbCrSubsampleRatio444, {2, 1}: image.YCbCrSubsampleRatio422, {2, 2}: image.YCbCrSubsampleRatio420,
	{1, 2}: image.YCbCrSubsampleRatio440, {4, 1}: image.YCbCrSubsampleRatio411, {4, 2}: image.YCbCrSubsampleRatio410,
}

// libjpegEncode encodes grey and YCbCr images (what decoding and resizing
// JPEGs produce) and reports false for the others, which go to jpegenc.
func libjpegEncode(img image.Image, quality int) ([]byte, bool, error) {
	var (
		w, h, ncomp, hs, vs int
		p0, p1, p2          []byte
		s0, s1              int
	)
	switch m := img.(type) {
	case *image.Gray:
		b := m.Rect
		w, h, ncomp, hs, vs = b.Dx(), b.Dy(), 1, 1, 1
		p0, s0 = m.Pix[m.PixOffset(b.Min.X, b.Min.Y):], m.Stride
	case *image.YCbCr:
		switch m.SubsampleRatio {
		case image.YCbCrSubsampleRatio444:
			hs, vs = 1, 1
		case image.YCbCrSubsampleRatio422:
			hs, vs = 2, 1
		case image.YCbCrSubsampleRatio420:
			hs, vs = 2, 2
		case image.YCbCrSubsampleRatio440:
			hs, vs = 1, 2
		default:
			return nil, false, nil
		}
		b := m.Rect
		// Chroma offsets are only whole samples from an even origin.
		if b.Min.X%hs != 0 || b.Min.Y%vs != 0 {
			return nil, false, nil
		}
		w, h, ncomp = b.Dx(), b.Dy(), 3
		co := m.COffset(b.Min.X, b.Min.Y)
		p0, s0 = m.Y[m.YOffset(b.Min.X, b.Min.Y):], m.YStride
		p1, p2, s1 = m.Cb[co:], m.Cr[co:], m.CStride
	default:
		return nil, false, nil
	}
	if w == 0 || h == 0 {
		return nil, false, nil
	}
	ptr := func(p []byte) *C.uchar {
		if len(p) == 0 {
			return nil
		}
		return (*C.uchar)(&p[0])
	}
	var (
		d      C.flow_dest
		outLen C.size_t
		msg    [C.JMSG_LENGTH_MAX]C.char
	)
	rc := C.flow_encode(C.int(w), C.int(h), C.int(ncomp), C.int(hs), C.int(vs),
		ptr(p0), C.int(s0), ptr(p1), ptr(p2), C.int(s1), C.int(quality), &d, &outLen, &msg[0])
	defer C.free(unsafe.Pointer(d.buf))
	if rc != 0 {
		return nil, true, fmt.Errorf("libjpeg: %s", C.GoString(&msg[0]))
	}
	return C.GoBytes(unsafe.Pointer(d.buf), C.int(outLen)), true, nil
}

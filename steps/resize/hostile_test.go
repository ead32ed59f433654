package resize

import (
	"context"
	"errors"
	"image"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/steps"
)

// sparse writes head followed by a hole up to size bytes: a huge file that
// takes no disk space.
func sparse(t *testing.T, path string, head []byte, size int64) {
	t.Helper()
	writeFile(t, path, head)
	if err := os.Truncate(path, size); err != nil {
		t.Skipf("truncate: %v", err)
	}
}

// allocated runs f and returns the bytes it allocated on the heap.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// A small header in front of gigabytes: only what an image of the header's
// size can need is read, never the whole file (os.ReadFile allocated all
// of it before max_pixels was even checked).
func TestHugeFileBehindSmallHeader(t *testing.T) {
	dir := t.TempDir()
	png := encodePNG(t, quadrants(40, 20))
	const huge = 2 << 30
	// A whole PNG, then a hole: the image is read, the rest is not.
	sparse(t, filepath.Join(dir, "padded.png"), png, huge)
	// A PNG header and no image data: fails, saying why.
	sparse(t, filepath.Join(dir, "header.png"), png[:33], huge)
	// No header at all: fails on the first bytes.
	sparse(t, filepath.Join(dir, "zeros.png"), nil, huge)
	s := mustStep(t, dir, "width: 20")
	var res map[string]any
	if n := allocated(func() { res = run(t, s, "padded.png") }); n > 64<<20 {
		t.Errorf("padded.png: %d MiB allocated for a 40x20 image", n>>20)
	}
	if res["width"] != int64(20) {
		t.Errorf("padded.png: %v", res)
	}
	for name, want := range map[string]string{"header.png": "not a plain image file", "zeros.png": "not a JPEG, PNG"} {
		var err error
		n := allocated(func() { _, err = s.Do(context.Background(), steps.Input{Item: name}) })
		var se *steps.Error
		if !errors.As(err, &se) || !se.Permanent || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v, want a permanent error saying %q", name, err, want)
		}
		if n > 64<<20 {
			t.Errorf("%s: %d MiB allocated", name, n>>20)
		}
	}
}

// One image that needs more than decode_memory fails at once, before its
// file is read; within it, images wait for each other, and never hold more
// than decode_memory together.
func TestDecodeMemory(t *testing.T) {
	dir := t.TempDir()
	m := image.NewNRGBA64(image.Rect(0, 0, 300, 200)) // 16-bit: 8+4 bytes a pixel
	for i := range m.Pix {
		m.Pix[i] = uint8(i * 7)
	}
	writeFile(t, filepath.Join(dir, "deep.png"), encodePNG(t, m))
	_, err := mustStep(t, dir, "width: 30\ndecode_memory: 500KiB").Do(context.Background(), steps.Input{Item: "deep.png"})
	var se *steps.Error
	if !errors.As(err, &se) || se.Class != "too_large" || !se.Permanent || !strings.Contains(err.Error(), "decode_memory") {
		t.Fatalf("err = %v, want a permanent too_large error naming decode_memory", err)
	}

	// About 750 KB each: two fit in 1.6 MB, never three.
	s := mustStep(t, dir, "width: 30\ndecode_memory: 1600KB\nname: '${ index }.png'")
	decodeBudget.stats()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			_, err := s.Do(context.Background(), steps.Input{Item: "deep.png", Index: int64(i)})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	used, peak := decodeBudget.stats()
	if used != 0 || peak > 1600_000 || peak == 0 {
		t.Errorf("budget: %d in use after the run, peak %d; want 0 and at most 1600000", used, peak)
	}
}

func TestBudgetWaitsInOrderAndHonoursContext(t *testing.T) {
	var b budget
	ctx := context.Background()
	if err := b.acquire(ctx, 60, 100); err != nil {
		t.Fatal(err)
	}
	// 50 does not fit beside 60: it waits, and a later 10, which would
	// fit, waits behind it.
	got := make(chan int64, 2)
	go func() { b.acquire(ctx, 50, 100); got <- 50 }()
	for {
		b.mu.Lock()
		n := len(b.waiting)
		b.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	go func() { b.acquire(ctx, 10, 100); got <- 10 }()
	for {
		b.mu.Lock()
		n := len(b.waiting)
		b.mu.Unlock()
		if n == 2 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	// A cancelled waiter leaves the queue with the context's error.
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- b.acquire(cctx, 30, 100) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled acquire: %v", err)
	}
	if used, _ := b.stats(); used != 60 {
		t.Fatalf("used %d: the 10 went past the waiting 50", used)
	}
	b.release(60)
	<-got
	<-got
	if used, _ := b.stats(); used != 60 || len(b.waiting) != 0 {
		t.Errorf("used %d, %d waiting; want 60, 0", used, len(b.waiting))
	}
	// Alone, an image may use the whole budget.
	b.release(60)
	if err := b.acquire(ctx, 100, 100); err != nil {
		t.Fatal(err)
	}
}

// out_dir stays in the pipeline directory like a write sink's path, also
// when an item builds it or a symbolic link is on the way; allow_outside
// opts out.
func TestOutDirConfined(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "p")
	outside := filepath.Join(root, "outside")
	writeFile(t, filepath.Join(dir, "pic.png"), encodePNG(t, quadrants(40, 20)))
	if err := os.MkdirAll(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	for _, od := range []string{"../outside", outside, "link/../../outside"} {
		if _, err := buildStep(t, dir, "width: 10\nout_dir: '"+od+"'"); err == nil || !strings.Contains(err.Error(), "allow_outside") {
			t.Errorf("out_dir %q: %v, want a refusal naming allow_outside", od, err)
		}
	}
	s := mustStep(t, dir, "src: '${ item.src }'\nwidth: 10\nout_dir: '${ item.out }'")
	for _, od := range []string{"../outside", outside, "link", "link/sub", "a/../../outside"} {
		_, err := s.Do(context.Background(), steps.Input{Item: map[string]any{"src": "pic.png", "out": od}})
		var se *steps.Error
		if !errors.As(err, &se) || !se.Permanent || !strings.Contains(err.Error(), "allow_outside") {
			t.Errorf("out_dir %q from the item: %v, want a permanent refusal naming allow_outside", od, err)
		}
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Fatalf("written outside the pipeline directory: %v", entries)
	}
	// Inside, absolute or not, is fine.
	for _, od := range []string{"thumbs", filepath.Join(dir, "abs"), "a/../b"} {
		res := run(t, s, map[string]any{"src": "pic.png", "out": od})
		if !strings.HasPrefix(res["dest"].(string), dir+string(filepath.Separator)) {
			t.Errorf("out_dir %q: dest %v", od, res["dest"])
		}
	}
	for _, od := range []string{outside, "../outside/deeper", "link/x"} {
		res := run(t, mustStep(t, dir, "width: 10\nallow_outside: true\nout_dir: '"+od+"'"), "pic.png")
		if _, err := os.Stat(res["dest"].(string)); err != nil || !strings.Contains(res["dest"].(string), "outside") && !strings.Contains(res["dest"].(string), "link") {
			t.Errorf("allow_outside, out_dir %q: %v, %v", od, res, err)
		}
	}
}

// width and height are templates: from variables (--set width=...), from
// the item, or strings of digits (env).
func TestSizesFromExpressions(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pic.png"), encodePNG(t, quadrants(40, 20)))
	build := func(opts string) (steps.Step, error) {
		r := steps.NewRegistry()
		Register(r)
		k, _ := r.Lookup("resize")
		var n yaml.Node
		if err := yaml.Unmarshal([]byte(opts), &n); err != nil {
			t.Fatal(err)
		}
		v, err := k.Build(n.Content[0], nil, &steps.Env{Dir: dir, Vars: map[string]any{"w": int64(16), "h": "6", "bad": "abc", "out": "../outside"}})
		if err != nil {
			return nil, err
		}
		return v.Step, nil
	}
	for _, tc := range []struct {
		opts string
		item any
		w, h int64
	}{
		{"width: '${ vars.w }'", "pic.png", 16, 8},
		{"width: '${ vars.w }'\nheight: '${ vars.h }'\nfit: cover", "pic.png", 16, 6},
		{"src: '${ item.p }'\nheight: '${ item.h }'", map[string]any{"p": "pic.png", "h": int64(10)}, 20, 10},
		{"src: '${ item.p }'\nwidth: '${ item.w }'\nheight: 5", map[string]any{"p": "pic.png", "w": " 8 "}, 8, 5},
	} {
		s, err := build(tc.opts)
		if err != nil {
			t.Fatalf("%q: %v", tc.opts, err)
		}
		v, err := s.Do(context.Background(), steps.Input{Item: tc.item})
		if err != nil {
			t.Fatalf("%q: %v", tc.opts, err)
		}
		if res := v.(map[string]any); res["width"] != tc.w || res["height"] != tc.h {
			t.Errorf("%q: %vx%v, want %dx%d", tc.opts, res["width"], res["height"], tc.w, tc.h)
		}
	}
	// Bad values fail the item, saying what is wrong.
	for _, tc := range []struct {
		item any
		want string
	}{
		{map[string]any{"w": "abc"}, "whole number"},
		{map[string]any{"w": 2.5}, "whole number"},
		{map[string]any{"w": int64(-3)}, "negative"},
		{map[string]any{"w": int64(0)}, "needs both"},
		{map[string]any{"w": int64(1 << 20)}, "at most"},
	} {
		s, err := build("src: pic.png\nwidth: '${ item.w }'\nheight: 10\nfit: contain")
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Do(context.Background(), steps.Input{Item: tc.item})
		var se *steps.Error
		if !errors.As(err, &se) || !se.Permanent || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want a permanent error saying %q", tc.item, err, tc.want)
		}
	}
	// Constants, and values from vars (--set), are checked before the run.
	for _, tc := range []struct{ opts, want string }{
		{"width: abc", "whole number"},
		{"width: '${ vars.bad }'", "whole number"},
		{"width: 10\nout_dir: '${ vars.out }'", "allow_outside"},
		{"width: 0\nheight: 0", "both 0"},
		{"width: 100000", "at most"},
	} {
		if _, err := build(tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.opts, err, tc.want)
		}
	}
}

package main

// Hostile inputs to resize and analyze-logs (issue 13, classes 1, 2 and 8;
// issue 14, point 6): the real binary, files made to break the steps.

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// hrRun runs the pipeline in dir (see relCommand) and returns what it left
// and the peak resident set size of the flow process, in bytes.
func hrRun(t *testing.T, dir, pipeline string, args ...string) (*relResult, int64) {
	t.Helper()
	cmd := relCommand(t, dir, pipeline, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	code := relWait(t, cmd)
	return relCollect(t, dir, code, stdout.String(), stderr.String()), peakRSS(cmd)
}

func peakRSS(cmd *exec.Cmd) int64 {
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		return int64(ru.Maxrss) * 1024 // kilobytes on Linux
	}
	return 0
}

// A FIFO given as the file to read used to block the open(2) of both steps
// forever: no item timeout, pipeline timeout or SIGTERM reached it, and no
// report was written. Now the item fails at once and the run goes on.
func TestHostileFIFOItem(t *testing.T) {
	for _, tc := range []struct{ name, step, good string }{
		{"analyze-logs", "step: analyze-logs\n    with: {path: \"${ item }\"}", "a.log"},
		{"resize", "step: resize\n    with: {width: 8, out_dir: small}", "a.png"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			relWrite(t, filepath.Join(dir, "a.log"), []byte("ERROR x\nok\n"))
			relWrite(t, filepath.Join(dir, "a.png"), relPNG(t, 16, 16))
			if err := unix.Mkfifo(filepath.Join(dir, "pipe"), 0o644); err != nil {
				t.Skipf("mkfifo: %v", err)
			}
			r, _ := hrRun(t, dir, `version: 1
timeout: 30s
stages:
  - name: src
    source: {items: [pipe, `+tc.good+`]}
  - name: work
    on_error: skip
    `+tc.step+`
  - name: out
    sink: {write: {path: out.jsonl}}
`)
			lines := relLines(t, filepath.Join(dir, "out.jsonl"))
			r.check(t, 0, 3, lines)
			if w := r.stage(t, "work"); w.Succeeded != 1 || w.Skipped != 1 || len(lines) != 1 {
				t.Fatalf("work: %d ok, %d skipped, %d results; want 1, 1, 1\n%s", w.Succeeded, w.Skipped, len(lines), r.raw)
			}
			if f := r.failure(t, "work"); !strings.Contains(f.Error, "pipe") || !strings.Contains(f.Error, "not a regular file") {
				t.Errorf("failure %q does not name the file and say it is not a regular file", f.Error)
			}
		})
	}
}

// hrDeepPNG is a w x h 16-bit RGBA PNG that compresses well: 8 bytes a
// pixel decoded, 4 more once converted for resampling.
func hrDeepPNG(t *testing.T, w, h int) []byte {
	t.Helper()
	m := image.NewNRGBA64(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		row := m.Pix[y*m.Stride : y*m.Stride+w*8]
		for x := 0; x < w; x++ {
			p := row[x*8 : x*8+8 : x*8+8]
			p[0], p[2], p[4], p[6], p[7] = uint8(x>>4), uint8(y>>4), uint8((x+y)>>5), 0xff, 0xff
		}
	}
	var b bytes.Buffer
	if err := (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&b, m); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// Memory is bounded before it is taken. A 20 GB file behind a small PNG
// header was read whole; now no more than its image can need is read.
// Many 16-bit PNGs, each within max_pixels, were decoded side by side by
// every worker at once; decode_memory now holds them to a budget.
func TestHostileResizeMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("generates and resizes large images")
	}
	t.Run("sparse 20 GB files", func(t *testing.T) {
		dir := t.TempDir()
		small := relPNG(t, 32, 32)
		for name, head := range map[string][]byte{"padded.png": small, "header.png": small[:33], "zeros.png": nil} {
			p := filepath.Join(dir, "imgs", name)
			relWrite(t, p, head)
			if err := os.Truncate(p, 20<<30); err != nil {
				t.Skipf("truncate: %v", err)
			}
		}
		r, rss := hrRun(t, dir, `version: 1
stages:
  - name: src
    source: {glob: "imgs/*.png"}
  - name: resize
    step: resize
    on_error: skip
    with: {width: 8, out_dir: small}
  - name: out
    sink: {write: {path: out.jsonl}}
`)
		lines := relLines(t, filepath.Join(dir, "out.jsonl"))
		r.check(t, 0, 3, lines)
		t.Logf("three 20 GB sparse files: peak RSS %d MiB", rss>>20)
		if rs := r.stage(t, "resize"); rs.Succeeded != 1 || rs.Skipped != 2 {
			t.Errorf("resize: %d ok, %d skipped; want the padded PNG resized and the other two failed\n%s", rs.Succeeded, rs.Skipped, r.raw)
		}
		if rss > 512<<20 {
			t.Errorf("peak RSS %d MiB: the files were read far past their images", rss>>20)
		}
	})
	t.Run("concurrent 16-bit PNGs", func(t *testing.T) {
		// Six 1500x1500 16-bit PNGs: about 28 MB each decoded and
		// converted, 6 workers. decode_memory 60MiB lets two in at once.
		dir := t.TempDir()
		img := hrDeepPNG(t, 1500, 1500)
		for i := range 6 {
			relWrite(t, filepath.Join(dir, "imgs", string(rune('a'+i))+".png"), img)
		}
		run := func(budget string) int64 {
			r, rss := hrRun(t, dir, `version: 1
stages:
  - name: src
    source: {glob: "imgs/*.png"}
  - name: resize
    step: resize
    workers: 6
    with: {width: 100, out_dir: small, decode_memory: `+budget+`}
  - name: out
    sink: {write: {path: out.jsonl}}
`)
			r.check(t, 0, 3, relLines(t, filepath.Join(dir, "out.jsonl")))
			t.Logf("decode_memory %s: peak RSS %d MiB", budget, rss>>20)
			return rss
		}
		wide, bounded := run("10GiB"), run("60MiB")
		if bounded >= wide {
			t.Errorf("peak RSS %d MiB with decode_memory 60MiB, %d MiB without a real bound: the budget changed nothing", bounded>>20, wide>>20)
		}
	})
}

// out_dir, like a write sink's path, stays in the pipeline directory:
// computed from an item, through '..' or a symbolic link, it fails the
// item; as a constant, the file is refused before anything runs.
// allow_outside opts out, as for write.
func TestHostileResizeOutDir(t *testing.T) {
	setup := func(t *testing.T) (dir, outside string) {
		root := t.TempDir()
		dir, outside = filepath.Join(root, "p"), filepath.Join(root, "outside")
		relWrite(t, filepath.Join(dir, "a.png"), relPNG(t, 16, 16))
		if err := os.MkdirAll(outside, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(outside, filepath.Join(dir, "link")); err != nil {
			t.Fatal(err)
		}
		return dir, outside
	}
	pipeline := func(items, with string) string {
		return `version: 1
stages:
  - name: src
    source: {items: ` + items + `}
  - name: resize
    step: resize
    on_error: skip
    with: {src: a.png, width: 8, ` + with + `}
  - name: out
    sink: {write: {path: out.jsonl}}
`
	}
	t.Run("from items", func(t *testing.T) {
		dir, outside := setup(t)
		r, _ := hrRun(t, dir, pipeline(`["../outside", `+relYAML(outside)+`, link, "thumbs"]`, `out_dir: "${ item }"`))
		lines := relLines(t, filepath.Join(dir, "out.jsonl"))
		r.check(t, 0, 3, lines)
		if rs := r.stage(t, "resize"); rs.Succeeded != 1 || rs.Skipped != 3 {
			t.Fatalf("resize: %d ok, %d skipped; want only thumbs written\n%s", rs.Succeeded, rs.Skipped, r.raw)
		}
		for _, f := range r.rep.Failures {
			if !strings.Contains(f.Error, "allow_outside") {
				t.Errorf("failure does not say how to allow it: %s", f.Error)
			}
		}
		if entries, _ := os.ReadDir(outside); len(entries) != 0 {
			t.Errorf("written outside the pipeline directory: %v", entries)
		}
	})
	t.Run("constant", func(t *testing.T) {
		for _, od := range []string{"../outside", "OUTSIDE"} {
			dir, outside := setup(t)
			cmd := relCommand(t, dir, pipeline("[1]", "out_dir: "+relYAML(strings.Replace(od, "OUTSIDE", outside, 1))))
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			if code := relWait(t, cmd); code == 0 || !strings.Contains(stderr.String(), "allow_outside") {
				t.Errorf("out_dir %s: exit %d, want a refusal naming allow_outside\n%s", od, code, stderr.String())
			}
			if entries, _ := os.ReadDir(outside); len(entries) != 0 {
				t.Errorf("written outside the pipeline directory: %v", entries)
			}
		}
	})
	t.Run("allow_outside", func(t *testing.T) {
		dir, outside := setup(t)
		r, _ := hrRun(t, dir, pipeline("[1]", "out_dir: "+relYAML(outside)+", allow_outside: true"))
		r.check(t, 0, 3, relLines(t, filepath.Join(dir, "out.jsonl")))
		if _, err := os.Stat(filepath.Join(outside, "a.png")); err != nil {
			t.Errorf("allow_outside: %v", err)
		}
	})
}

// Sizes are templates: `--set width=24` reaches them (issue 14, point 8).
func TestHostileResizeSizesFromSet(t *testing.T) {
	dir := t.TempDir()
	relWrite(t, filepath.Join(dir, "a.png"), relPNG(t, 64, 32))
	r, _ := hrRun(t, dir, `version: 1
vars: {width: 16}
stages:
  - name: src
    source: {items: [a.png]}
  - name: resize
    step: resize
    with: {width: "${ vars.width }"}
  - name: out
    sink: {write: {path: out.jsonl}}
`, "--set", "width=24")
	lines := relLines(t, filepath.Join(dir, "out.jsonl"))
	r.check(t, 0, 3, lines)
	var res map[string]any
	if len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &res) != nil || res["width"] != 24.0 || res["height"] != 12.0 {
		t.Fatalf("results %q, want one 24x12 image", lines)
	}
}

// analyze-logs reads lines as the guide's Python program does: a lone CR
// ends a line (universal newlines), and a gzip file padded with zeros
// (which `gzip -t` accepts) is read, not failed.
func TestHostileAnalyzeLogsFidelity(t *testing.T) {
	dir := t.TempDir()
	relWrite(t, filepath.Join(dir, "logs", "cr.log"), []byte("INFO a\rERROR b\rWARN c\r\nERROR d\n"))
	var z bytes.Buffer
	w := gzip.NewWriter(&z)
	w.Write([]byte("INFO a\nERROR b\nWARN c\n"))
	w.Close()
	relWrite(t, filepath.Join(dir, "logs", "padded.log.gz"), append(z.Bytes(), make([]byte, 1024)...))
	r, _ := hrRun(t, dir, `version: 1
stages:
  - name: src
    source: {items: [logs/cr.log, logs/padded.log.gz]}
  - name: analyze
    step: analyze-logs
  - name: out
    sink: {write: {path: out.jsonl}}
`)
	lines := relLines(t, filepath.Join(dir, "out.jsonl"))
	r.check(t, 0, 3, lines)
	want := map[string][3]float64{"cr.log": {4, 2, 1}, "padded.log.gz": {3, 1, 1}}
	for _, l := range lines {
		var res map[string]any
		if err := json.Unmarshal([]byte(l), &res); err != nil {
			t.Fatal(err)
		}
		w, ok := want[res["file"].(string)]
		if !ok || res["lines"] != w[0] || res["errors"] != w[1] || res["warnings"] != w[2] {
			t.Errorf("%s: want lines, errors, warnings = %v", l, w)
		}
		delete(want, res["file"].(string))
	}
	if len(want) != 0 {
		t.Errorf("no result for %v", want)
	}
}

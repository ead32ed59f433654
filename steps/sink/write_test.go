package sink

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flowrun/flow/steps"
)

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// leftovers lists files in dir other than want: temporary files must never
// outlive Close.
func leftovers(t *testing.T, dir string, want ...string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var extra []string
	for _, e := range ents {
		if !contains(want, e.Name()) {
			extra = append(extra, e.Name())
		}
	}
	return extra
}

func writeAll(t *testing.T, s steps.Sink, recs []steps.Record) {
	t.Helper()
	for _, r := range recs {
		if err := s.Write(context.Background(), r); err != nil {
			t.Fatalf("Write: %v", err)
		}
	}
}

func TestWriteFormats(t *testing.T) {
	dir := t.TempDir()
	env := &steps.Env{Dir: dir, Vars: map[string]any{"day": "mon"}}
	recs := []steps.Record{
		{Item: map[string]any{"b": int64(2), "a": "x"}},
		{Item: map[string]any{"a": "y,z"}},
	}
	cases := []struct{ src, file, want string }{
		{`write: out/r.jsonl`, "out/r.jsonl", "{\"a\":\"x\",\"b\":2}\n{\"a\":\"y,z\"}\n"},
		{`write: {path: "out/${ vars.day }.ndjson"}`, "out/mon.ndjson", "{\"a\":\"x\",\"b\":2}\n{\"a\":\"y,z\"}\n"},
		{`write: {path: r.json}`, "r.json", "[\n  {\"a\":\"x\",\"b\":2},\n  {\"a\":\"y,z\"}\n]\n"},
		{`write: {path: r.csv}`, "r.csv", "a,b\nx,2\n\"y,z\",\n"},
		{`write: {path: r.data, format: csv, columns: [b]}`, "r.data", "b\n2\n\"\"\n"},
		{`write: {path: r.txt, format: table}`, "r.txt", "a    b\n---  -\nx    2\ny,z\n"},
	}
	for _, c := range cases {
		s, err := build(t, c.src, env)
		if err != nil {
			t.Fatalf("%s: %v", c.src, err)
		}
		writeAll(t, s, recs)
		if _, err := os.Stat(filepath.Join(dir, c.file)); err == nil {
			t.Errorf("%s: the file exists before Close; it must appear whole, at Close", c.src)
		}
		if err := s.Close(context.Background(), nil); err != nil {
			t.Fatalf("%s: Close: %v", c.src, err)
		}
		golden(t, c.src, readFile(t, filepath.Join(dir, c.file)), c.want)
		fi, _ := os.Stat(filepath.Join(dir, c.file))
		if fi.Mode().Perm() != 0o644 {
			t.Errorf("%s: mode %v, want 0644", c.src, fi.Mode().Perm())
		}
	}
	if extra := leftovers(t, dir, "out", "r.json", "r.csv", "r.data", "r.txt"); extra != nil {
		t.Errorf("left behind: %v", extra)
	}

	// No items: still a well-formed, complete file.
	for src, want := range map[string]string{`write: e.jsonl`: "", `write: e.json`: "[]\n"} {
		s, err := build(t, src, env)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		golden(t, src, readFile(t, filepath.Join(dir, strings.TrimPrefix(src, "write: "))), want)
	}
}

func TestWriteAtomic(t *testing.T) {
	dir := t.TempDir()
	dest := filepath.Join(dir, "r.jsonl")
	if err := os.WriteFile(dest, []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := &steps.Env{Dir: dir}
	recs := []steps.Record{{Item: int64(1)}, {Item: int64(2)}}

	// A failed or interrupted run keeps the old file and leaves no temp.
	for _, runErr := range []error{errors.New("stage fetch: 3 items failed"), context.Canceled} {
		s, err := build(t, `write: r.jsonl`, env)
		if err != nil {
			t.Fatal(err)
		}
		writeAll(t, s, recs)
		if err := s.Close(context.Background(), runErr); err != nil {
			t.Errorf("Close after a failed run: %v", err)
		}
		golden(t, "after "+runErr.Error(), readFile(t, dest), "old\n")
		if extra := leftovers(t, dir, "r.jsonl"); extra != nil {
			t.Errorf("left behind: %v", extra)
		}
	}

	// A write that fails midway fails the sink, names the destination, and
	// keeps the old file.
	s, err := build(t, `write: r.jsonl`, env)
	if err != nil {
		t.Fatal(err)
	}
	fs := s.(*fileSink)
	writeAll(t, s, recs[:1])
	fs.bw.Flush()
	fs.tmp.Close() // the disk goes away under the sink
	big := strings.Repeat("x", 300<<10)
	var werr error
	for i := 0; i < 3 && werr == nil; i++ {
		werr = s.Write(context.Background(), steps.Record{Item: big})
	}
	errContains(t, werr, "cannot write "+dest)
	cerr := s.Close(context.Background(), nil)
	errContains(t, cerr, "cannot write "+dest)
	golden(t, "after a write failure", readFile(t, dest), "old\n")
	if extra := leftovers(t, dir, "r.jsonl"); extra != nil {
		t.Errorf("left behind: %v", extra)
	}

	// Success replaces the file whole and keeps its permissions.
	s, err = build(t, `write: r.jsonl`, env)
	if err != nil {
		t.Fatal(err)
	}
	writeAll(t, s, recs)
	if err := s.Close(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	golden(t, "after success", readFile(t, dest), "1\n2\n")
	if fi, _ := os.Stat(dest); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want the old file's 0600", fi.Mode().Perm())
	}
	if err := s.Close(context.Background(), nil); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestWriteRefusesOutside(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "pipe")
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	env := &steps.Env{Dir: dir, Vars: map[string]any{"up": "../x.jsonl"}}
	outside := filepath.Join(root, "abs.jsonl")
	for _, src := range []string{
		`write: ../x.jsonl`,
		`write: sub/../../x.jsonl`,
		`write: ` + outside,
		`write: {path: "${ vars.up }"}`,
	} {
		_, err := build(t, src, env)
		errContains(t, err, "allow_outside: true")
	}
	// Static paths are refused by validation already, at the path.
	ds := check(t, "write:\n  path: ../x.jsonl")
	errContains(t, ds, "leaves the pipeline directory")
	if ds[0].Line != 2 || ds[0].Col != 9 {
		t.Errorf("reported at %d:%d, want 2:9", ds[0].Line, ds[0].Col)
	}
	errContains(t, check(t, "write: /tmp/x.jsonl"), "is absolute")

	// A symbolic link inside the folder that points out of it is no way out.
	if err := os.Symlink(root, filepath.Join(dir, "escape")); err != nil {
		t.Skip("symlinks unsupported:", err)
	}
	_, err := build(t, `write: escape/x.jsonl`, env)
	errContains(t, err, "symbolic link", "allow_outside")

	// Paths that stay inside are fine, even through "..".
	s, err := build(t, `write: sub/../in.jsonl`, env)
	if err != nil {
		t.Fatalf("inside path refused: %v", err)
	}
	s.Close(context.Background(), nil)
	if _, err := os.Stat(filepath.Join(dir, "in.jsonl")); err != nil {
		t.Error(err)
	}

	// The explicit opt-in allows both.
	for _, src := range []string{`write: {path: ` + outside + `, allow_outside: true}`, `write: {path: ../rel.jsonl, allow_outside: true}`} {
		s, err := build(t, src, env)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		writeAll(t, s, []steps.Record{{Item: "ok"}})
		if err := s.Close(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
	}
	golden(t, "absolute", readFile(t, outside), "\"ok\"\n")
	golden(t, "relative", readFile(t, filepath.Join(root, "rel.jsonl")), "\"ok\"\n")
}

func TestWriteErrors(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "file"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := &steps.Env{Dir: dir}
	_, err := build(t, `write: file/out.jsonl`, env)
	errContains(t, err, "cannot write "+filepath.Join(dir, "file", "out.jsonl"), "not a directory")

	if err := os.Mkdir(filepath.Join(dir, "d.jsonl"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = build(t, `write: d.jsonl`, env)
	errContains(t, err, "is a directory")

	errContains(t, check(t, `write: out.txt`), "cannot tell the format", "format:")
	if ds := check(t, `write: {path: out.txt, format: jsonl}`); len(ds) > 0 {
		t.Errorf("explicit format refused: %v", ds)
	}
	errContains(t, check(t, `write: {format: csv}`), `missing required key "path"`)

	if os.Geteuid() != 0 { // root writes anywhere
		ro := filepath.Join(dir, "ro")
		os.Mkdir(ro, 0o555)
		_, err = build(t, `write: ro/out.jsonl`, env)
		errContains(t, err, "cannot write "+filepath.Join(ro, "out.jsonl"), "permission denied")
	}
}

// A directory on the way swapped for a symbolic link after the sink was
// built (when the path was checked) cannot take the output out of the
// pipeline directory: the sink works in the directory it opened, and fails
// when the path no longer leads there, before the first write and at the
// rename.
func TestWriteDirectorySwappedMidRun(t *testing.T) {
	for _, when := range []string{"before the first write", "before the rename"} {
		t.Run(when, func(t *testing.T) {
			dir := t.TempDir()
			outside := t.TempDir()
			out := filepath.Join(dir, "out")
			if err := os.Mkdir(out, 0o755); err != nil {
				t.Fatal(err)
			}
			s, err := build(t, `write: out/r.jsonl`, &steps.Env{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			swap := func() {
				if err := os.Rename(out, out+".real"); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(outside, out); err != nil {
					t.Fatal(err)
				}
			}
			if when == "before the first write" {
				swap()
			}
			var werr error
			for _, r := range []steps.Record{{Item: int64(1)}, {Item: int64(2)}} {
				if err := s.Write(context.Background(), r); err != nil && werr == nil {
					werr = err
				}
			}
			if when == "before the rename" {
				if err := s.(*fileSink).bw.Flush(); err != nil { // the temporary file exists
					t.Fatal(err)
				}
				swap()
			}
			err = s.Close(context.Background(), nil)
			if err == nil {
				err = werr
			}
			errContains(t, err, "cannot write "+filepath.Join(out, "r.jsonl"), "was replaced by a symbolic link")
			if entries, _ := os.ReadDir(outside); len(entries) != 0 {
				t.Errorf("written outside the pipeline directory: %v", entries)
			}
			if extra := leftovers(t, out+".real"); extra != nil {
				t.Errorf("left behind: %v", extra)
			}
		})
	}
}

// A link put in place of the destination file is replaced, never followed.
func TestWriteReplacesALinkAtTheDestination(t *testing.T) {
	dir := t.TempDir()
	notes := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(notes, []byte("my notes\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := build(t, `write: r.jsonl`, &steps.Env{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	writeAll(t, s, []steps.Record{{Item: int64(1)}})
	if err := os.Symlink(notes, filepath.Join(dir, "r.jsonl")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	golden(t, "notes", readFile(t, notes), "my notes\n")
	golden(t, "output", readFile(t, filepath.Join(dir, "r.jsonl")), "1\n")
	if fi, _ := os.Lstat(filepath.Join(dir, "r.jsonl")); !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 {
		t.Errorf("destination %v, want a regular file 0644", fi.Mode())
	}
}

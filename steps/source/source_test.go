package source

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/steps/steptest"
)

func registry() *steps.Registry {
	r := steps.NewRegistry()
	Register(r)
	return r
}

func build(t *testing.T, src string, env *steps.Env) (steps.Source, error) {
	t.Helper()
	name, opts := steptest.Ref(t, src)
	k, ok := registry().Lookup(name)
	if !ok {
		t.Fatalf("kind %q not registered", name)
	}
	if env == nil {
		env = &steps.Env{Dir: t.TempDir()}
	}
	v, err := k.Build(opts, &conf.Context{Vars: env.Vars}, env)
	if err != nil {
		return nil, err
	}
	return v.Source, nil
}

func mustBuild(t *testing.T, src string, env *steps.Env) steps.Source {
	t.Helper()
	s, err := build(t, src, env)
	if err != nil {
		t.Fatalf("build %q: %v", src, err)
	}
	return s
}

// check validates options the way 'flow validate' does.
func check(t *testing.T, src string) conf.Diags {
	t.Helper()
	name, opts := steptest.Ref(t, src)
	k, _ := registry().Lookup(name)
	return k.Check(opts, &conf.Context{Vars: map[string]any{"count": int64(3)}})
}

func collect(t *testing.T, s steps.Source) ([]any, error) {
	t.Helper()
	var got []any
	err := s.Items(context.Background(), func(v any) error {
		got = append(got, v)
		return nil
	})
	return got, err
}

func mustCollect(t *testing.T, s steps.Source) []any {
	t.Helper()
	got, err := collect(t, s)
	if err != nil {
		t.Fatalf("Items: %v", err)
	}
	return got
}

func eq(t *testing.T, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %#v\nwant %#v", got, want)
	}
}

func errContains(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("expected an error containing %q, got none", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not contain %q", err, p)
		}
	}
}

func count(t *testing.T, s steps.Source) int64 {
	t.Helper()
	c, ok := s.(steps.Counter)
	if !ok {
		t.Fatalf("%T is not a Counter", s)
	}
	n, ok := c.Count()
	if !ok {
		t.Fatalf("Count not known")
	}
	return n
}

func TestItems(t *testing.T) {
	env := &steps.Env{Vars: map[string]any{"name": "x", "hosts": []any{"a", "b"}}}
	s := mustBuild(t, `items: [1, 2.5, "${ vars.name }-y", {k: "${ 1 + 2 }"}, [true, null]]`, env)
	eq(t, mustCollect(t, s), []any{int64(1), 2.5, "x-y", map[string]any{"k": int64(3)}, []any{true, nil}})
	eq(t, count(t, s), int64(5))

	s = mustBuild(t, `items: "${ vars.hosts }"`, env)
	eq(t, mustCollect(t, s), []any{"a", "b"})

	s = mustBuild(t, `items: "${ split(' a b ', ' ') }"`, env)
	eq(t, mustCollect(t, s), []any{"", "a", "b", ""})

	s = mustBuild(t, `items: "${ map(1..3, # * 2) }"`, env)
	eq(t, mustCollect(t, s), []any{int64(2), int64(4), int64(6)})

	_, err := build(t, `items: "${ vars.name }"`, env)
	errContains(t, err, "not a list")

	errContains(t, check(t, `items: {a: 1}`), "items takes a list", "a mapping")
	errContains(t, check(t, `items: abc`), "items takes a list", `"abc"`)
	if ds := check(t, `items: []`); len(ds) != 0 {
		t.Fatalf("empty list refused: %v", ds)
	}
}

func TestRange(t *testing.T) {
	env := &steps.Env{Vars: map[string]any{"count": int64(4), "zero": int64(0)}, Env: map[string]string{"N": "3"}}
	cases := []struct {
		src  string
		want []any
	}{
		{`range: {from: 1, to: 5}`, []any{int64(1), int64(2), int64(3), int64(4), int64(5)}},
		{`range: {from: 0, to: 10, step: 4}`, []any{int64(0), int64(4), int64(8)}},
		{`range: {from: 3, to: -3, step: -3}`, []any{int64(3), int64(0), int64(-3)}},
		{`range: {from: 1, to: "${ vars.count }"}`, []any{int64(1), int64(2), int64(3), int64(4)}},
		{`range: {from: "${ vars.count * 2 }", to: 9}`, []any{int64(8), int64(9)}},
		{`range: {from: 5, to: 1}`, nil},
		{`range: {from: 1, to: 5, step: -1}`, nil},
		{`range: {from: 7, to: 7}`, []any{int64(7)}},
		{`range: {from: 1, to: "${ env.N }"}`, []any{int64(1), int64(2), int64(3)}},
		{`range: {from: 1, to: 1e1, step: "3"}`, []any{int64(1), int64(4), int64(7), int64(10)}},
	}
	for _, c := range cases {
		s := mustBuild(t, c.src, env)
		got := mustCollect(t, s)
		eq(t, got, c.want)
		if n := count(t, s); n != int64(len(c.want)) {
			t.Errorf("%s: Count = %d, emitted %d", c.src, n, len(c.want))
		}
	}

	ds := check(t, "range: {from: 1, to: 5,\n  step: 0}")
	errContains(t, ds, "step must not be 0")
	if ds[0].Line != 2 || ds[0].Col != 9 {
		t.Errorf("step 0 reported at %d:%d, want 2:9", ds[0].Line, ds[0].Col)
	}
	errContains(t, check(t, `range: {from: 1, to: 2.5}`), "to must be a whole number")
	errContains(t, check(t, `range: {to: 2}`), `missing required key "from"`)
	_, err := build(t, `range: {from: 1, to: 5, step: "${ vars.zero }"}`, env)
	errContains(t, err, "step must not be 0")
	_, err = build(t, `range: {from: 1, to: "${ 'ten' }"}`, env)
	errContains(t, err, "to must be a whole number", `"ten"`)
}

func TestRangeExtremes(t *testing.T) {
	s := mustBuild(t, `range: {from: -9223372036854775808, to: 9223372036854775807}`, nil)
	if _, ok := s.(steps.Counter).Count(); ok {
		t.Errorf("a range longer than an int64 reported a count")
	}
	s = mustBuild(t, `range: {from: 9223372036854775805, to: 9223372036854775807}`, nil)
	eq(t, mustCollect(t, s), []any{int64(math.MaxInt64 - 2), int64(math.MaxInt64 - 1), int64(math.MaxInt64)})
	s = mustBuild(t, `range: {from: -9223372036854775807, to: -9223372036854775808, step: -1}`, nil)
	eq(t, mustCollect(t, s), []any{int64(math.MinInt64 + 1), int64(math.MinInt64)})
	s = mustBuild(t, `range: {from: 0, to: 9223372036854775807, step: 9223372036854775807}`, nil)
	eq(t, mustCollect(t, s), []any{int64(0), int64(math.MaxInt64)})
}

var errStop = errors.New("consumer stopped")

// A consumer that stops after ten items of ten million must get control back
// at once, and the source must not have built the whole range.
func TestRangeStreamsAndStops(t *testing.T) {
	s := mustBuild(t, `range: {from: 1, to: 10000000}`, nil)
	eq(t, count(t, s), int64(10_000_000))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	n := 0
	err := s.Items(context.Background(), func(v any) error {
		n++
		if n == 10 {
			return errStop
		}
		return nil
	})
	runtime.ReadMemStats(&after)
	if !errors.Is(err, errStop) {
		t.Fatalf("Items returned %v, want the emit error", err)
	}
	if n != 10 {
		t.Fatalf("emitted %d items after the consumer stopped at 10", n)
	}
	// Ten million boxed int64s would be at least 80 MB.
	if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
		t.Errorf("allocated %d bytes for 10 items of a 10M range", d)
	}

	ctx, cancel := context.WithCancel(context.Background())
	n = 0
	err = s.Items(ctx, func(v any) error {
		n++
		if n == 5 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || n != 5 {
		t.Fatalf("after cancel: err %v, %d items; want context.Canceled after 5", err, n)
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestGlob(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"b.log", "a.log", "sub/c.log", "sub/deep/d.log", "sub/e.txt", "other/f.log"} {
		writeFile(t, dir, f, "x\n")
	}
	// A directory whose name matches must not be emitted.
	if err := os.MkdirAll(filepath.Join(dir, "dir.log"), 0o755); err != nil {
		t.Fatal(err)
	}
	env := &steps.Env{Dir: dir, Vars: map[string]any{"ext": "txt"}}
	abs := func(names ...string) []any {
		var out []any
		for _, n := range names {
			out = append(out, filepath.Join(dir, n))
		}
		return out
	}
	cases := []struct {
		src  string
		want []any
	}{
		{`glob: "*.log"`, abs("a.log", "b.log")},
		{`glob: {patterns: ["sub/**/*.log", "*.log", "a.log", "**/c.log"]}`, abs("a.log", "b.log", "sub/c.log", "sub/deep/d.log")},
		{`glob: "**/*.log"`, abs("a.log", "b.log", "other/f.log", "sub/c.log", "sub/deep/d.log")},
		{`glob: "sub/**"`, abs("sub/c.log", "sub/deep/d.log", "sub/e.txt")},
		{`glob: "**/*.${ vars.ext }"`, abs("sub/e.txt")},
		{`glob: "s?b/[a-d].*"`, abs("sub/c.log")},
		{`glob: {patterns: "nothing/*.log", on_empty: ok}`, nil},
		{`glob: {patterns: "*.nomatch", on_empty: ok}`, nil},
		{`glob: "a.log"`, abs("a.log")},
	}
	for _, c := range cases {
		s := mustBuild(t, c.src, env)
		got := mustCollect(t, s)
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s:\n got  %v\n want %v", c.src, got, c.want)
		}
		if n := count(t, s); n != int64(len(c.want)) {
			t.Errorf("%s: Count %d, want %d", c.src, n, len(c.want))
		}
	}
	// An absolute pattern is used as it is.
	s := mustBuild(t, `glob: "`+filepath.Join(dir, "sub", "*.log")+`"`, &steps.Env{Dir: "/nonexistent"})
	eq(t, mustCollect(t, s), abs("sub/c.log"))

	errContains(t, check(t, `glob: "logs/[a-.log"`), "invalid glob pattern", "bad syntax")
	errContains(t, check(t, `glob: {patterns: []}`), "at least one pattern")
	_, err := build(t, `glob: "${ '[' }"`, env)
	errContains(t, err, "invalid glob pattern")
}

func TestGlobSymlinks(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "real/a.log", "x")
	if err := os.Symlink(filepath.Join(dir, "real"), filepath.Join(dir, "loop")); err != nil {
		t.Skip("symlinks unsupported:", err)
	}
	if err := os.Symlink(filepath.Join(dir, "real", "a.log"), filepath.Join(dir, "link.log")); err != nil {
		t.Fatal(err)
	}
	// A link back up would loop forever if followed.
	if err := os.Symlink(dir, filepath.Join(dir, "real", "up")); err != nil {
		t.Fatal(err)
	}
	s := mustBuild(t, `glob: "**/*.log"`, &steps.Env{Dir: dir})
	eq(t, mustCollect(t, s), []any{filepath.Join(dir, "link.log"), filepath.Join(dir, "real", "a.log")})
}

func TestLines(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "in.txt", "one\r\ntwo\n\n  \nlast")
	env := &steps.Env{Dir: dir}
	eq(t, mustCollect(t, mustBuild(t, `lines: in.txt`, env)), []any{"one", "two", "", "  ", "last"})
	eq(t, mustCollect(t, mustBuild(t, `lines: {path: in.txt, skip_empty: true}`, env)), []any{"one", "two", "last"})

	writeFile(t, dir, "empty.txt", "")
	eq(t, mustCollect(t, mustBuild(t, `lines: {path: empty.txt, on_empty: ok}`, env)), []any(nil))
	writeFile(t, dir, "nl.txt", "\n")
	eq(t, mustCollect(t, mustBuild(t, `lines: nl.txt`, env)), []any{""})

	long := strings.Repeat("x", 10<<20)
	writeFile(t, dir, "long.txt", "a\n"+long+"\r\nb\n")
	got := mustCollect(t, mustBuild(t, `lines: long.txt`, env))
	if len(got) != 3 || got[0] != "a" || got[1] != long || got[2] != "b" {
		t.Fatalf("10 MB line: got %d lines, middle of length %d", len(got), len(got[1].(string)))
	}

	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte("g1\ng2\n"))
	zw.Close()
	writeFile(t, dir, "in.txt.gz", gz.String())
	eq(t, mustCollect(t, mustBuild(t, `lines: in.txt.gz`, env)), []any{"g1", "g2"})

	env.Vars = map[string]any{"name": "in"}
	eq(t, len(mustCollect(t, mustBuild(t, `lines: "${ vars.name }.txt"`, env))), 5)

	_, err := collect(t, mustBuild(t, `lines: missing.txt`, env))
	errContains(t, err, filepath.Join(dir, "missing.txt"), "no such file")
}

func TestJSONL(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "in.jsonl", `{"id": 9007199254740993, "x": 1.5}`+"\n\n"+`"s"`+"\r\n"+`[1, null, true]`+"\n"+`1e400`+"\n")
	env := &steps.Env{Dir: dir}
	eq(t, mustCollect(t, mustBuild(t, `jsonl: in.jsonl`, env)), []any{
		map[string]any{"id": int64(9007199254740993), "x": 1.5}, "s", []any{int64(1), nil, true}, json.Number("1e400"),
	})

	writeFile(t, dir, "bad.jsonl", "{\"a\": 1}\n{\"b\": 2}\n{\"c\": oops}\n{\"d\": 4}\n")
	got, err := collect(t, mustBuild(t, `jsonl: {path: bad.jsonl}`, env))
	errContains(t, err, filepath.Join(dir, "bad.jsonl")+":3:7: invalid JSON")
	if len(got) != 2 {
		t.Errorf("emitted %d items before the bad line, want 2", len(got))
	}
	writeFile(t, dir, "trail.jsonl", "{\"a\": 1} x\n")
	_, err = collect(t, mustBuild(t, `jsonl: trail.jsonl`, env))
	errContains(t, err, "trail.jsonl:1:10: invalid JSON: unexpected text after the value")
	writeFile(t, dir, "cut.jsonl", "{\"a\": \n")
	_, err = collect(t, mustBuild(t, `jsonl: cut.jsonl`, env))
	errContains(t, err, "cut.jsonl:1:", "incomplete")
}

func TestStdin(t *testing.T) {
	env := &steps.Env{Stdin: strings.NewReader("a\r\n\nb\n")}
	eq(t, mustCollect(t, mustBuild(t, `stdin`, env)), []any{"a", "", "b"})
	env.Stdin = strings.NewReader("a\r\n\nb\n")
	eq(t, mustCollect(t, mustBuild(t, `stdin: {skip_empty: true}`, env)), []any{"a", "b"})
	env.Stdin = strings.NewReader("{\"a\":1}\n2\n")
	eq(t, mustCollect(t, mustBuild(t, `stdin: jsonl`, env)), []any{map[string]any{"a": int64(1)}, int64(2)})
	env.Stdin = strings.NewReader("{\n")
	_, err := collect(t, mustBuild(t, `stdin: {format: jsonl}`, env))
	errContains(t, err, "<stdin>:1:")
	_, err = collect(t, mustBuild(t, `stdin`, &steps.Env{}))
	errContains(t, err, "no standard input")
	errContains(t, check(t, `stdin: json`), "must be one of lines, jsonl")
}

// Emit errors stop every source at once.
func TestSourcesStopOnEmitError(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "in.txt", "1\n2\n3\n")
	writeFile(t, dir, "in.jsonl", "1\n2\n3\n")
	writeFile(t, dir, "a.log", "")
	writeFile(t, dir, "b.log", "")
	env := &steps.Env{Dir: dir, Stdin: strings.NewReader("1\n2\n3\n")}
	for _, src := range []string{`items: [1, 2, 3]`, `range: {from: 1, to: 3}`, `glob: "*.log"`, `lines: in.txt`, `jsonl: in.jsonl`, `stdin`} {
		s := mustBuild(t, src, env)
		n := 0
		err := s.Items(context.Background(), func(any) error { n++; return errStop })
		if !errors.Is(err, errStop) || n != 1 {
			t.Errorf("%s: err %v after %d items; want the emit error after 1", src, err, n)
		}
	}
}

// Only regular files (and links to them) match; a broken link matches too,
// so that the step that opens it fails that item by name.
func TestGlobRegularFilesOnly(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "a.log", "x")
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo.log"), 0o644); err != nil {
		t.Skip("mkfifo:", err)
	}
	for _, l := range []struct{ target, name string }{
		{"a.log", "link.log"},
		{"fifo.log", "to-fifo.log"},
		{"gone.log", "broken.log"},
		{"/dev/null", "dev.log"},
	} {
		if err := os.Symlink(l.target, filepath.Join(dir, l.name)); err != nil {
			t.Fatal(err)
		}
	}
	abs := func(names ...string) []any {
		var out []any
		for _, n := range names {
			out = append(out, filepath.Join(dir, n))
		}
		return out
	}
	env := &steps.Env{Dir: dir}
	eq(t, mustCollect(t, mustBuild(t, `glob: "*.log"`, env)), abs("a.log", "broken.log", "link.log"))
	eq(t, mustCollect(t, mustBuild(t, `glob: {patterns: ["fifo.log", "broken.log", "dev.log", "to-fifo.log"]}`, env)), abs("broken.log"))
	_, err := collect(t, mustBuild(t, `glob: fifo.log`, env))
	errContains(t, err, `glob "fifo.log" matched no file`)
}

// A source that yields nothing fails the run by default, naming what was
// empty; warn says so on stderr, ok says nothing.
func TestOnEmpty(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "logs/old.txt", "x")
	writeFile(t, dir, "empty.txt", "")
	writeFile(t, dir, "blank.jsonl", "\n  \n")
	for _, c := range []struct{ kind, opts, want string }{
		{"glob", `patterns: "nothing/*.log"`, `glob "nothing/*.log" matched no file: the directory ` + filepath.Join(dir, "nothing") + ` does not exist`},
		{"glob", `patterns: "logs/*.log"`, `glob "logs/*.log" matched no file;`},
		{"glob", `patterns: [logs/*.log, "nothing/**/*.log"]`, `glob matched no file with any of its patterns: "logs/*.log", "nothing/**/*.log" (the directory ` + filepath.Join(dir, "nothing") + ` does not exist)`},
		{"lines", `path: empty.txt`, filepath.Join(dir, "empty.txt") + " is empty"},
		{"lines", `path: blank.jsonl, skip_empty: true`, filepath.Join(dir, "blank.jsonl") + " holds no line that is not blank"},
		{"jsonl", `path: blank.jsonl`, filepath.Join(dir, "blank.jsonl") + " holds no JSON value"},
		{"stdin", `format: lines`, "standard input was empty"},
		{"stdin", `format: jsonl`, "standard input was empty"},
	} {
		var stderr bytes.Buffer
		env := func() *steps.Env {
			return &steps.Env{Dir: dir, Stage: "src", Stdin: strings.NewReader(""), Stderr: &stderr}
		}
		src := c.kind + ": {" + c.opts + "}"
		_, err := collect(t, mustBuild(t, src, env()))
		errContains(t, err, c.want, "set on_empty: warn or ok")
		with := func(policy string) string { return c.kind + ": {" + c.opts + ", on_empty: " + policy + "}" }
		got, err := collect(t, mustBuild(t, with("warn"), env()))
		if err != nil || len(got) != 0 {
			t.Errorf("%s with warn: %v %v", src, got, err)
		}
		if w := stderr.String(); !strings.HasPrefix(w, `flow: warning: source "src": `) || !strings.Contains(w, c.want) {
			t.Errorf("%s with warn: stderr %q", src, w)
		}
		stderr.Reset()
		if _, err := collect(t, mustBuild(t, with("ok"), env())); err != nil || stderr.Len() != 0 {
			t.Errorf("%s with ok: %v, stderr %q", src, err, stderr.String())
		}
	}
	errContains(t, check(t, `glob: {patterns: a, on_empty: never}`), "must be one of fail, warn, ok")
}

// A line longer than max_line stops the source with FILE:LINE, after the
// lines before it, and reading holds about max_line, not the line.
func TestMaxLine(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "in.txt", "1234\n12345678\r\n123456789\nnext\n")
	got, err := collect(t, mustBuild(t, `lines: {path: in.txt, max_line: 8}`, &steps.Env{Dir: dir}))
	eq(t, got, []any{"1234", "12345678"})
	errContains(t, err, filepath.Join(dir, "in.txt")+":3: the line is longer than 8 bytes (max_line)", "raise max_line")
	writeFile(t, dir, "in.jsonl", "1\n\"a long string\"\n")
	_, err = collect(t, mustBuild(t, `jsonl: {path: in.jsonl, max_line: 1KiB}`, &steps.Env{Dir: dir}))
	if err != nil {
		t.Error(err)
	}
	_, err = collect(t, mustBuild(t, `jsonl: {path: in.jsonl, max_line: 4}`, &steps.Env{Dir: dir}))
	errContains(t, err, "in.jsonl:2: the line is longer than 4 bytes")
	errContains(t, check(t, `lines: {path: a, max_line: 0}`), "max_line must be more than 0")

	// 256 MiB without a line feed (what a gzip of zeros holds) costs
	// about the default bound, not the line.
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	env := &steps.Env{Stdin: io.LimitReader(zeros{}, 256<<20)}
	_, err = collect(t, mustBuild(t, `stdin: jsonl`, env))
	runtime.ReadMemStats(&after)
	errContains(t, err, "<stdin>:1: the line is longer than 16MiB (max_line)")
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 3*defaultMaxLine {
		t.Errorf("reading the line allocated %d MiB", alloc>>20)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestDescribeInTheFormatsWords: what a bad value is, said without Go type
// names ("got 2.5 (float64)" was the message).
func TestDescribeInTheFormatsWords(t *testing.T) {
	for v, want := range map[any]string{
		2.5: "the number 2.5", int64(3): "the number 3", true: "the boolean true",
		"x": `the string "x"`, nil: "nothing (null)",
	} {
		if got := describe(v); got != want {
			t.Errorf("describe(%#v) = %q, want %q", v, got, want)
		}
	}
}

// A pattern with wildcards in its last segment only is listed from one
// directory read (listDir), not walked: the two must agree on every kind of
// entry. "d1/*.log" takes the short way, "d?/*.log" the walk.
func TestGlobOneDirectoryAsWalk(t *testing.T) {
	dir := t.TempDir()
	for i := range 300 {
		// Created out of order, so that the directory's order is not the
		// sorted one.
		writeFile(t, dir, fmt.Sprintf("d1/app-%03d.log", (i*7919)%300), "x")
	}
	for _, f := range []string{"d1/.hidden.log", "d1/b.txt", "d1/sub/c.log", "d1/x.log/inner.log", "f.txt"} {
		writeFile(t, dir, f, "x")
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "d1", "fifo.log"), 0o644); err != nil {
		t.Skip("mkfifo:", err)
	}
	for _, l := range []struct{ target, name string }{
		{"app-001.log", "d1/link.log"},
		{"gone.log", "d1/broken.log"},
		{"sub", "d1/dirlink.log"},
		{"d1", "l1"},
	} {
		if err := os.Symlink(l.target, filepath.Join(dir, l.name)); err != nil {
			t.Fatal(err)
		}
	}
	env := &steps.Env{Dir: dir}
	for _, c := range []struct{ short, walked string }{
		{"d1/*.log", "d?/*.log"},
		{"d1/app-0[0-4]?.log", "d[1]/app-0[0-4]?.log"},
		{"l1/*.log", "l?/*.log"},       // a linked directory is not followed by either
		{"f.txt/*.log", "f.tx?/*.log"}, // a file where a directory should be
		{"d2/*.log", "d2/**/*.log"},    // a missing directory
	} {
		short, err := collect(t, mustBuild(t, `glob: {patterns: "`+c.short+`", on_empty: ok}`, env))
		if err != nil {
			t.Fatalf("%s: %v", c.short, err)
		}
		walked, err := collect(t, mustBuild(t, `glob: {patterns: "`+c.walked+`", on_empty: ok}`, env))
		if err != nil {
			t.Fatalf("%s: %v", c.walked, err)
		}
		if !reflect.DeepEqual(short, walked) {
			t.Errorf("%s gave\n %v\nand %s gave\n %v", c.short, short, c.walked, walked)
		}
		if c.short == "d1/*.log" && len(short) != 300+3 {
			t.Errorf("%s: %d files, want the 300 logs, .hidden.log, link.log and broken.log", c.short, len(short))
		}
	}
	_, err := collect(t, mustBuild(t, `glob: "d2/*.log"`, env))
	errContains(t, err, "the directory "+filepath.Join(dir, "d2")+" does not exist")
}

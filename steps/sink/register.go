// Package sink holds the kinds that end a pipeline: print (to standard
// output) and write (to a file, atomically). Both render records as JSON
// Lines, one JSON array, CSV or an aligned table; print can also render a
// text template per item.
package sink

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/tmpl"
)

// Register adds this package's kinds to r.
func Register(r *steps.Registry) {
	steps.RegisterSink(r, steps.Kind{
		Name:    "print",
		Summary: "Print results on standard output as JSON Lines, JSON, CSV, a table or a text template.",
		Doc: "Writes each result to standard output. `jsonl` (the default, and what a pipeline without a sink " +
			"prints) writes one JSON value per line as results arrive. `json` writes one JSON array, streamed " +
			"element by element. `csv` writes a header, then one row per result; without `columns:` the header is " +
			"chosen from the first 1000 results, and a key first seen later is reported on standard error. " +
			"`table` aligns columns, so it must see every result first: it holds them all and prints when the run " +
			"ends; use it for summaries, not for millions of rows. `template` prints one line per result.\n\n" +
			"Columns of `csv` and `table` are `columns:` when given, otherwise the keys of the results in the " +
			"order first seen (the keys of one result in alphabetical order); a result that is not a mapping is the " +
			"column `value`. Results kept under `on_error: keep` carry their message in an `error` column. " +
			"Output is flushed at least every 100ms, and what arrived is printed even when the run fails.",
		Example: "print: {format: table, columns: [file, lines, errors]}",
	}, newPrint)
	steps.RegisterSink(r, steps.Kind{
		Name:    "write",
		Summary: "Write results to a file as JSON Lines, JSON, CSV or a table, atomically.",
		Doc: "Writes results to a temporary file next to `path`, then, when the run succeeds, flushes it to disk " +
			"and renames it over `path`: readers see the old file or the whole new one, never half of one. When " +
			"the run fails or is interrupted, or a write fails, the temporary file is removed and the old file " +
			"stays as it was. The format comes from `format:` or from the extension (`.jsonl`, `.ndjson`, " +
			"`.json`, `.csv`); formats behave as for `print`.\n\n" +
			"A relative `path` resolves against the directory of the pipeline file, and must stay inside it: " +
			"absolute paths and paths that leave it through `..` or a symbolic link are refused unless " +
			"`allow_outside: true`. Missing parent directories are created. The destination's directory is " +
			"opened once, and every write and the final rename go through it: when its path is changed to " +
			"lead elsewhere while the run writes (a directory swapped for a symbolic link), the sink fails " +
			"rather than follow it.\n\n" +
			"A run that succeeds with no results writes an empty output (`[]` for `json`): the output says " +
			"what this run found. A source that finds nothing to read fails the run by default (`on_empty`), " +
			"and a failed run keeps the old file.",
		Example: "write: {path: out/results.jsonl}",
	}, newWrite)
}

// ---- print

// PrintConfig holds the options of 'print'.
type PrintConfig struct {
	Format   string   `yaml:"format" enum:"jsonl,json,csv,table" default:"jsonl" desc:"Output format: 'jsonl' (one JSON value per line, streamed), 'json' (one array), 'csv', or 'table' (aligned columns, printed at the end)."`
	Columns  []string `yaml:"columns" desc:"Columns of 'csv' and 'table', in order; with 'json' and 'jsonl', the keys kept. Default: every key, in the order first seen." example:"[file, lines, errors]"`
	Template *tmpl.T  `yaml:"template" desc:"Print one line per result from this text, with '${ }' expressions over 'item', 'index', 'vars' and 'env'. Replaces 'format'." example:"${ item.symbol }: ${ item.price }"`

	// Node tells the keys written from the defaults filled in.
	Node *yaml.Node `yaml:"-" conf:"node"`
}

func (c *PrintConfig) Shorthand() string { return "format" }

func (c *PrintConfig) Validate() error {
	if c.Template != nil && (conf.Lookup(c.Node, "format") != nil || c.Columns != nil) {
		return fmt.Errorf("print takes either 'template' or 'format'/'columns', not both: a template writes the whole line")
	}
	return checkColumns(c.Columns)
}

func checkColumns(cols []string) error {
	seen := map[string]bool{}
	for _, c := range cols {
		if c == "" {
			return fmt.Errorf("columns: a column name must not be empty")
		}
		if seen[c] {
			return fmt.Errorf("columns: %q is listed twice", c)
		}
		seen[c] = true
	}
	return nil
}

// flushEvery bounds how long a printed result may wait in the buffer, so a
// slow pipeline still shows each result soon after it is ready.
const flushEvery = 100 * time.Millisecond

type printSink struct {
	mu     sync.Mutex
	bw     *bufio.Writer
	enc    encoder
	timer  *time.Timer
	err    error // first failed write; later writes return it
	closed bool
}

func newPrint(c *PrintConfig, env *steps.Env) (steps.Sink, error) {
	out := env.Stdout
	if out == nil {
		out = os.Stdout
	}
	s := &printSink{}
	s.bw = bufio.NewWriterSize(&stdoutWriter{out}, 64<<10)
	if c.Template != nil {
		s.enc = &templateEnc{w: s.bw, t: c.Template, env: env}
		return s, nil
	}
	s.enc = newEncoder(c.Format, c.Columns, s.bw, env.Stderr)
	return s, nil
}

// stdoutWriter names standard output in write errors (a closed pipe, a full
// disk behind a redirection).
type stdoutWriter struct{ w io.Writer }

func (s *stdoutWriter) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if err != nil {
		err = fmt.Errorf("cannot write to standard output: %w", err)
	}
	return n, err
}

func newEncoder(format string, cols []string, w io.Writer, stderr io.Writer) encoder {
	switch format {
	case "json":
		return &jsonEnc{w: w, cols: cols}
	case "csv":
		return &csvEnc{w: csv.NewWriter(w), out: w, explicit: cols, warn: stderr}
	case "table":
		return &tableEnc{w: w, explicit: cols}
	}
	return &jsonlEnc{w: w, cols: cols}
}

func (s *printSink) Write(ctx context.Context, r steps.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	if err := s.enc.write(ctx, r); err != nil {
		s.err = err
		return err
	}
	if s.bw.Buffered() > 0 && s.timer == nil {
		s.timer = time.AfterFunc(flushEvery, s.timedFlush)
	}
	return nil
}

// WriteBatch is Write for a run of records under one lock (the engine's
// BatchSink): the lock and the flush timer's check cost as much as
// printing a number.
func (s *printSink) WriteBatch(ctx context.Context, recs []steps.Record) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return 0, s.err
	}
	for i, r := range recs {
		// A stopped run writes nothing more, as record by record: the
		// engine cancels what is left.
		if err := ctx.Err(); err != nil {
			return i, err
		}
		if err := s.enc.write(ctx, r); err != nil {
			s.err = err
			return i, err
		}
	}
	if s.bw.Buffered() > 0 && s.timer == nil {
		s.timer = time.AfterFunc(flushEvery, s.timedFlush)
	}
	return len(recs), nil
}

func (s *printSink) timedFlush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.timer = nil
	if !s.closed && s.err == nil {
		s.err = s.bw.Flush()
	}
}

// Close prints what the format kept back (a table, the end of an array),
// even after a failed run: partial results are still results.
func (s *printSink) Close(ctx context.Context, runErr error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	if s.err != nil {
		return s.err
	}
	if err := s.enc.finish(); err != nil {
		return err
	}
	return s.bw.Flush()
}

// ---- write

// WriteConfig holds the options of 'write'.
type WriteConfig struct {
	Path         *tmpl.T  `yaml:"path" required:"true" desc:"File to write, relative to the pipeline directory; may hold '${ }' expressions over 'vars' and 'env'. It must stay inside the pipeline directory unless 'allow_outside' is true." example:"out/results.jsonl"`
	Format       string   `yaml:"format" enum:"jsonl,json,csv,table" desc:"Output format. Default: from the extension of 'path' ('.jsonl' or '.ndjson', '.json', '.csv')."`
	Columns      []string `yaml:"columns" desc:"Columns of 'csv' and 'table', in order; with 'json' and 'jsonl', the keys kept. Default: every key, in the order first seen." example:"[file, lines, errors]"`
	AllowOutside bool     `yaml:"allow_outside" default:"false" desc:"Allow an absolute 'path', or one that leaves the pipeline directory through '..' or a symbolic link. Off by default so that a pipeline only writes inside its own folder."`
}

func (c *WriteConfig) Shorthand() string { return "path" }

func (c *WriteConfig) Validate() error {
	var ds conf.Diags
	if err := checkColumns(c.Columns); err != nil {
		ds.AddErr(conf.Pos{}, err)
	}
	if c.Path != nil && c.Path.IsConst() {
		v, _ := c.Path.Eval(&tmpl.Scope{Ctx: context.Background()})
		p, ok := v.(string)
		switch {
		case !ok || p == "":
			ds.AddErr(conf.Pos{}, at(c.Path, "write path must be a non-empty string, got %s", tmpl.Stringify(v)))
		default:
			if err := lexicallyInside(p, c.AllowOutside); err != nil {
				ds.AddErr(conf.Pos{}, at(c.Path, "%v", err))
			}
			if c.Format == "" {
				if _, err := formatOf(p); err != nil {
					ds.AddErr(conf.Pos{}, at(c.Path, "%v", err))
				}
			}
		}
	}
	return ds.Err()
}

func at(t *tmpl.T, format string, args ...any) error {
	if t != nil && t.Node() != nil {
		return conf.Errorf(conf.NodePos(t.Node()), format, args...)
	}
	return fmt.Errorf(format, args...)
}

func formatOf(p string) (string, error) {
	switch strings.ToLower(filepath.Ext(p)) {
	case ".jsonl", ".ndjson":
		return "jsonl", nil
	case ".json":
		return "json", nil
	case ".csv":
		return "csv", nil
	}
	return "", fmt.Errorf("cannot tell the format of %q from its extension; name it .jsonl, .json or .csv, or set 'format: jsonl|json|csv|table'", p)
}

const outsideHint = "write inside the pipeline directory, or set 'allow_outside: true'"

// lexicallyInside refuses absolute paths and relative ones that climb out of
// the pipeline directory, before anything touches the disk.
func lexicallyInside(p string, allow bool) error {
	if allow {
		return nil
	}
	if filepath.IsAbs(p) {
		return fmt.Errorf("write path %q is absolute; %s", p, outsideHint)
	}
	c := filepath.Clean(p)
	if c == ".." || strings.HasPrefix(c, ".."+string(filepath.Separator)) {
		return fmt.Errorf("write path %q leaves the pipeline directory; %s", p, outsideHint)
	}
	return nil
}

type fileSink struct {
	// mu makes a Close from the engine's abort path safe against a Write
	// still in progress on the sink's own goroutine.
	mu sync.Mutex
	// path is the destination as shown in messages, and parent the folder
	// that holds it (where a test's mocks keep it); dir is that folder,
	// opened once when the sink is built, and base its name there. Every
	// file operation goes through dir, so that a symbolic link swapped in
	// for a directory on the way mid-run cannot take the output elsewhere.
	path    string
	parent  string
	dir     *os.Root
	base    string
	tmp     *os.File // created on the first write, named tmpName in dir
	tmpName string
	bw      *bufio.Writer
	enc     encoder
	err     error // first failed write
	done    bool
}

func newWrite(c *WriteConfig, env *steps.Env) (steps.Sink, error) {
	v, err := c.Path.Eval(&tmpl.Scope{Vars: env.Vars, Env: env.Env, Ctx: context.Background()})
	if err != nil {
		return nil, at(c.Path, "%v", err)
	}
	p, ok := v.(string)
	if !ok || p == "" {
		return nil, at(c.Path, "write path must be a non-empty string, got %s", tmpl.Stringify(v))
	}
	format := c.Format
	if format == "" {
		if format, err = formatOf(p); err != nil {
			return nil, at(c.Path, "%v", err)
		}
	}
	if err := lexicallyInside(p, c.AllowOutside); err != nil {
		return nil, at(c.Path, "%v", err)
	}
	dest := p
	if !filepath.IsAbs(p) {
		dest = filepath.Join(dirOf(env), p)
	}
	// Where the folders are: the pipeline's and dest's, or where a test's
	// mocks keep them (a sandbox); messages name dest all the same.
	top, parent := dirOf(env), filepath.Dir(dest)
	if env.Outside != nil {
		bg := context.Background()
		if top, err = steps.WritePath(bg, env, -1, top); err != nil {
			return nil, err
		}
		if parent, err = steps.WritePath(bg, env, -1, parent); err != nil {
			return nil, err
		}
	}
	dir, err := openParent(c, top, parent, p, dest)
	if err != nil {
		return nil, err
	}
	base := filepath.Base(dest)
	if fi, err := dir.Stat(base); err == nil && fi.IsDir() {
		dir.Close()
		return nil, at(c.Path, "cannot write %s: it is a directory", dest)
	}
	s := &fileSink{path: dest, parent: parent, dir: dir, base: base}
	// Try the directory now: an unwritable one then stops the run before
	// any work is done, rather than after all of it. The real temporary
	// file is created on the first write, so a sink that is built but never
	// used leaves nothing behind.
	probe, name, err := s.createTemp()
	if err != nil {
		dir.Close()
		return nil, err
	}
	probe.Close()
	dir.Remove(name)
	s.bw = bufio.NewWriterSize(&fileWriter{s}, 256<<10)
	s.enc = newEncoder(format, c.Columns, s.bw, env.Stderr)
	return s, nil
}

// openParent creates the destination's directory when missing and opens
// it. Inside the pipeline directory this goes through an os.Root, which
// refuses ".." and symbolic links that lead out, before creating anything.
// top is the pipeline directory and parent dest's, where they are read.
func openParent(c *WriteConfig, top, parent, p, dest string) (*os.Root, error) {
	if c.AllowOutside {
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return nil, fmt.Errorf("cannot write %s: cannot create its directory: %v", dest, unwrapPath(err))
		}
		dir, err := os.OpenRoot(parent)
		if err != nil {
			return nil, fmt.Errorf("cannot write %s: %v", dest, unwrapPath(err))
		}
		return dir, nil
	}
	tr, err := os.OpenRoot(top)
	if err != nil {
		return nil, fmt.Errorf("cannot write %s: cannot open the pipeline directory: %v", dest, unwrapPath(err))
	}
	defer tr.Close()
	rel := filepath.Dir(filepath.Clean(p))
	err = tr.MkdirAll(rel, 0o755)
	var dir *os.Root
	if err == nil {
		dir, err = tr.OpenRoot(rel)
	}
	switch {
	case err == nil:
		return dir, nil
	case escapes(err):
		to := ""
		if real, rerr := filepath.EvalSymlinks(parent); rerr == nil {
			to = " (to " + real + ")"
		}
		return nil, at(c.Path, "write path %q leads out of the pipeline directory through a symbolic link%s; %s", p, to, outsideHint)
	case errors.Is(err, fs.ErrExist):
		// Something on the way is not a directory; os.MkdirAll says so,
		// os.Root's says only "file exists".
		err = syscall.ENOTDIR
	}
	return nil, fmt.Errorf("cannot write %s: cannot create its directory: %v", dest, unwrapPath(err))
}

// escapes reports os.Root's refusal of a path that leads out of it, which
// has no exported error value.
func escapes(err error) bool {
	return err != nil && strings.Contains(err.Error(), "path escapes from parent")
}

func dirOf(env *steps.Env) string {
	if env.Dir == "" {
		return "."
	}
	return env.Dir
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}

// fileWriter names the destination, not the temporary file, in errors: the
// temporary file is an implementation detail the user never asked for.
type fileWriter struct{ s *fileSink }

func (w *fileWriter) Write(p []byte) (int, error) {
	if err := w.s.open(); err != nil {
		return 0, err
	}
	n, err := w.s.tmp.Write(p)
	if err != nil {
		err = fmt.Errorf("cannot write %s: %v", w.s.path, unwrapPath(err))
	}
	return n, err
}

func (s *fileSink) Write(ctx context.Context, r steps.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	if s.done {
		return fmt.Errorf("write %s: sink already closed", s.path)
	}
	if err := s.enc.write(ctx, r); err != nil {
		s.err = err
		return err
	}
	return nil
}

// Close renames the finished file into place when the run succeeded, and
// otherwise removes it, so the destination holds the old content or the
// whole new one. A run with no results writes an empty output: that is
// what the run found (a source that finds nothing to read fails the run by
// default instead; see on_empty).
func (s *fileSink) Close(ctx context.Context, runErr error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return nil
	}
	s.done = true
	defer s.dir.Close()
	if runErr != nil || s.err != nil {
		s.abort()
		return s.err
	}
	if err := s.commit(); err != nil {
		s.abort()
		return err
	}
	return nil
}

// createTemp makes a new private file in the destination's directory, so
// that the final rename never crosses file systems, named as tempPrefix
// says. O_EXCL: never an existing file, and never through a link.
func (s *fileSink) createTemp() (*os.File, string, error) {
	prefix := tempPrefix(s.path)
	for range 100 {
		name := prefix + strconv.FormatUint(uint64(rand.Uint32()), 10)
		f, err := s.dir.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, "", fmt.Errorf("cannot write %s: %v", s.path, unwrapPath(err))
		}
		return f, name, nil
	}
	return nil, "", fmt.Errorf("cannot write %s: cannot find a free temporary name in its directory", s.path)
}

// open creates the temporary file on the first write.
func (s *fileSink) open() error {
	if s.tmp != nil {
		return nil
	}
	if err := s.sameDir(); err != nil {
		return err
	}
	f, name, err := s.createTemp()
	if err != nil {
		return err
	}
	s.tmp, s.tmpName = f, name
	// Only a sink that writes cleans up, and only after it could create its
	// own file: the directory is known writable, and a sink that is built
	// but never used touches nothing.
	removeLeftovers(s.dir, s.base)
	return nil
}

// sameDir checks that the destination's path still leads to the directory
// the sink opened. The writes cannot leave that directory whatever happens
// to the path, but a directory replaced mid-run (by a file, or by a link
// elsewhere) means the output would land where nobody looks for it: the
// sink fails instead, and the run with it.
func (s *fileSink) sameDir() error {
	parent := filepath.Dir(s.path)
	now, err := os.Stat(s.parent)
	if err != nil {
		return fmt.Errorf("cannot write %s: %v", s.path, unwrapPath(err))
	}
	if !now.IsDir() {
		return fmt.Errorf("cannot write %s: %s is not a directory any more: it was replaced while the run was writing", s.path, parent)
	}
	was, err := s.dir.Stat(".")
	if err != nil {
		return fmt.Errorf("cannot write %s: %v", s.path, unwrapPath(err))
	}
	if !os.SameFile(now, was) {
		what := "another directory"
		if fi, err := os.Lstat(s.parent); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
			what = "a symbolic link"
		}
		return fmt.Errorf("cannot write %s: %s was replaced by %s while the run was writing; not writing there (the previous output, if any, is untouched)", s.path, parent, what)
	}
	return nil
}

func (s *fileSink) commit() error {
	if err := s.enc.finish(); err != nil {
		return err
	}
	if err := s.bw.Flush(); err != nil {
		return err
	}
	if err := s.open(); err != nil { // nothing was written: an empty file
		return err
	}
	if err := s.tmp.Sync(); err != nil {
		return fmt.Errorf("cannot write %s: flushing to disk: %v", s.path, unwrapPath(err))
	}
	// The file was created private; give it the old file's mode, or the
	// usual mode of a new file. Lstat: a link at the destination is
	// replaced, not followed, so its target's mode is not the old mode.
	mode := os.FileMode(0o644)
	if fi, err := s.dir.Lstat(s.base); err == nil && fi.Mode().IsRegular() {
		mode = fi.Mode().Perm()
	}
	if err := s.tmp.Chmod(mode); err != nil {
		return fmt.Errorf("cannot write %s: %v", s.path, unwrapPath(err))
	}
	if err := s.tmp.Close(); err != nil {
		return fmt.Errorf("cannot write %s: %v", s.path, unwrapPath(err))
	}
	// Checked again at rename time: the path may have changed since the
	// first write.
	if err := s.sameDir(); err != nil {
		return err
	}
	if err := s.dir.Rename(s.tmpName, s.base); err != nil {
		return fmt.Errorf("cannot write %s: %v", s.path, unwrapPath(err))
	}
	s.tmp = nil
	// Make the rename itself durable; not every file system can sync a
	// directory, and the data is already safe, so failure here is ignored.
	if d, err := s.dir.Open("."); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func (s *fileSink) abort() {
	if s.tmp != nil {
		s.tmp.Close()
		s.dir.Remove(s.tmpName)
		s.tmp = nil
	}
}

var (
	_ steps.Sink = (*printSink)(nil)
	_ steps.Sink = (*fileSink)(nil)
)

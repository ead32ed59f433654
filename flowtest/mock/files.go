package mock

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/steps"
)

// The sandbox mirrors the pipeline's file system under r.root: the path the
// pipeline calls /home/u/proj/logs/a.log is r.root/home/u/proj/logs/a.log.
// That keeps the structure Outside.Path promises, so the kinds walk, open
// and write there with every check of their own; and since a path is
// cleaned before it is joined to the root, and the sandbox holds no
// symbolic links, nothing leads out of it.

// real is where the pipeline's path p lives in the sandbox.
func (r *Recorder) real(p string) string { return filepath.Join(r.root, p) }

// layout creates the pipeline's folder in the sandbox: it exists in a real
// run, so writes inside it need nothing more.
func (r *Recorder) layout(pipelineDir string) error {
	return r.mkdirs(pipelineDir, true)
}

// mkdirs creates the folder the pipeline calls dir, marking the folders it
// creates as structural when they only lay the sandbox out.
func (r *Recorder) mkdirs(dir string, structural bool) error {
	var todo []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(r.real(d)); err == nil {
			break
		}
		todo = append(todo, d)
		if d == filepath.Dir(d) {
			break
		}
	}
	if err := os.MkdirAll(r.real(dir), 0o755); err != nil {
		return fmt.Errorf("creating the sandbox of a test: %w", err)
	}
	if structural {
		for _, d := range todo {
			if !r.mounted(d) {
				r.structural[d] = true
			}
		}
	}
	return nil
}

// mounted reports whether p is a fixture or inside one.
func (r *Recorder) mounted(p string) bool {
	for _, m := range r.mounts {
		if p == m || strings.HasPrefix(p, m+string(filepath.Separator)) || m == string(filepath.Separator) {
			return true
		}
	}
	return false
}

// holdsMount reports whether a fixture lies below the folder p: a walk of p
// finds it.
func (r *Recorder) holdsMount(p string) bool {
	prefix := p + string(filepath.Separator)
	if p == string(filepath.Separator) {
		prefix = p
	}
	for _, m := range r.mounts {
		if strings.HasPrefix(m, prefix) {
			return true
		}
	}
	return false
}

// copyFixtures copies the fixture folder and the mapped fixtures into the
// sandbox. Problems with a fixture are added to ds at its position; the
// error is for the sandbox itself.
func (r *Recorder) copyFixtures(troot *os.Root, f *Files, at conf.Pos, ds *conf.Diags) error {
	if f == nil {
		return nil
	}
	budget := int64(defaultFixtureBytes)
	if f.MaxBytes != nil {
		budget = int64(*f.MaxBytes)
	}
	limit := budget
	type mapping struct {
		from, to string
		pos      conf.Pos
	}
	var list []mapping
	if f.Fixtures != "" {
		pos := conf.ValuePos(f.Node, "fixtures")
		if f.Node == nil { // 'files: FOLDER'
			pos = at
		}
		list = append(list, mapping{from: f.Fixtures, to: r.pipelineDir, pos: pos})
	}
	keys := make([]string, 0, len(f.Map))
	for k := range f.Map {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		to := k
		if !filepath.IsAbs(to) {
			to = filepath.Join(r.pipelineDir, to)
		}
		list = append(list, mapping{from: f.Map[k], to: filepath.Clean(to), pos: conf.ValuePos(conf.Lookup(f.Node, "map"), k)})
	}
	for _, m := range list {
		from := filepath.Clean(m.from)
		if !filepath.IsLocal(from) && from != "." {
			ds.Add(m.pos, "fixture %q must be inside the test's folder (a relative path without '..')", m.from)
			continue
		}
		fi, err := troot.Stat(from)
		if err != nil {
			ds.Add(m.pos, "fixture %q: %v", m.from, unwrap(err))
			continue
		}
		parent := filepath.Dir(m.to)
		if fi.IsDir() {
			parent = m.to
		}
		if err := r.mkdirs(parent, true); err != nil {
			return err
		}
		r.mounts = append(r.mounts, m.to)
		if !fi.IsDir() {
			if err := r.copyFile(troot, from, m.to, &budget, limit); err != nil {
				ds.Add(m.pos, "fixture %q: %v", m.from, err)
			}
			continue
		}
		err = fs.WalkDir(troot.FS(), filepath.ToSlash(from), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(from, filepath.FromSlash(p))
			to := filepath.Join(m.to, rel)
			switch {
			case d.IsDir():
				return os.MkdirAll(r.real(to), 0o755)
			case d.Type().IsRegular():
				return r.copyFile(troot, filepath.FromSlash(p), to, &budget, limit)
			}
			return fmt.Errorf("%s is not a regular file or a folder (fixtures hold files and folders only, no symbolic links)", p)
		})
		if err != nil {
			ds.Add(m.pos, "fixture %q: %v", m.from, unwrap(err))
		}
	}
	return nil
}

// copyFile copies one fixture file, taking its size from budget (the rest
// of limit).
func (r *Recorder) copyFile(troot *os.Root, from, to string, budget *int64, limit int64) error {
	if fi, err := troot.Stat(from); err == nil && fi.Size() > *budget {
		return fmt.Errorf("the fixtures hold more than max_bytes (%d bytes); raise 'max_bytes' or use smaller fixtures", limit)
	}
	b, err := readBounded(troot, from, *budget, "fixture")
	if err != nil {
		return err
	}
	*budget -= int64(len(b))
	if err := os.WriteFile(r.real(to), b, 0o644); err != nil {
		return err
	}
	r.fixtures[to] = fixture{size: int64(len(b)), sum: sha256.Sum256(b)}
	return nil
}

// Path maps a path of the pipeline into the sandbox. Writes always land
// there; a read is mocked when a fixture provides the path (or lies below
// it, for a walk) or the run wrote it.
func (r *Recorder) Path(ctx context.Context, at steps.At, op steps.FileOp, p string) (string, error) {
	if !filepath.IsAbs(p) {
		p = filepath.Join(r.pipelineDir, p)
	}
	p = filepath.Clean(p)
	real := r.real(p)
	if op == steps.OpWrite {
		if err := os.MkdirAll(filepath.Dir(real), 0o755); err != nil {
			return "", &steps.Error{Err: fmt.Errorf("%s: %v", p, unwrap(err)), Class: "io"}
		}
		return real, nil
	}
	if r.mounted(p) || r.holdsMount(p) {
		return real, nil
	}
	if _, err := os.Lstat(real); err == nil && !r.structural[p] {
		return real, nil
	}
	show := p
	if rel, err := filepath.Rel(r.pipelineDir, p); err == nil && filepath.IsLocal(rel) {
		show = rel
	}
	hint := fmt.Sprintf("files: {map: {%q: fixtures/%s}}, or put it in the fixture folder ('files: FOLDER') as %s", show, filepath.Base(p), filepath.ToSlash(show))
	if filepath.IsAbs(show) {
		hint = fmt.Sprintf("files: {map: {%q: fixtures/%s}}", show, filepath.Base(p))
	}
	return "", r.refuse(Access{Stage: at.Stage, Index: at.Index, What: "file", Target: p, Hint: hint})
}

// Outputs lists the files the run wrote (their paths as the pipeline names
// them, sorted): every file in the sandbox that is not a fixture as it was
// copied.
func (r *Recorder) Outputs() ([]string, error) {
	var out []string
	err := filepath.WalkDir(r.root, func(real string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(r.root, real)
		p := string(filepath.Separator) + rel
		if sum, ok := r.fixtures[p]; ok && unchanged(real, sum) {
			return nil
		}
		out = append(out, p)
		return nil
	})
	return out, err
}

// fixture is what tells a copied fixture from an output written over it.
type fixture struct {
	size int64
	sum  [sha256.Size]byte
}

// unchanged reports whether the sandbox file still holds its fixture's
// bytes. The size decides first and the hash streams: a run may have
// written gigabytes over a fixture's path.
func unchanged(real string, want fixture) bool {
	f, err := os.Open(real)
	if err != nil {
		return false
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.Size() != want.size {
		return false
	}
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(f, want.size+1))
	return err == nil && n == want.size && [sha256.Size]byte(h.Sum(nil)) == want.sum
}

// Output returns the content of a file the run wrote, p as the pipeline
// names it (relative to its folder, or absolute).
func (r *Recorder) Output(p string) ([]byte, error) {
	if !filepath.IsAbs(p) {
		p = filepath.Join(r.pipelineDir, p)
	}
	p = filepath.Clean(p)
	f, err := os.Open(r.real(p))
	if err != nil {
		return nil, fmt.Errorf("the run wrote no file %s", p)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxOutputRead+1))
	if err != nil {
		return nil, fmt.Errorf("reading the output %s: %v", p, err)
	}
	if len(b) > maxOutputRead {
		return nil, fmt.Errorf("the output %s is larger than %d bytes", p, maxOutputRead)
	}
	return b, nil
}

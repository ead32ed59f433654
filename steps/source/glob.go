package source

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// checkPattern refuses bad syntax up front, segment by segment, so that a typo
// like "logs/[a-.log" is an error rather than a pattern that silently
// matches nothing.
func checkPattern(p string) error {
	for _, seg := range strings.Split(filepath.ToSlash(p), "/") {
		if _, err := path.Match(seg, ""); err != nil {
			return fmt.Errorf("invalid glob pattern %q: bad syntax in %q (check the brackets and backslashes)", p, seg)
		}
	}
	return nil
}

func hasMeta(s string) bool { return strings.ContainsAny(s, `*?[\`) }

// expand returns the files matching any of the patterns, sorted and without
// duplicates, and for each pattern whose fixed leading directory does not
// exist, that directory. Relative patterns resolve against dir; results are
// absolute paths so that every later step can open them, whatever its
// working directory. Only regular files match (see matches); symbolic links
// to directories are not followed, which keeps '**' out of link loops.
// With real set (a test's steps.Outside), the tree read is the one real
// gives for each path; the results keep the pipeline's paths.
func expand(ctx context.Context, dir string, patterns []string, real func(p string) (string, error)) ([]string, map[string]string, error) {
	// Matches are collected in a list, sorted and compacted at the end: a
	// map for the duplicates between patterns cost more than the sort
	// itself over ten thousand files.
	var found []string
	missing := map[string]string{}
	for _, p := range patterns {
		if err := checkPattern(p); err != nil {
			return nil, nil, err
		}
		abs, err := filepath.Abs(resolve(dir, p))
		if err != nil {
			return nil, nil, fmt.Errorf("glob %q: %v", p, err)
		}
		root, err := expandOne(ctx, abs, &found, real)
		if err != nil {
			return nil, nil, err
		}
		if root != "" {
			missing[p] = root
		}
	}
	// One pattern over one directory comes sorted already (see listDir).
	if !slices.IsSorted(found) {
		slices.Sort(found)
	}
	return slices.Compact(found), missing, nil
}

// expandOne appends the matches of one absolute pattern to found. It
// returns the directory the pattern starts from when that does not exist.
func expandOne(ctx context.Context, pattern string, found *[]string, real func(string) (string, error)) (missing string, err error) {
	segs := strings.Split(filepath.ToSlash(pattern), "/")
	// The root is the longest leading run of segments without wildcards:
	// the walk starts there instead of at "/".
	i := 0
	for i < len(segs) && !hasMeta(segs[i]) {
		i++
	}
	if i == len(segs) {
		at := pattern
		if real != nil {
			if at, err = real(pattern); err != nil {
				return "", err
			}
		}
		fi, err := os.Lstat(at)
		switch {
		case err == nil:
			if matches(at, fi.Mode().Type()) {
				*found = append(*found, pattern)
			}
		case errors.Is(err, fs.ErrNotExist):
			if _, derr := os.Stat(filepath.Dir(at)); errors.Is(derr, fs.ErrNotExist) {
				missing = filepath.Dir(pattern)
			}
		}
		return missing, nil
	}
	root := filepath.FromSlash(strings.Join(segs[:i], "/"))
	if root == "" {
		root = "/"
	}
	// walk is the tree read: root itself, or where a test's mocks keep it.
	walk := root
	if real != nil {
		if walk, err = real(root); err != nil {
			return "", err
		}
	}
	pat := segs[i:]
	if len(pat) == 1 && pat[0] != "**" {
		return listDir(ctx, pattern, root, walk, pat[0], found)
	}
	err = filepath.WalkDir(walk, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(walk, p)
		shown := p
		if walk != root {
			shown = filepath.Join(root, rel)
		}
		if err != nil {
			if p == walk && errors.Is(err, fs.ErrNotExist) {
				missing = root
				return fs.SkipAll // a pattern under a missing directory matches nothing
			}
			return fmt.Errorf("glob %q: cannot read %s: %v", pattern, shown, unwrapPath(err))
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if p == walk {
			return nil
		}
		rs := strings.Split(filepath.ToSlash(rel), "/")
		if d.IsDir() {
			if !couldMatchBelow(pat, rs) {
				return fs.SkipDir
			}
			return nil
		}
		if matchSegs(pat, rs) && matches(p, d.Type()) {
			*found = append(*found, shown)
		}
		return nil
	})
	return missing, err
}

// listDir is expandOne for a pattern whose wildcards are all in its last
// segment ("logs/*.log"), the common case: it matches nothing below root,
// so the walk reduces to one directory read, here without the sort of
// os.ReadDir (the names are sorted once, shorter than the paths), the
// splitting of relative paths, or a closure call per entry. On 10,000 files
// that cut the glob, which runs before the first item, from 22 ms to 10 ms.
// Its results and errors are the walk's: a root that is a symbolic link or
// a file matches nothing, as filepath.WalkDir does not follow it.
func listDir(ctx context.Context, pattern, root, walk, seg string, found *[]string) (missing string, err error) {
	fail := func(err error) error {
		return fmt.Errorf("glob %q: cannot read %s: %v", pattern, root, unwrapPath(err))
	}
	fi, err := os.Lstat(walk)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return root, nil // a pattern under a missing directory matches nothing
	case err != nil:
		return "", fail(err)
	case !fi.IsDir():
		return "", nil
	}
	// The names that match, end to end in one arena, and 16 bytes of
	// bookkeeping each; the paths are then cut from one string. In a
	// fresh process every new page of memory costs a fault (dear on the
	// issue-19 VM), and growing per-file entries, names and paths was
	// most of the glob's time over 10,000 files.
	type entry struct {
		key uint64 // the first 8 bytes of the name, big-endian: most comparisons end there
		off uint32
		n   uint16 // a name is at most 255 bytes on Linux, 1024 elsewhere
		typ uint8  // 0 regular, 1 symbolic link, 2 anything else
	}
	// Sized from the directory's own size where it tells (ext4, xfs and
	// tmpfs give about 20-32 bytes an entry), so that they do not grow
	// by copying; bounded, since a large directory may match little.
	hint := int(min(max(fi.Size(), 16<<10), 4<<20))
	arena := make([]byte, 0, hint/2)
	picked := make([]entry, 0, hint/16)
	// "*.log", the usual last segment, is a suffix test: path.Match per
	// name was a seventh of the read.
	match := func(name string) bool { ok, _ := path.Match(seg, name); return ok }
	if suffix, ok := strings.CutPrefix(seg, "*"); ok && !hasMeta(suffix) {
		match = func(name string) bool { return strings.HasSuffix(name, suffix) }
	}
	tooLong := false
	err = eachEntry(walk, func(name string, typ fs.FileMode) {
		if typ.IsDir() || !match(name) {
			return
		}
		if len(name) > math.MaxUint16 || len(arena)+len(name) > math.MaxUint32 {
			tooLong = true
			return
		}
		var k [8]byte
		copy(k[:], name)
		e := entry{key: binary.BigEndian.Uint64(k[:]), off: uint32(len(arena)), n: uint16(len(name)), typ: 2}
		switch {
		case typ.IsRegular():
			e.typ = 0
		case typ&fs.ModeSymlink != 0:
			e.typ = 1
		}
		picked = append(picked, e)
		arena = append(arena, name...)
	})
	if err == nil && tooLong {
		err = errors.New("a directory too large to list")
	}
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return root, nil
		}
		return "", fail(err)
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	name := func(e entry) []byte { return arena[e.off : e.off+uint32(e.n)] }
	slices.SortFunc(picked, func(a, b entry) int {
		if c := cmp.Compare(a.key, b.key); c != 0 {
			return c
		}
		return bytes.Compare(name(a), name(b))
	})
	// root and walk are clean and a name holds no separator: joining needs
	// no filepath.Clean.
	sep := string(filepath.Separator)
	if strings.HasSuffix(root, sep) {
		sep = ""
	}
	var all strings.Builder
	all.Grow(len(picked)*(len(root)+len(sep)) + len(arena))
	for _, e := range picked {
		all.WriteString(root)
		all.WriteString(sep)
		all.Write(name(e))
	}
	paths := all.String()
	*found = slices.Grow(*found, len(picked))
	for _, e := range picked {
		n := len(root) + len(sep) + int(e.n)
		p := paths[:n]
		paths = paths[n:]
		switch {
		case e.typ == 0:
		case e.typ == 2:
			continue
		case walk == root && !matches(p, fs.ModeSymlink),
			walk != root && !matches(filepath.Join(walk, string(name(e))), fs.ModeSymlink):
			continue
		}
		*found = append(*found, p)
	}
	return "", nil
}

// matches reports whether a path of the given type (as lstat or a directory
// entry gives it) is one glob yields: a regular file, or a link to one.
// Directories, FIFOs, sockets and devices never are: a step opening a FIFO
// would block. A link whose target cannot be read (broken, a loop, no
// permission) is yielded, so that the step that opens it fails that item by
// name, as the guide's program reports a file it could not read, instead of
// the file vanishing from the run without a word.
func matches(p string, typ fs.FileMode) bool {
	switch {
	case typ.IsRegular():
		return true
	case typ&fs.ModeSymlink != 0:
		fi, err := os.Stat(p)
		return err != nil || fi.Mode().IsRegular()
	}
	return false
}

// matchSegs matches path segments against pattern segments, where "**"
// stands for any number of segments, none included.
func matchSegs(pat, segs []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			for len(pat) > 0 && pat[0] == "**" {
				pat = pat[1:]
			}
			if len(pat) == 0 {
				return true
			}
			for i := 0; i < len(segs); i++ {
				if matchSegs(pat, segs[i:]) {
					return true
				}
			}
			return false
		}
		if len(segs) == 0 {
			return false
		}
		if ok, _ := path.Match(pat[0], segs[0]); !ok {
			return false
		}
		pat, segs = pat[1:], segs[1:]
	}
	return len(segs) == 0
}

// couldMatchBelow reports whether files inside the directory dirSegs could
// match pat, so that the walk can skip whole subtrees.
func couldMatchBelow(pat, dirSegs []string) bool {
	for len(dirSegs) > 0 {
		if len(pat) == 0 {
			return false
		}
		if pat[0] == "**" {
			return true
		}
		if ok, _ := path.Match(pat[0], dirSegs[0]); !ok {
			return false
		}
		pat, dirSegs = pat[1:], dirSegs[1:]
	}
	return len(pat) > 0
}

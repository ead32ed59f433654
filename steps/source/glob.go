package source

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
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
	seen := map[string]bool{}
	missing := map[string]string{}
	for _, p := range patterns {
		if err := checkPattern(p); err != nil {
			return nil, nil, err
		}
		abs, err := filepath.Abs(resolve(dir, p))
		if err != nil {
			return nil, nil, fmt.Errorf("glob %q: %v", p, err)
		}
		root, err := expandOne(ctx, abs, seen, real)
		if err != nil {
			return nil, nil, err
		}
		if root != "" {
			missing[p] = root
		}
	}
	out := make([]string, 0, len(seen))
	for f := range seen {
		out = append(out, f)
	}
	sort.Strings(out)
	return out, missing, nil
}

// expandOne adds the matches of one absolute pattern to seen. It returns
// the directory the pattern starts from when that does not exist.
func expandOne(ctx context.Context, pattern string, seen map[string]bool, real func(string) (string, error)) (missing string, err error) {
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
				seen[pattern] = true
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
			seen[shown] = true
		}
		return nil
	})
	return missing, err
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

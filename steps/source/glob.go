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
// duplicates. Relative patterns resolve against dir; results are absolute
// paths so that every later step can open them, whatever its working
// directory. Directories never match; symbolic links to directories are not
// followed, which keeps '**' out of link loops.
func expand(ctx context.Context, dir string, patterns []string) ([]string, error) {
	seen := map[string]bool{}
	for _, p := range patterns {
		if err := checkPattern(p); err != nil {
			return nil, err
		}
		abs, err := filepath.Abs(resolve(dir, p))
		if err != nil {
			return nil, fmt.Errorf("glob %q: %v", p, err)
		}
		if err := expandOne(ctx, abs, seen); err != nil {
			return nil, err
		}
	}
	out := make([]string, 0, len(seen))
	for f := range seen {
		out = append(out, f)
	}
	sort.Strings(out)
	return out, nil
}

func expandOne(ctx context.Context, pattern string, seen map[string]bool) error {
	segs := strings.Split(filepath.ToSlash(pattern), "/")
	// The root is the longest leading run of segments without wildcards:
	// the walk starts there instead of at "/".
	i := 0
	for i < len(segs) && !hasMeta(segs[i]) {
		i++
	}
	if i == len(segs) {
		if isFile(pattern) {
			seen[pattern] = true
		}
		return nil
	}
	root := filepath.FromSlash(strings.Join(segs[:i], "/"))
	if root == "" {
		root = "/"
	}
	pat := segs[i:]
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == root && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll // a pattern under a missing directory matches nothing
			}
			return fmt.Errorf("glob %q: cannot read %s: %v", pattern, p, unwrapPath(err))
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if p == root {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		rs := strings.Split(filepath.ToSlash(rel), "/")
		if d.IsDir() {
			if !couldMatchBelow(pat, rs) {
				return fs.SkipDir
			}
			return nil
		}
		if matchSegs(pat, rs) && (d.Type()&fs.ModeSymlink == 0 || isFile(p)) {
			seen[p] = true
		}
		return nil
	})
	return err
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir()
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

// Package conf decodes positioned YAML into Go structs and describes those
// structs as JSON Schema. One set of struct tags drives decoding, validation,
// `flow steps`, docs and schema.json, so they cannot drift apart.
package conf

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Pos is a 1-based line and column in a YAML file.
type Pos struct {
	Line int `json:"line"`
	Col  int `json:"col"`
}

// NodePos returns the position of a YAML node (zero for nil).
func NodePos(n *yaml.Node) Pos {
	if n == nil {
		return Pos{}
	}
	return Pos{Line: n.Line, Col: n.Column}
}

func (p Pos) IsZero() bool { return p.Line == 0 }

// Diag is one problem found in a file.
type Diag struct {
	File string `json:"file"`
	Pos
	Msg string `json:"message"`
}

func (d Diag) String() string {
	switch {
	case d.File != "" && d.Line > 0:
		return fmt.Sprintf("%s:%d:%d: %s", d.File, d.Line, d.Col, d.Msg)
	case d.File != "":
		return fmt.Sprintf("%s: %s", d.File, d.Msg)
	case d.Line > 0:
		return fmt.Sprintf("%d:%d: %s", d.Line, d.Col, d.Msg)
	}
	return d.Msg
}

// Diags is a list of problems; as an error it prints one per line, sorted.
type Diags []Diag

func (ds *Diags) Add(p Pos, format string, args ...any) {
	*ds = append(*ds, Diag{Pos: p, Msg: fmt.Sprintf(format, args...)})
}

// AddErr adds err at p, keeping the positions of errors that carry their own.
func (ds *Diags) AddErr(p Pos, err error) {
	if err == nil {
		return
	}
	var inner Diags
	if errors.As(err, &inner) {
		*ds = append(*ds, inner...)
		return
	}
	var pe *PosError
	if errors.As(err, &pe) {
		*ds = append(*ds, Diag{Pos: pe.Pos, Msg: pe.Msg})
		return
	}
	ds.Add(p, "%s", err.Error())
}

// WithFile sets the file of every diagnostic that has none.
func (ds Diags) WithFile(file string) Diags {
	for i := range ds {
		if ds[i].File == "" {
			ds[i].File = file
		}
	}
	return ds
}

// Sort orders by file, line, column, then message, and drops exact duplicates.
func (ds Diags) Sort() Diags {
	sort.SliceStable(ds, func(i, j int) bool {
		a, b := ds[i], ds[j]
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		if a.Col != b.Col {
			return a.Col < b.Col
		}
		return a.Msg < b.Msg
	})
	out := ds[:0]
	for i, d := range ds {
		if i > 0 && d == ds[i-1] {
			continue
		}
		out = append(out, d)
	}
	return out
}

func (ds Diags) Error() string {
	lines := make([]string, len(ds))
	for i, d := range ds {
		lines[i] = d.String()
	}
	return strings.Join(lines, "\n")
}

// Err returns ds as an error, or nil when there are no problems.
func (ds Diags) Err() error {
	if len(ds) == 0 {
		return nil
	}
	return ds
}

// PosError is an error at a known position, returned by UnmarshalNode methods
// that know better than the node where the problem is (e.g. inside a string).
type PosError struct {
	Pos
	Msg string
}

func (e *PosError) Error() string { return fmt.Sprintf("%d:%d: %s", e.Line, e.Col, e.Msg) }

// Errorf returns a *PosError.
func Errorf(p Pos, format string, args ...any) error {
	return &PosError{Pos: p, Msg: fmt.Sprintf(format, args...)}
}

// Suggest returns " (did you mean \"x\"?)" for the closest candidate, or "".
func Suggest(got string, candidates []string) string {
	best, bestD := "", 1<<30
	for _, c := range candidates {
		d := levenshtein(strings.ToLower(got), strings.ToLower(c))
		if d < bestD {
			best, bestD = c, d
		}
	}
	limit := 2
	if len(got) > 6 {
		limit = 3
	}
	if best == "" || bestD > limit {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func levenshtein(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}

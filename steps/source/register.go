// Package source holds the kinds that start a pipeline: items, range, glob,
// lines, jsonl and stdin. Every source is lazy: it produces one item at a
// time through emit, which blocks while downstream is busy, so a source never
// holds more than it must (glob alone collects its matches, to sort them).
// Options are templates evaluated once, with 'vars' and 'env' in scope.
package source

import (
	"context"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/internal/box"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/tmpl"
)

// Register adds this package's kinds to r.
func Register(r *steps.Registry) {
	steps.RegisterSource(r, steps.Kind{
		Name:    "items",
		Summary: "A fixed list of items written in the pipeline.",
		Doc: "Emits each value of a YAML list, in order. Values may be any YAML value (numbers, strings, " +
			"mappings, lists); strings may hold `${ }` expressions over `vars` and `env`, evaluated once. " +
			"A single expression that gives a list, such as `items: \"${ vars.hosts }\"`, emits its elements.",
		Example: "items: [alpha, beta, gamma]",
	}, newItems)
	steps.RegisterSource(r, steps.Kind{
		Name:    "range",
		Summary: "Whole numbers from 'from' to 'to', both included.",
		Doc: "Emits the integers `from`, `from+step`, ... up to and including `to`, generated one at a time: " +
			"a range of ten million numbers costs no memory. A negative `step` counts down. When `from` is " +
			"past `to` in the direction of `step`, the range is empty, like Python's `range`.",
		Example: "range: {from: 1, to: \"${ vars.count }\"}",
	}, newRange)
	steps.RegisterSource(r, steps.Kind{
		Name:    "glob",
		Summary: "Paths of the files matching one or more glob patterns.",
		Doc: "Emits the absolute path of each file matching any of the patterns, sorted and without duplicates. " +
			"Relative patterns resolve against the directory of the pipeline file. `*`, `?` and `[a-z]` match " +
			"within one path segment, `**` matches any number of directories. Only regular files match: never " +
			"directories, FIFOs, sockets or devices (a FIFO is never opened: opening one blocks), and links to " +
			"directories are not followed. A link to a regular file matches; a broken link matches too, so that " +
			"the step that opens it fails that item and reports it by name, as the guide's program reports a " +
			"file it cannot read. A pattern with bad syntax is an error. When no pattern matches anything (a " +
			"directory that does not exist, say), `on_empty` decides: by default the run fails, so that the " +
			"previous output stays. The matches are collected and sorted before the first one is emitted.",
		Example: "glob: {patterns: [\"logs/**/*.log\", \"archive/*.log.gz\"]}",
	}, newGlob)
	steps.RegisterSource(r, steps.Kind{
		Name:    "lines",
		Summary: "Each line of a text file, as a string.",
		Doc: "Emits each line of a file as a string, without its line ending (`\\n` or `\\r\\n`), streaming. A line " +
			"longer than `max_line` (16 MiB by default) stops the source, and so the run, with `FILE:LINE:` " +
			"naming it; the lines before it are processed. A relative path resolves against the directory of " +
			"the pipeline file; a path ending in `.gz` is decompressed on the fly. An empty file is governed " +
			"by `on_empty`.",
		Example: "lines: {path: urls.txt, skip_empty: true}",
	}, newLines)
	steps.RegisterSource(r, steps.Kind{
		Name:    "jsonl",
		Summary: "Each line of a JSON Lines file, as a JSON value.",
		Doc: "Emits the JSON value on each line of a file, streaming. Blank lines are skipped. Integers are " +
			"kept exact whatever their size (beyond 64 bits, as written). A line that is not valid JSON stops the source, and so the run, with " +
			"`FILE:LINE:COL: invalid JSON`: the items read before it are processed and reported, and no line " +
			"is ever dropped silently; so does a line longer than `max_line` (16 MiB by default). A relative " +
			"path resolves against the directory of the pipeline file; a path ending in `.gz` is decompressed " +
			"on the fly. A file with no value is governed by `on_empty`.",
		Example: "jsonl: data/orders.jsonl",
	}, newJSONL)
	steps.RegisterSource(r, steps.Kind{
		Name:    "stdin",
		Summary: "Lines or JSON Lines read from standard input.",
		Doc: "Emits what arrives on standard input as it arrives: each line as a string (`format: lines`, the " +
			"default) or each line as a JSON value (`format: jsonl`, with the same rules as the `jsonl` source). " +
			"Lines are bounded by `max_line` and empty input is governed by `on_empty`, as for files.",
		Example: "stdin: {format: jsonl}",
	}, newStdin)
}

func scope() *tmpl.Scope { return &tmpl.Scope{Ctx: context.Background()} }

// ---- items

// ItemsConfig is the list given to 'items:'.
type ItemsConfig struct {
	list *tmpl.T
}

func (c *ItemsConfig) UnmarshalNode(n *yaml.Node, cc *conf.Context) error {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	switch {
	case n.Kind == yaml.SequenceNode:
	case n.Kind == yaml.ScalarNode && n.Tag == "!!str":
		// Only a single expression can give a list; anything else is
		// surely a list written without brackets.
	default:
		return conf.Errorf(conf.NodePos(n), "items takes a list, e.g. items: [a, b, c], or an expression giving one, e.g. items: \"${ vars.hosts }\"; got %s", nodeKind(n))
	}
	var t tmpl.T
	if err := t.UnmarshalNode(n, cc); err != nil {
		return err
	}
	if n.Kind == yaml.ScalarNode {
		if t.IsConst() {
			return conf.Errorf(conf.NodePos(n), "items takes a list, e.g. items: [a, b, c]; got the string %q", n.Value)
		}
	}
	c.list = &t
	return nil
}

func (c *ItemsConfig) JSONSchema() map[string]any {
	return map[string]any{"oneOf": []any{
		map[string]any{"type": "array", "description": "The items, in order."},
		map[string]any{"type": "string", "pattern": `^\s*\$\{.*\}\s*$`, "description": "An expression giving a list, e.g. '${ vars.hosts }'."},
	}}
}

func nodeKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "nothing"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

type listSource struct{ items []any }

func newItems(c *ItemsConfig, env *steps.Env) (steps.Source, error) {
	if c.list == nil {
		return nil, fmt.Errorf("items takes a list, e.g. items: [a, b, c]")
	}
	v, err := evalOnce(c.list, env)
	if err != nil {
		return nil, err
	}
	// Builtins such as split give typed lists ([]string); shaping first
	// turns them into []any.
	shaped, err := jsonShaped(v)
	if err != nil {
		return nil, at(c.list, "items: %v", err)
	}
	list, ok := shaped.([]any)
	if !ok {
		return nil, at(c.list, "items: the expression gave %s, not a list", describe(v))
	}
	return &listSource{items: list}, nil
}

func (s *listSource) Count() (int64, bool) { return int64(len(s.items)), true }

func (s *listSource) Items(ctx context.Context, emit func(any) error) error {
	for _, it := range s.items {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := emit(it); err != nil {
			return err
		}
	}
	return nil
}

// ---- range

// RangeConfig holds the options of 'range'.
type RangeConfig struct {
	From *tmpl.T `yaml:"from" required:"true" desc:"First number, included. A whole number, or an expression giving one." example:"1"`
	To   *tmpl.T `yaml:"to" required:"true" desc:"Last number, included when the steps land on it. A whole number, or an expression giving one such as '${ vars.count }'." example:"100"`
	Step *tmpl.T `yaml:"step" default:"1" desc:"Distance between two numbers; negative to count down. Must not be 0." example:"1"`
}

// Validate checks the values known before the run; expressions are checked
// when the source is built.
func (c *RangeConfig) Validate() error {
	var ds conf.Diags
	for _, f := range []struct {
		name string
		t    *tmpl.T
	}{{"from", c.From}, {"to", c.To}, {"step", c.Step}} {
		if f.t == nil || !f.t.IsConst() {
			continue
		}
		v, _ := f.t.Eval(scope())
		n, ok := rangeInt(v)
		switch {
		case !ok:
			ds.AddErr(conf.Pos{}, at(f.t, "range %s must be a whole number, got %s", f.name, describe(v)))
		case f.name == "step" && n == 0:
			ds.AddErr(conf.Pos{}, at(f.t, "range step must not be 0 (it would never reach 'to'); use 1 to count up or -1 to count down"))
		}
	}
	return ds.Err()
}

type rangeSource struct{ from, to, step int64 }

func newRange(c *RangeConfig, env *steps.Env) (steps.Source, error) {
	get := func(name string, t *tmpl.T, def int64) (int64, error) {
		if t == nil {
			return def, nil
		}
		v, err := evalOnce(t, env)
		if err != nil {
			return 0, err
		}
		n, ok := rangeInt(v)
		if !ok {
			return 0, at(t, "range %s must be a whole number, got %s", name, describe(v))
		}
		return n, nil
	}
	var s rangeSource
	var err error
	if s.from, err = get("from", c.From, 0); err != nil {
		return nil, err
	}
	if s.to, err = get("to", c.To, 0); err != nil {
		return nil, err
	}
	if s.step, err = get("step", c.Step, 1); err != nil {
		return nil, err
	}
	if s.step == 0 {
		return nil, at(c.Step, "range step must not be 0 (it would never reach 'to'); use 1 to count up or -1 to count down")
	}
	return &s, nil
}

// Count is exact; it reports false only for a range too long for an int64.
func (s *rangeSource) Count() (int64, bool) {
	if (s.step > 0 && s.from > s.to) || (s.step < 0 && s.from < s.to) {
		return 0, true
	}
	// Unsigned arithmetic: to-from may not fit an int64, but fits a uint64.
	var span, step uint64
	if s.step > 0 {
		span, step = uint64(s.to)-uint64(s.from), uint64(s.step)
	} else {
		span, step = uint64(s.from)-uint64(s.to), uint64(-(s.step+1))+1
	}
	q := span / step
	if q >= math.MaxInt64 {
		return 0, false
	}
	return int64(q) + 1, true
}

func (s *rangeSource) Items(ctx context.Context, emit func(any) error) error {
	n, ok := s.Count()
	if !ok {
		n = math.MaxInt64 // longer than any run can last
	}
	v := s.from
	for i := int64(0); i < n; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := emit(v); err != nil {
			return err
		}
		v += s.step // after the last item this may wrap; it is never emitted
	}
	return nil
}

// rangeBulk is how many numbers ItemsBulk hands over at once: the size
// of the engine's batches between stages.
const rangeBulk = 128

// rangeSlab is how many numbers share one allocation (ItemsBulk): a number
// an item keeps keeps its slab, 32 KiB.
const rangeSlab = 4096

// ItemsBulk is Items many numbers at a time (the engine's BulkSource):
// handing over a number costs the engine more than making it, one by one.
func (s *rangeSource) ItemsBulk(ctx context.Context, emit func([]any) error) error {
	n, ok := s.Count()
	if !ok {
		n = math.MaxInt64
	}
	buf := make([]any, 0, rangeBulk)
	// The numbers are boxed from slabs: boxed one by one, each beyond 255
	// would be an allocation of its own.
	var slab []int64
	v := s.from
	for n > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		k := min(n, rangeBulk)
		buf = buf[:0]
		for range k {
			if uint64(v) < 256 {
				buf = append(buf, v) // Go boxes these without allocating
			} else {
				if len(slab) == cap(slab) {
					slab = make([]int64, 0, rangeSlab)
				}
				slab = append(slab, v)
				buf = append(buf, box.Int64At(&slab[len(slab)-1]))
			}
			v += s.step // may wrap after the last number, never emitted
		}
		n -= k
		if err := emit(buf); err != nil {
			return err
		}
	}
	return nil
}

// ---- glob

// GlobConfig holds the options of 'glob'.
type GlobConfig struct {
	Patterns []*tmpl.T `yaml:"patterns" required:"true" desc:"Glob patterns; a file matching any of them is emitted once. '*' matches within a path segment, '**' across directories. Relative patterns resolve against the pipeline directory. An expression may give a list of patterns." example:"logs/**/*.log"`
	OnEmpty  string    `yaml:"on_empty" enum:"fail,warn,ok" default:"fail" desc:"When nothing matches (a directory that does not exist, or holds no matching file): 'fail' stops the run with an error, so the previous output stays and the exit code says so; 'warn' says so on standard error and runs with no items; 'ok' runs with no items silently (an inbox that is often empty)."`
}

func (c *GlobConfig) Shorthand() string { return "patterns" }

func (c *GlobConfig) Validate() error {
	var ds conf.Diags
	if len(c.Patterns) == 0 {
		return fmt.Errorf("glob needs at least one pattern, e.g. glob: \"logs/*.log\"")
	}
	for _, t := range c.Patterns {
		if t == nil || !t.IsConst() {
			continue
		}
		v, _ := t.Eval(scope())
		s, ok := v.(string)
		if !ok || s == "" {
			ds.AddErr(conf.Pos{}, at(t, "a glob pattern must be a non-empty string, got %s", describe(v)))
			continue
		}
		if err := checkPattern(s); err != nil {
			ds.AddErr(conf.Pos{}, at(t, "%v", err))
		}
	}
	return ds.Err()
}

type globSource struct {
	dir      string
	patterns []string
	env      *steps.Env
	onEmpty  string

	once    sync.Once
	files   []string
	missing map[string]string // pattern -> the directory it needs, which does not exist
	err     error
}

func newGlob(c *GlobConfig, env *steps.Env) (steps.Source, error) {
	s := &globSource{dir: env.Dir, env: env, onEmpty: c.OnEmpty}
	for _, t := range c.Patterns {
		v, err := evalOnce(t, env)
		if err != nil {
			return nil, err
		}
		vs, isList := v.([]any)
		if !isList {
			vs = []any{v}
		}
		for _, x := range vs {
			p, ok := x.(string)
			if !ok || p == "" {
				return nil, at(t, "a glob pattern must be a non-empty string, got %s", describe(x))
			}
			if err := checkPattern(p); err != nil {
				return nil, at(t, "%v", err)
			}
			s.patterns = append(s.patterns, p)
		}
	}
	return s, nil
}

func (s *globSource) list(ctx context.Context) ([]string, error) {
	s.once.Do(func() {
		var real func(string) (string, error)
		if s.env.Outside != nil {
			real = func(p string) (string, error) { return steps.ReadPath(ctx, s.env, -1, p) }
		}
		s.files, s.missing, s.err = expand(ctx, s.dir, s.patterns, real)
	})
	return s.files, s.err
}

// Count walks the tree: glob must collect and sort every match before its
// first item anyway, so counting first costs nothing more and gives progress
// a total. The list is kept for Items.
func (s *globSource) Count() (int64, bool) {
	files, err := s.list(context.Background())
	if err != nil {
		return 0, false
	}
	return int64(len(files)), true
}

func (s *globSource) Items(ctx context.Context, emit func(any) error) error {
	files, err := s.list(ctx)
	if err != nil {
		return err
	}
	if len(files) == 0 && ctx.Err() == nil {
		return onEmpty(s.onEmpty, s.env, s.nothing())
	}
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := emit(f); err != nil {
			return err
		}
	}
	return nil
}

// nothing says that no pattern matched, and which ones have no directory
// to look in at all.
func (s *globSource) nothing() string {
	if len(s.patterns) == 1 {
		p := s.patterns[0]
		if d, ok := s.missing[p]; ok {
			return fmt.Sprintf("glob %q matched no file: the directory %s does not exist", p, d)
		}
		return fmt.Sprintf("glob %q matched no file", p)
	}
	var parts []string
	for _, p := range s.patterns {
		if d, ok := s.missing[p]; ok {
			parts = append(parts, fmt.Sprintf("%q (the directory %s does not exist)", p, d))
		} else {
			parts = append(parts, fmt.Sprintf("%q", p))
		}
	}
	return "glob matched no file with any of its patterns: " + strings.Join(parts, ", ")
}

// onEmpty applies a source's on_empty policy once it has ended without
// yielding any item; what says what was empty.
func onEmpty(policy string, env *steps.Env, what string) error {
	switch policy {
	case "ok":
		return nil
	case "warn":
		w := env.Stderr
		if w == nil {
			w = os.Stderr
		}
		fmt.Fprintf(w, "flow: warning: source %q: %s; the run goes on with no items (on_empty: warn)\n", env.Stage, what)
		return nil
	}
	return fmt.Errorf("%s; a run with nothing to read fails (on_empty: fail), so that the previous output stays and the exit code says so: check the input, or set on_empty: warn or ok on the source if an empty input is normal here", what)
}

// maxLine is the line bound of a source: its max_line, or the default.
func maxLine(b *spec.ByteSize) int {
	if b == nil {
		return defaultMaxLine
	}
	return int(min(int64(*b), math.MaxInt32))
}

func checkMaxLine(b *spec.ByteSize) error {
	if b != nil && *b <= 0 {
		return fmt.Errorf("max_line must be more than 0, e.g. max_line: 64MiB")
	}
	return nil
}

// ---- lines and jsonl

// LinesConfig holds the options of 'lines'.
type LinesConfig struct {
	Path      *tmpl.T        `yaml:"path" required:"true" desc:"File to read, relative to the pipeline directory unless absolute; '.gz' files are decompressed." example:"urls.txt"`
	SkipEmpty bool           `yaml:"skip_empty" default:"false" desc:"Skip lines that are empty or hold only spaces."`
	MaxLine   *spec.ByteSize `yaml:"max_line" default:"16MiB" desc:"Longest line read; a longer one stops the run with FILE:LINE naming it, instead of exhausting memory (a compressed file can hide a line of gigabytes)." example:"64MiB"`
	OnEmpty   string         `yaml:"on_empty" enum:"fail,warn,ok" default:"fail" desc:"When the file yields no line: 'fail' stops the run with an error, so the previous output stays and the exit code says so; 'warn' says so on standard error and runs with no items; 'ok' runs with no items silently."`
}

func (c *LinesConfig) Shorthand() string { return "path" }

func (c *LinesConfig) Validate() error { return checkMaxLine(c.MaxLine) }

// JSONLConfig holds the options of 'jsonl'.
type JSONLConfig struct {
	Path    *tmpl.T        `yaml:"path" required:"true" desc:"JSON Lines file to read, relative to the pipeline directory unless absolute; '.gz' files are decompressed." example:"data/orders.jsonl"`
	MaxLine *spec.ByteSize `yaml:"max_line" default:"16MiB" desc:"Longest line read; a longer one stops the run with FILE:LINE naming it, instead of exhausting memory (a compressed file can hide a line of gigabytes)." example:"64MiB"`
	OnEmpty string         `yaml:"on_empty" enum:"fail,warn,ok" default:"fail" desc:"When the file yields no value (it is empty, or holds only blank lines): 'fail' stops the run with an error, so the previous output stays and the exit code says so; 'warn' says so on standard error and runs with no items; 'ok' runs with no items silently."`
}

func (c *JSONLConfig) Shorthand() string { return "path" }

func (c *JSONLConfig) Validate() error { return checkMaxLine(c.MaxLine) }

type fileSource struct {
	path      string
	jsonl     bool
	skipEmpty bool
	maxLine   int
	onEmpty   string
	env       *steps.Env
}

func newLines(c *LinesConfig, env *steps.Env) (steps.Source, error) {
	p, err := evalString(c.Path, env, "lines path")
	if err != nil {
		return nil, err
	}
	return &fileSource{path: resolve(env.Dir, p), skipEmpty: c.SkipEmpty, maxLine: maxLine(c.MaxLine), onEmpty: c.OnEmpty, env: env}, nil
}

func newJSONL(c *JSONLConfig, env *steps.Env) (steps.Source, error) {
	p, err := evalString(c.Path, env, "jsonl path")
	if err != nil {
		return nil, err
	}
	return &fileSource{path: resolve(env.Dir, p), jsonl: true, maxLine: maxLine(c.MaxLine), onEmpty: c.OnEmpty, env: env}, nil
}

func (s *fileSource) Items(ctx context.Context, emit func(any) error) error {
	at, err := steps.ReadPath(ctx, s.env, -1, s.path)
	if err != nil {
		return err
	}
	f, err := openFile(at, s.path)
	if err != nil {
		return err
	}
	defer f.Close()
	n, counted := counting(emit)
	if s.jsonl {
		err = emitJSONL(ctx, f, s.path, s.maxLine, counted)
	} else {
		err = emitLines(ctx, f, s.path, s.maxLine, s.skipEmpty, counted)
	}
	if err != nil || *n > 0 || ctx.Err() != nil {
		return err
	}
	what := s.path + " is empty"
	switch {
	case s.jsonl:
		what = s.path + " holds no JSON value (it is empty, or holds only blank lines)"
	case s.skipEmpty:
		what = s.path + " holds no line that is not blank (skip_empty is set)"
	}
	return onEmpty(s.onEmpty, s.env, what)
}

// counting wraps emit to count the items it lets through.
func counting(emit func(any) error) (*int64, func(any) error) {
	n := new(int64)
	return n, func(v any) error {
		err := emit(v)
		if err == nil {
			*n++
		}
		return err
	}
}

// ---- stdin

// StdinConfig holds the options of 'stdin'.
type StdinConfig struct {
	Format    string         `yaml:"format" enum:"lines,jsonl" default:"lines" desc:"'lines' emits each line as a string; 'jsonl' emits the JSON value on each line."`
	SkipEmpty bool           `yaml:"skip_empty" default:"false" desc:"With 'format: lines': skip lines that are empty or hold only spaces."`
	MaxLine   *spec.ByteSize `yaml:"max_line" default:"16MiB" desc:"Longest line read; a longer one stops the run with the line's number, instead of exhausting memory." example:"64MiB"`
	OnEmpty   string         `yaml:"on_empty" enum:"fail,warn,ok" default:"fail" desc:"When standard input yields no item: 'fail' stops the run with an error, so the previous output stays and the exit code says so; 'warn' says so on standard error and runs with no items; 'ok' runs with no items silently (a producer that often has nothing)."`
}

func (c *StdinConfig) Shorthand() string { return "format" }

func (c *StdinConfig) Validate() error { return checkMaxLine(c.MaxLine) }

type stdinSource struct {
	env *steps.Env
	cfg StdinConfig
}

func newStdin(c *StdinConfig, env *steps.Env) (steps.Source, error) {
	return &stdinSource{env: env, cfg: *c}, nil
}

func (s *stdinSource) Items(ctx context.Context, emit func(any) error) error {
	if s.env.Stdin == nil {
		return fmt.Errorf("the stdin source has no standard input to read")
	}
	n, counted := counting(emit)
	var err error
	if s.cfg.Format == "jsonl" {
		err = emitJSONL(ctx, s.env.Stdin, "<stdin>", maxLine(s.cfg.MaxLine), counted)
	} else {
		err = emitLines(ctx, s.env.Stdin, "<stdin>", maxLine(s.cfg.MaxLine), s.cfg.SkipEmpty, counted)
	}
	if err != nil || *n > 0 || ctx.Err() != nil {
		return err
	}
	return onEmpty(s.cfg.OnEmpty, s.env, "standard input was empty")
}

var (
	_ steps.Source  = (*listSource)(nil)
	_ steps.Counter = (*listSource)(nil)
	_ steps.Source  = (*rangeSource)(nil)
	_ steps.Counter = (*rangeSource)(nil)
	_ steps.Source  = (*globSource)(nil)
	_ steps.Counter = (*globSource)(nil)
	_ steps.Source  = (*fileSource)(nil)
	_ steps.Source  = (*stdinSource)(nil)
)

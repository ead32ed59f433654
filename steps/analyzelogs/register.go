// Package analyzelogs implements the analyze-logs step: per file, a line
// count and the number of lines matching each named pattern, the first
// matching pattern winning (the if/elif of the concurrent.futures guide).
package analyzelogs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/flowrun/flow/internal/regular"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/tmpl"
)

// Options are the `with:` keys of analyze-logs.
type Options struct {
	Path     *tmpl.T   `yaml:"path" desc:"The log file to read. Relative paths resolve against the directory of the pipeline file. Files starting with the gzip magic bytes (usually '.gz') are decompressed on the fly." default:"${ item }" example:"${ item.path }"`
	Patterns []Pattern `yaml:"patterns" desc:"Named patterns, tried in order on every line: a line counts for the first pattern that matches it only, like an if/elif chain. Each name becomes a count in the result. Without this key the patterns are 'errors' (ERROR) then 'warnings' (WARN)."`
	Regex    bool      `yaml:"regex" desc:"Read every 'match' as a regular expression (Go RE2 syntax, for example '(?i)timeout|refused') instead of a plain substring; a pattern may override this with its own 'regex'." default:"false"`
	Samples  int       `yaml:"samples" desc:"Keep up to this many matching lines per pattern, first ones first, in the result under 'samples'. 0 keeps none." default:"0" example:"3"`
	// SampleLength is a pointer so that an explicit value can be told from
	// the default.
	SampleLength *int `yaml:"sample_length" desc:"Longest sample line kept, in bytes; longer lines are cut at a character boundary and end with an ellipsis." default:"200"`
}

// Pattern is one named pattern.
type Pattern struct {
	Name  string `yaml:"name" required:"true" desc:"The key under which the count appears in the result, for example 'errors'. Must not be 'file', 'path', 'lines' or 'samples'." example:"errors"`
	Match string `yaml:"match" required:"true" desc:"The text to look for in each line: a substring, or a regular expression when 'regex' is true. Matching is case sensitive; with 'regex', '(?i)' at the start ignores case." example:"ERROR"`
	Regex *bool  `yaml:"regex" desc:"Read 'match' as a regular expression (true) or a substring (false); defaults to the step-wide 'regex'."`
}

var reserved = map[string]bool{"file": true, "path": true, "lines": true, "samples": true}

const defaultSampleLength = 200

// Validate checks what a field alone cannot: unique names and patterns that
// compile, so that a typo is reported by `flow validate`, not mid-run.
func (o *Options) Validate() error {
	if o.Samples < 0 {
		return errors.New("'samples' must be 0 or more")
	}
	if o.SampleLength != nil && *o.SampleLength < 8 {
		return fmt.Errorf("'sample_length' must be at least 8, got %d", *o.SampleLength)
	}
	seen := map[string]bool{}
	for _, p := range o.Patterns {
		switch {
		case p.Name == "":
			return errors.New("every pattern needs a non-empty 'name'")
		case reserved[p.Name]:
			return fmt.Errorf("pattern name %q is taken by the result; choose another name", p.Name)
		case seen[p.Name]:
			return fmt.Errorf("pattern name %q appears twice; names must be unique", p.Name)
		}
		seen[p.Name] = true
	}
	_, err := o.scanner()
	return err
}

func (o *Options) rules() []Rule {
	if len(o.Patterns) == 0 {
		return []Rule{{Name: "errors", Literal: "ERROR"}, {Name: "warnings", Literal: "WARN"}}
	}
	rs := make([]Rule, len(o.Patterns))
	for i, p := range o.Patterns {
		re := o.Regex
		if p.Regex != nil {
			re = *p.Regex
		}
		rs[i] = Rule{Name: p.Name}
		if re {
			rs[i].Regexp = p.Match
		} else {
			rs[i].Literal = p.Match
		}
	}
	return rs
}

func (o *Options) scanner() (*Scanner, error) {
	n := defaultSampleLength
	if o.SampleLength != nil {
		n = *o.SampleLength
	}
	return NewScanner(o.rules(), o.Samples, n)
}

// Register adds this package's kinds to r.
func Register(r *steps.Registry) {
	steps.RegisterStep(r, steps.Kind{
		Name:    "analyze-logs",
		Summary: "Count the lines of a log file and the lines matching named patterns",
		Doc: "Reads one file per item and counts its lines, and for each line the first of the named " +
			"patterns that matches it (like `if \"ERROR\" in line: ... elif \"WARN\" in line: ...`). " +
			"Lines end as in Python's text mode (universal newlines): at a line feed, a carriage return " +
			"followed by a line feed, or a lone carriage return; a last line without a line break counts, " +
			"as in Python's `for line in f`. Bytes that are not valid UTF-8 are counted and matched as " +
			"they are (samples show them as U+FFFD) instead of failing the file as Python would. Files " +
			"compressed with gzip are read transparently, several members one after the other, and zero " +
			"padding after the data is ignored, as `gzip -t` does. The file is read into reused 256 KiB " +
			"blocks (or mapped into memory, where a one-off measurement in the process finds that cheaper " +
			"on this machine) and scanned without per-line work for lines that match nothing, CRLF line " +
			"breaks included, so the step runs at about the speed of ripgrep's `rg -c`. Scanning is CPU work: at most one file of " +
			"1 MiB or more per CPU is scanned at a time in a process, and further workers of the stage wait for their turn. " +
			"Files are opened relative to their directory, which the step opens once: a directory renamed " +
			"or replaced during the run is still read where it was. Lines may be very long (up to 256 MiB each). A missing or unreadable file fails " +
			"that item, and so does anything but a regular file (a FIFO, a device, a directory), at once.",
		Result: "`{file: app.log, path: /abs/logs/app.log, lines: 1200, errors: 3, warnings: 17}`: the base " +
			"name, the resolved path, the line count and one count per pattern name; with `samples`, " +
			"also `samples: {errors: [first matching lines...], warnings: [...]}`.",
		Example: "path: \"${ item }\"\npatterns:\n  - {name: errors, match: ERROR}\n  - {name: warnings, match: WARN}\n  - {name: timeouts, match: \"(?i)timed? ?out\", regex: true}\nsamples: 3\n",
	}, build)
}

type step struct {
	opts *Options
	env  *steps.Env
	scan *Scanner
	// itemPath says path is the default, the item itself: no evaluation
	// (a scope and a run of the expression machine per file) is needed.
	itemPath bool
	// dirs holds the directories of the files read (see dirCache).
	dirs dirCache
}

// Close closes the directories the step kept open.
func (s *step) Close() error { return s.dirs.Close() }

func build(o *Options, env *steps.Env) (steps.Step, error) {
	s, err := o.scanner()
	if err != nil {
		return nil, err
	}
	return &step{opts: o, env: env, scan: s, itemPath: o.Path == nil || o.Path.Source() == "${ item }"}, nil
}

func (s *step) Do(ctx context.Context, in steps.Input) (any, error) {
	v := in.Item
	if !s.itemPath {
		var err error
		if v, err = s.opts.Path.Eval(s.env.Scope(ctx, in)); err != nil {
			return nil, steps.Permanent(err)
		}
	}
	p, ok := v.(string)
	if !ok || p == "" {
		return nil, steps.Permanent(fmt.Errorf("analyze-logs needs a file path, got %s; set 'path' to the field that holds it, for example path: \"${ item.path }\"", describe(v)))
	}
	// boxed is p as an interface value, reused when p is v unchanged: one
	// allocation less per file.
	boxed := v
	if !filepath.IsAbs(p) && s.env.Dir != "" {
		p = filepath.Join(s.env.Dir, p)
		boxed = p
	}
	// Where the file is read: p itself, or where a test's mocks keep it.
	at, err := steps.ReadPath(ctx, s.env, in.Index, p)
	if err != nil {
		return nil, err
	}
	f, err := openLogIn(&s.dirs, at)
	if err != nil {
		return nil, fileError(p, err)
	}
	defer f.Close()
	// scanOSFile refuses what is not a regular file, and takes a scan slot
	// (see acquireSlot) for a large one.
	c, err := s.scan.scanOSFile(ctx, f)
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		return nil, fileError(p, err)
	}
	out := make(map[string]any, 4+len(s.scan.rules))
	out["file"], out["path"], out["lines"] = filepath.Base(p), boxed, c.Lines
	for i, r := range s.scan.rules {
		out[r.name] = c.Counts[i]
	}
	if c.Samples != nil {
		sm := make(map[string]any, len(c.Samples))
		for i, r := range s.scan.rules {
			list := make([]any, len(c.Samples[i]))
			for j, l := range c.Samples[i] {
				list[j] = l
			}
			sm[r.name] = list
		}
		out["samples"] = sm
	}
	return out, nil
}

func fileError(path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err // the path is already in our message
	}
	e := &steps.Error{Err: fmt.Errorf("%s: %v", path, err), Class: "io"}
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, fs.ErrPermission), errors.Is(err, ErrLineTooLong),
		errors.Is(err, regular.ErrNotRegular), errors.Is(err, ErrTrailingGarbage):
		e.Permanent = true
	}
	return e
}

func describe(v any) string {
	switch v.(type) {
	case nil:
		return "nothing"
	case string:
		return "an empty string"
	case map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	}
	return fmt.Sprintf("%v (%T)", tmpl.Stringify(v), v)
}

package flowtest

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
)

// MaxFileSize bounds every file a test reads: the test file, an input
// fixture, a snapshot. Tests are small; a bigger file is a mistake (a
// fixture pointed at a data set), reported rather than read.
const MaxFileSize = 16 << 20

// Suite is the tests of one file, ready to run.
type Suite struct {
	// File is the file the cases were read from (NAME_test.yaml, or the
	// pipeline file itself for a `tests:` section); Dir its folder.
	File, Dir string
	// Pipeline is the pipeline file the cases run.
	Pipeline string
	Cases    []*Case
	// root confines fixtures and snapshots to Dir.
	root *os.Root
}

// Close releases the suite's folder.
func (s *Suite) Close() error {
	if s.root == nil {
		return nil
	}
	return s.root.Close()
}

// IsTestFile tells whether a file name is a test file's: NAME_test.yaml.
func IsTestFile(name string) bool {
	return strings.HasSuffix(name, "_test.yaml") || strings.HasSuffix(name, "_test.yml")
}

// PipelineOf is the pipeline a test file tests by default: NAME.yaml for
// NAME_test.yaml.
func PipelineOf(testFile string) string {
	ext := filepath.Ext(testFile)
	return strings.TrimSuffix(testFile, "_test"+ext) + ext
}

// Load reads a test file, or a pipeline file's `tests:` section. The error,
// if any, is a conf.Diags with every problem at FILE:LINE:COL.
func Load(file string) (*Suite, error) {
	data, err := readBounded(nil, file)
	if err != nil {
		return nil, conf.Diags{{File: file, Msg: err.Error()}}
	}
	return Parse(file, data)
}

// Parse is Load on the text of file.
func Parse(file string, data []byte) (*Suite, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, conf.Diags{{File: file, Pos: yamlPos(err), Msg: yamlMsg(err)}}
	}
	if len(doc.Content) == 0 {
		return nil, conf.Diags{{File: file, Pos: conf.Pos{Line: 1, Col: 1}, Msg: "the file is empty: a test file needs 'tests:', a list of cases"}}
	}
	root := doc.Content[0]
	if err := conf.CheckAliases(root); err != nil {
		var ds conf.Diags
		ds.AddErr(conf.NodePos(root), err)
		return nil, ds.WithFile(file)
	}
	dir := filepath.Dir(file)
	s := &Suite{File: file, Dir: dir}
	var ds conf.Diags
	if IsTestFile(filepath.Base(file)) {
		var f File
		ds = conf.Decode(root, &f, nil)
		s.Cases = f.Tests
		s.Pipeline = PipelineOf(file)
		if st, err := os.Stat(s.Pipeline); err != nil || !st.Mode().IsRegular() {
			ds.Add(conf.Pos{Line: 1, Col: 1}, "no pipeline %s beside this test file: a test file NAME_test.yaml tests NAME.yaml in its folder", filepath.Base(s.Pipeline))
		}
	} else {
		// A pipeline file with a `tests:` section: the pipeline's own keys
		// are checked by spec when the cases load it.
		tn := conf.Lookup(root, "tests")
		if tn == nil {
			return nil, conf.Diags{{File: file, Pos: conf.NodePos(root), Msg: "no tests: name test files NAME_test.yaml, or give the pipeline a 'tests:' section"}}
		}
		ds = conf.Decode(tn, &s.Cases, nil)
		if len(s.Cases) == 0 && len(ds) == 0 {
			ds.Add(conf.NodePos(tn), "tests: give at least one case")
		}
		s.Pipeline = file
	}
	ds = append(ds, checkCases(s.Cases)...)
	if len(ds) > 0 {
		return nil, ds.WithFile(file).Sort()
	}
	root2, err := os.OpenRoot(dir)
	if err != nil {
		return nil, conf.Diags{{File: file, Msg: fmt.Sprintf("cannot open its folder: %v", err)}}
	}
	s.root = root2
	return s, nil
}

// checkCases finds what each case's fields cannot say alone.
func checkCases(cases []*Case) conf.Diags {
	var ds conf.Diags
	seen := map[string]bool{}
	for _, c := range cases {
		if c == nil {
			continue
		}
		if seen[c.Name] {
			ds.Add(conf.ValuePos(c.Node, "name"), "name: another case is named %q; give each case its own name", c.Name)
		}
		seen[c.Name] = true
		if c.Stage != "" && c.Stages != nil {
			ds.Add(conf.KeyPos(c.Node, "stages"), "give 'stage' or 'stages', not both")
		}
		if c.Stages != nil && len(c.Stages) != 2 {
			ds.Add(conf.ValuePos(c.Node, "stages"), "stages: write the first and the last stage to run, as [from, to]")
		}
		if c.Input != nil && c.InputFile != "" {
			ds.Add(conf.KeyPos(c.Node, "input_file"), "give 'input' or 'input_file', not both")
		}
		if c.Input != nil && c.Input.Kind != yaml.SequenceNode {
			ds.Add(conf.NodePos(c.Input), "input must be a list of items")
		}
		if c.InputFile != "" {
			if _, err := confined(c.InputFile); err != nil {
				ds.Add(conf.ValuePos(c.Node, "input_file"), "input_file: %v", err)
			}
		}
		if c.Timeout <= 0 {
			ds.Add(conf.ValuePos(c.Node, "timeout"), "timeout must be more than 0")
		}
		ds = append(ds, checkExpect(c)...)
	}
	return ds
}

func checkExpect(c *Case) conf.Diags {
	var ds conf.Diags
	e := &c.Expect
	if e.Output != nil && e.Output.Kind != yaml.SequenceNode {
		ds.Add(conf.NodePos(e.Output), "output must be a list of items")
	}
	if e.Contains != nil && e.Contains.Kind != yaml.SequenceNode {
		ds.Add(conf.NodePos(e.Contains), "contains must be a list of items")
	}
	if e.Exit != nil && (*e.Exit < 0 || *e.Exit > 2) {
		ds.Add(conf.ValuePos(e.Node, "exit"), "exit must be 0, 1 or 2")
	}
	if e.Snapshot != nil && e.Snapshot.Path != "" {
		if _, err := confined(e.Snapshot.Path); err != nil {
			ds.Add(conf.NodePos(e.Snapshot.Node), "snapshot: %v", err)
		}
	}
	if c.Clock == "real" && e.Duration != nil {
		ds.Add(conf.KeyPos(e.Node, "duration"), "duration needs the virtual clock: on the real clock it is never exact")
	}
	for _, r := range e.Requests {
		if r != nil && c.Clock == "real" && r.At != nil {
			ds.Add(conf.KeyPos(r.Node, "at"), "request times need the virtual clock")
		}
		if r != nil && r.Count != nil && r.At != nil && len(r.At) != *r.Count {
			ds.Add(conf.ValuePos(r.Node, "at"), "at lists %d requests but count says %d", len(r.At), *r.Count)
		}
	}
	for _, a := range e.Attempts {
		if a == nil {
			continue
		}
		if c.Clock == "real" && (a.Start != nil || a.End != nil) {
			ds.Add(conf.NodePos(a.Node), "attempt times need the virtual clock: remove 'clock: real' or check only count and classes")
		}
		for _, l := range []struct {
			key string
			n   int
		}{{"start", len(a.Start)}, {"end", len(a.End)}, {"classes", len(a.Classes)}} {
			if a.Count != nil && conf.Lookup(a.Node, l.key) != nil && l.n != *a.Count {
				ds.Add(conf.ValuePos(a.Node, l.key), "%s lists %d attempts but count says %d", l.key, l.n, *a.Count)
			}
		}
	}
	for _, e := range e.Errors {
		if _, _, _, ok := parseWantError(e); !ok {
			ds.Add(conf.ValuePos(c.Expect.Node, "errors"), "errors: write each as \"LINE:COL: text\", got %q", e)
		}
	}
	return ds
}

// parseWantError reads "LINE:COL: text".
func parseWantError(s string) (line, col int, text string, ok bool) {
	var rest string
	if n, err := fmt.Sscanf(s, "%d:%d:", &line, &col); err != nil || n != 2 {
		return 0, 0, "", false
	}
	_, rest, ok = strings.Cut(s, ":")
	_, rest, ok2 := strings.Cut(rest, ":")
	return line, col, strings.TrimSpace(rest), ok && ok2 && line > 0 && col > 0
}

// confined checks a path written in a test file: relative, and inside the
// test's folder once cleaned. Links are confined when the file is opened
// (os.Root).
func confined(p string) (string, error) {
	if p == "" {
		return "", errors.New("the path is empty")
	}
	if filepath.IsAbs(p) || strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("%q is absolute: write a path relative to the test file, inside its folder", p)
	}
	c := filepath.Clean(p)
	if !filepath.IsLocal(c) {
		return "", fmt.Errorf("%q leaves the test file's folder: fixtures and snapshots live beside the tests", p)
	}
	return c, nil
}

// readBounded reads a file of at most MaxFileSize bytes, through root when
// one is given (the test's folder: links cannot leave it).
func readBounded(root *os.Root, name string) ([]byte, error) {
	var (
		f   *os.File
		err error
	)
	if root != nil {
		f, err = root.Open(name)
	} else {
		f, err = os.Open(name)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", name)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%s is larger than %d MiB, the most a test reads", name, MaxFileSize>>20)
	}
	return data, nil
}

// Find lists the test files a `flow test` argument names: a test file or a
// pipeline file itself, a folder's (not its subfolders'), or with a
// trailing "/..." a folder's and all its subfolders'. Hidden folders,
// testdata and vendor are not entered.
func Find(arg string) ([]string, error) {
	recursive := false
	if arg == "..." || strings.HasSuffix(arg, "/...") {
		recursive = true
		arg = strings.TrimSuffix(strings.TrimSuffix(arg, "..."), "/")
		if arg == "" {
			arg = "."
		}
	}
	st, err := os.Stat(arg)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		if recursive {
			return nil, fmt.Errorf("%s/...: %s is not a folder", arg, arg)
		}
		return []string{arg}, nil
	}
	var out []string
	err = filepath.WalkDir(arg, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path == arg {
				return nil
			}
			name := d.Name()
			if !recursive || strings.HasPrefix(name, ".") || name == "testdata" || name == "vendor" || name == "node_modules" {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		name := d.Name()
		switch {
		case IsTestFile(name):
			out = append(out, path)
		case strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml"):
			if hasTests(path) {
				out = append(out, path)
			}
		}
		return nil
	})
	return out, err
}

// hasTests tells whether a YAML file has a top-level `tests:` key; a file
// that cannot be read or parsed is not a test file here (flow validate is
// where it gets reported).
func hasTests(path string) bool {
	data, err := readBounded(nil, path)
	if err != nil {
		return false
	}
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil || len(doc.Content) == 0 {
		return false
	}
	return conf.Lookup(doc.Content[0], "tests") != nil
}

// yamlPos and yamlMsg read the line out of a YAML syntax error
// ("yaml: line 3: ...").
func yamlPos(err error) conf.Pos {
	var line int
	if _, e := fmt.Sscanf(err.Error(), "yaml: line %d:", &line); e == nil {
		return conf.Pos{Line: line, Col: 1}
	}
	return conf.Pos{Line: 1, Col: 1}
}

func yamlMsg(err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if _, rest, ok := strings.Cut(msg, ": "); ok && strings.HasPrefix(msg, "line ") {
		msg = rest
	}
	return "not valid YAML: " + msg
}

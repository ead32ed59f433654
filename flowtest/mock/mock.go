package mock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/flowrun/flow/clock"
	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/steps"
)

const (
	// maxBodyFile bounds a body_file: it is held in memory for the run.
	maxBodyFile = 64 << 20
	// defaultFixtureBytes is Files.MaxBytes when the Set was built by hand
	// rather than decoded (decoding applies the tag's default).
	defaultFixtureBytes = 256 << 20
	// maxOutputRead bounds what Output returns of one written file.
	maxOutputRead = 256 << 20
)

// maxBodyFiles bounds all the body_files of a test case together (a
// variable for the tests).
var maxBodyFiles int64 = 256 << 20

// ClassUnmocked is the item error class of an outside access no mock covers.
const ClassUnmocked = "unmocked"

// Recorder is the outside world of one run of a test case: it answers from
// the mocks (it is the run's steps.Outside), keeps the sandbox the pipeline's
// files live in, and records every access for assertions. Safe for
// concurrent use.
type Recorder struct {
	pipelineDir string
	sandbox     string // removed by Close
	root        string // the pipeline's "/" inside the sandbox

	fetch []fetchRule
	exec  []execRule

	// mounts are the pipeline paths fixtures were copied to; fixtures maps
	// each copied file's pipeline path to the digest of its bytes, which
	// tells outputs from fixtures; structural holds the folders made only to lay the
	// fixtures out, which a read does not find as mocked.
	mounts     []string
	fixtures   map[string]fixture
	structural map[string]bool

	mu       sync.Mutex
	counts   map[countKey]int
	requests []Request
	calls    []Call
	unmocked []Access
}

var _ steps.Outside = (*Recorder)(nil)

type countKey struct {
	kind string // "fetch" or "exec"
	rule int
	key  string // the URL or argv counted apart, "" per rule
}

type fetchRule struct {
	*FetchRule
	index     int
	responses []response
}

type response struct {
	*Response
	body []byte
}

type execRule struct {
	*ExecRule
	index int
}

// Request is one HTTP request the pipeline made.
type Request struct {
	Stage string
	Index int64 // the item's (-1: none)
	// Method and URL as sent, with passwords and credential-like query
	// values replaced by REDACTED.
	Method, URL string
	// Headers has lower-case names, repeated values joined with ", ", and
	// "[redacted]" for credentials (Authorization, Cookie, token-like).
	Headers   map[string]string
	BodyBytes int64
	// Rule is the index of the fetch mock that answered (-1: none).
	Rule int
	// Status is the status answered (0 when the request failed).
	Status int
	// Time is when the request arrived, on the run's clock.
	Time time.Time
}

// Call is one program run the pipeline asked for.
type Call struct {
	Stage string
	Index int64
	Argv  []string
	Shell bool
	Line  string // the command line, with Shell
	Dir   string
	// StdinBytes is the size of the standard input given.
	StdinBytes int64
	// EnvNames are the names of the variables the stage's env: adds, sorted
	// (their values may be secrets).
	EnvNames []string
	Rule     int // the exec mock that answered (-1: none)
	ExitCode int
	Time     time.Time
}

// Access is an outside access no mock covers.
type Access struct {
	Stage string
	Index int64
	// What is "fetch", "exec" or "file".
	What string
	// Target is the URL (redacted), the argv or the path.
	Target string
	// Hint is the mock that would cover it, in the test file's syntax.
	Hint string
}

func (a Access) where() string {
	if a.Index < 0 {
		return fmt.Sprintf("stage %q", a.Stage)
	}
	return fmt.Sprintf("stage %q, item %d", a.Stage, a.Index)
}

func (a Access) Error() string {
	what := map[string]string{"fetch": "HTTP request", "exec": "program run", "file": "file read"}[a.What]
	return fmt.Sprintf("unmocked %s in a test (%s): %s; add to the test's mocks: %s", what, a.where(), a.Target, a.Hint)
}

// Install prepares one run of the mocks: it loads the response bodies and
// copies the fixtures into a new sandbox. testDir is the folder of the test
// file (body_file and fixtures are confined to it), pipelineDir the absolute
// folder of the pipeline (relative paths in 'files' resolve against it).
// Problems come back as conf.Diags positioned in the test file. The caller
// must Close the Recorder.
func (s *Set) Install(testDir, pipelineDir string) (*Recorder, error) {
	if s == nil {
		s = &Set{}
	}
	pd, err := filepath.Abs(pipelineDir)
	if err != nil {
		return nil, err
	}
	td, err := filepath.Abs(testDir)
	if err != nil {
		return nil, err
	}
	troot, err := os.OpenRoot(td)
	if err != nil {
		return nil, fmt.Errorf("opening the test's folder: %w", err)
	}
	defer troot.Close()
	sandbox, err := os.MkdirTemp("", "flow-test-")
	if err != nil {
		return nil, fmt.Errorf("creating the sandbox of a test: %w", err)
	}
	r := &Recorder{
		pipelineDir: pd,
		sandbox:     sandbox,
		root:        filepath.Join(sandbox, "root"),
		fixtures:    map[string]fixture{},
		structural:  map[string]bool{},
		counts:      map[countKey]int{},
	}
	var ds conf.Diags
	bodies := &bodyFiles{root: troot, read: map[string][]byte{}, left: maxBodyFiles}
	for i := range s.Fetch {
		fr := fetchRule{FetchRule: &s.Fetch[i], index: i}
		if fr.URLRegexp != "" && fr.re == nil {
			// Built by hand rather than decoded: compile now.
			ds.AddErr(conf.NodePos(fr.Node), fr.Validate())
		}
		for _, resp := range fr.FetchRule.responses() {
			if resp.Status == 0 {
				resp.Status = http.StatusOK // a Set built by hand, without the tag's default
			}
			body, err := bodies.of(&resp)
			if err != nil {
				ds.AddErr(conf.ValuePos(resp.Node, "body_file"), err)
			}
			fr.responses = append(fr.responses, response{Response: &resp, body: body})
		}
		r.fetch = append(r.fetch, fr)
	}
	for i := range s.Exec {
		r.exec = append(r.exec, execRule{ExecRule: &s.Exec[i], index: i})
	}
	if err := r.layout(pd); err == nil {
		err = r.copyFixtures(troot, s.Files, conf.ValuePos(s.Node, "files"), &ds)
		if err != nil {
			ds.AddErr(conf.Pos{}, err)
		}
	} else {
		ds.AddErr(conf.Pos{}, err)
	}
	if len(ds) > 0 {
		r.Close()
		return nil, ds
	}
	return r, nil
}

// Close removes the sandbox and everything the pipeline wrote.
func (r *Recorder) Close() error {
	if r == nil || r.sandbox == "" {
		return nil
	}
	err := os.RemoveAll(r.sandbox)
	r.sandbox = ""
	return err
}

// Requests returns every HTTP request, in the order they arrived.
func (r *Recorder) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Request(nil), r.requests...)
}

// Calls returns every program run, in the order they were asked for.
func (r *Recorder) Calls() []Call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Call(nil), r.calls...)
}

// Unmocked returns the accesses no mock covered. Each failed its item (or
// the source or sink), but a stage with on_error: skip or keep goes on: a
// test with any of them must fail.
func (r *Recorder) Unmocked() []Access {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Access(nil), r.unmocked...)
}

// Err is the unmocked accesses as one error, nil when there were none.
func (r *Recorder) Err() error {
	var errs []error
	for _, a := range r.Unmocked() {
		errs = append(errs, a)
	}
	return errors.Join(errs...)
}

func (r *Recorder) refuse(a Access) error {
	r.mu.Lock()
	r.unmocked = append(r.unmocked, a)
	r.mu.Unlock()
	return &steps.Error{Err: a, Class: ClassUnmocked, Permanent: true}
}

// next picks the answer of rule for key: the sequence walked in turn, each
// entry times times, the last repeating.
func (r *Recorder) next(k countKey, times func(i int) int, n int) int {
	r.mu.Lock()
	seen := r.counts[k]
	r.counts[k] = seen + 1
	r.mu.Unlock()
	for i := 0; i < n; i++ {
		t := times(i)
		if seen < t {
			return i
		}
		seen -= t
	}
	return n - 1
}

// ---- exec

// Run answers a program run from the exec mocks.
func (r *Recorder) Run(ctx context.Context, c *steps.Command) (int, error) {
	call := Call{Stage: c.At.Stage, Index: c.At.Index, Argv: append([]string(nil), c.Argv...), Shell: c.Shell, Line: c.Line, Dir: c.Dir, Rule: -1}
	for _, kv := range c.Env {
		name, _, _ := strings.Cut(kv, "=")
		call.EnvNames = append(call.EnvNames, name)
	}
	sort.Strings(call.EnvNames)
	if c.Stdin != nil {
		call.StdinBytes, _ = io.Copy(io.Discard, c.Stdin)
	}
	call.Time = clock.From(ctx).Now()
	var rule *execRule
	for i := range r.exec {
		e := &r.exec[i]
		if e.Stage != "" && e.Stage != c.At.Stage {
			continue
		}
		if e.Command != "" {
			if !c.Shell || !wildcard(e.Command, c.Line) || (e.Argv != nil && !matchArgv(e.Argv, c.Argv)) {
				continue
			}
		} else if c.Shell || !matchArgv(e.Argv, c.Argv) {
			continue
		}
		rule = e
		break
	}
	if rule == nil {
		r.record(func() { r.calls = append(r.calls, call) })
		target, hint := "argv "+quoteArgv(c.Argv), fmt.Sprintf("exec: [{argv: %s, stdout: \"...\"}]", quoteArgv(c.Argv))
		if c.Shell {
			target = fmt.Sprintf("command %q with arguments %s", c.Line, quoteArgv(c.Argv))
			hint = fmt.Sprintf("exec: [{command: %q, stdout: \"...\"}]", c.Line)
		}
		return 0, r.refuse(Access{Stage: c.At.Stage, Index: c.At.Index, What: "exec", Target: target, Hint: hint})
	}
	results := rule.results()
	k := countKey{kind: "exec", rule: rule.index}
	if rule.Per != "rule" {
		k.key = c.Line + "\x00" + strings.Join(c.Argv, "\x00")
	}
	res := results[r.next(k, func(i int) int { return max(results[i].Times, 1) }, len(results))]
	call.Rule, call.ExitCode = rule.index, res.ExitCode
	r.record(func() { r.calls = append(r.calls, call) })
	if res.Latency > 0 {
		if err := clock.Sleep(ctx, res.Latency); err != nil {
			return -1, err
		}
	}
	// A refused write (past max_output) ends the output as it would end
	// the program: the kind reports it.
	if res.Stdout != "" && c.Stdout != nil {
		_, _ = io.WriteString(c.Stdout, res.Stdout)
	}
	if res.Stderr != "" && c.Stderr != nil {
		_, _ = io.WriteString(c.Stderr, res.Stderr)
	}
	return res.ExitCode, nil
}

func (r *Recorder) record(f func()) {
	r.mu.Lock()
	f()
	r.mu.Unlock()
}

// ---- bodies

// of returns the bytes of a response's body: its text, its JSON, or the
// file it names inside the test's folder.
func (b *bodyFiles) of(resp *Response) ([]byte, error) {
	switch {
	case resp.BodyFile != "":
		name := filepath.Clean(resp.BodyFile)
		if !filepath.IsLocal(name) {
			return nil, fmt.Errorf("body_file %q must be inside the test's folder (a relative path without '..')", resp.BodyFile)
		}
		return b.file(name)
	case resp.JSON != nil:
		b, err := json.Marshal(resp.JSON)
		if err != nil {
			return nil, fmt.Errorf("json: %v", err)
		}
		return b, nil
	}
	return []byte(resp.Body), nil
}

// bodyFiles reads the body_files of a test's fetch mocks, which are held
// in memory for the run: each file once however many responses name it,
// all of them together within maxBodyFiles.
type bodyFiles struct {
	root *os.Root
	read map[string][]byte
	left int64
}

func (b *bodyFiles) file(name string) ([]byte, error) {
	if body, ok := b.read[name]; ok {
		return body, nil
	}
	// Refused before it is read; one over maxBodyFile gets readBounded's
	// own message.
	if fi, err := b.root.Stat(name); err == nil && fi.Size() > b.left && fi.Size() <= maxBodyFile {
		return nil, b.overBudget(name)
	}
	body, err := readBounded(b.root, name, maxBodyFile, "body_file")
	if err != nil {
		return nil, err
	}
	if int64(len(body)) > b.left {
		return nil, b.overBudget(name)
	}
	b.left -= int64(len(body))
	b.read[name] = body
	return body, nil
}

func (b *bodyFiles) overBudget(name string) error {
	return fmt.Errorf("body_file %q: the body_files of the fetch mocks hold more than %d MiB in all; use smaller bodies", name, maxBodyFiles>>20)
}

// readBounded reads a regular file inside root, refusing more than limit
// bytes.
func readBounded(root *os.Root, name string, limit int64, what string) ([]byte, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %v", what, name, unwrap(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s %q: %v", what, name, unwrap(err))
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s %q is not a regular file", what, name)
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("%s %q holds %d bytes, more than the %d a mock may", what, name, fi.Size(), limit)
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err == nil && int64(len(b)) > limit {
		err = fmt.Errorf("it grew past %d bytes while being read", limit)
	}
	if err != nil {
		return nil, fmt.Errorf("%s %q: %v", what, name, unwrap(err))
	}
	return b, nil
}

func unwrap(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

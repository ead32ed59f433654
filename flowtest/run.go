package flowtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/flowtest/mock"
	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
)

// Runner runs test cases.
type Runner struct {
	// Registry holds the kinds pipelines use; NewRegistry adds the kind
	// that feeds a case's input to it.
	Registry *steps.Registry
	// Environ is the environment every case starts from ("K=V").
	Environ []string
	// Update writes snapshots instead of comparing with them.
	Update bool
	// Context, if set, stops a case's run when it is done (an interrupt):
	// the run is cancelled and its sandbox removed.
	Context context.Context
}

// Result is what one case gave.
type Result struct {
	Suite    *Suite
	Case     *Case
	Duration time.Duration // real time
	// Failures are the failed assertions (or why the case could not run),
	// each placed in the test file.
	Failures []Failure
	// Updated names the snapshot written under --update.
	Updated string
	// Log is what the run wrote to stderr: shown for failed cases and
	// with -v.
	Log string
}

// Passed tells whether every assertion held.
func (r *Result) Passed() bool { return len(r.Failures) == 0 }

// Failure is one failed assertion.
type Failure struct {
	File string
	Pos  conf.Pos
	Msg  string
	// Want and Got, when set, are shown as a diff under the message.
	Want, Got string
}

func (f Failure) String() string {
	return conf.Diag{File: f.File, Pos: f.Pos, Msg: f.Msg}.String()
}

// outcome is what a run left for the assertions.
type outcome struct {
	exit     int
	invalid  conf.Diags // the pipeline did not validate
	rep      *report.Report
	reason   string // why the run did not succeed
	output   []any  // the items the sink got, in order
	stdout   []byte
	start    time.Time // the run's start on its clock
	attempts map[attemptKey]*attemptLog
	unmocked []mock.Access // outside access no mock answered
	requests []mock.Request
	calls    []mock.Call
	written  []string          // files written, relative to the pipeline's folder
	files    map[string]string // the content of the files expect.files names
	filesErr map[string]string // or why it could not be read
}

type attemptKey struct {
	stage string
	index int64
}

type attemptLog struct {
	outcome  report.Outcome
	attempts []engine.Attempt
}

// envMu serialises cases: a case's env: is set in the process environment,
// which the engine reads when a run starts.
var envMu sync.Mutex

// Run runs one case of s.
func (r *Runner) Run(s *Suite, c *Case) *Result {
	begin := time.Now()
	res := &Result{Suite: s, Case: c}
	o, log, fail := r.execute(s, c)
	res.Log = log
	if fail != nil {
		res.Failures = append(res.Failures, *fail)
	} else {
		a := &asserter{s: s, c: c, o: o, update: r.Update}
		a.check()
		res.Failures, res.Updated = a.failures, a.updated
	}
	res.Duration = time.Since(begin)
	return res
}

// execute loads the pipeline as the case says and runs it. A non-nil
// Failure means the case could not run at all.
func (r *Runner) execute(s *Suite, c *Case) (*outcome, string, *Failure) {
	at := func(format string, args ...any) *Failure {
		return &Failure{File: s.File, Pos: conf.NodePos(c.Node), Msg: fmt.Sprintf(format, args...)}
	}
	envMu.Lock()
	defer envMu.Unlock()
	restore := setEnv(c.Env)
	defer restore()

	environ := append(append([]string(nil), r.Environ...), envList(c.Env)...)
	p, err := spec.Load(s.Pipeline, spec.Options{Set: c.Set, Environ: environ, Resolve: true}, r.Registry)
	if err != nil {
		var ds conf.Diags
		if !errors.As(err, &ds) {
			return nil, "", at("%v", err)
		}
		return &outcome{exit: 2, invalid: ds}, "", nil
	}
	q, fail := r.shape(s, c, p)
	if fail != nil {
		return nil, "", fail
	}

	o := &outcome{attempts: map[attemptKey]*attemptLog{}}
	var stdout, stderr bytes.Buffer
	stages := q.RunStages()
	rec := &recorder{sink: stages[len(stages)-1].Name, o: o, dir: q.Dir}
	opts := engine.Options{
		Registry: r.Registry,
		Stdin:    strings.NewReader(""),
		Stdout:   &stdout,
		Stderr:   &syncWriter{w: &stderr},
		Runners:  inProcess(),
		Events:   rec,
	}
	o.start = useClock(c, &opts)
	world, fail := useMocks(s, c, q, &opts)
	if fail != nil {
		return nil, "", fail
	}
	defer world.Close()
	parent := r.Context
	if parent == nil {
		parent = context.Background()
	}
	ctx, cancel := context.WithTimeoutCause(parent, c.Timeout,
		fmt.Errorf("the case ran longer than its timeout of %s (real time); raise timeout: if it needs more", c.Timeout))
	defer cancel()
	rep, runErr := engine.Run(ctx, q, opts)
	if cause := context.Cause(ctx); cause != nil && ctx.Err() == context.DeadlineExceeded {
		return nil, stderr.String(), at("%v", cause)
	}
	if parent.Err() != nil {
		return nil, stderr.String(), at("interrupted")
	}
	// Paths under the pipeline's folder read relative to it, as in the
	// output items (relative).
	o.rep, o.stdout = rep, bytes.ReplaceAll(stdout.Bytes(), []byte(q.Dir+"/"), []byte("./"))
	o.unmocked, o.requests, o.calls = world.Unmocked(), world.Requests(), world.Calls()
	captureFiles(o, world, q.Dir, c.Expect.Files)
	var ds conf.Diags
	switch {
	case rep == nil && errors.As(runErr, &ds):
		o.exit, o.invalid = 2, ds.WithFile(s.Pipeline)
	case rep == nil:
		o.exit, o.reason = 1, fmt.Sprint(runErr)
	default:
		o.exit, o.reason = rep.ExitCode, rep.Reason
		if o.exit == 0 && runErr != nil {
			o.exit, o.reason = 1, runErr.Error()
		}
	}
	return o, stderr.String(), nil
}

// shape is the pipeline a case runs: the stages it names, its input in
// place of the source, every stage in this process.
func (r *Runner) shape(s *Suite, c *Case, p *spec.Pipeline) (*spec.Pipeline, *Failure) {
	from, to := 0, len(p.Stages)-1
	index := func(name, key string) (int, *Failure) {
		var names []string
		for i, st := range p.Stages {
			if st.Name == name {
				return i, nil
			}
			names = append(names, st.Name)
		}
		return 0, &Failure{File: s.File, Pos: conf.ValuePos(c.Node, key),
			Msg: fmt.Sprintf("%s: the pipeline %s has no stage %q%s; its stages: %s", key, p.File, name, conf.Suggest(name, names), strings.Join(names, ", "))}
	}
	var f *Failure
	switch {
	case c.Stage != "":
		if from, f = index(c.Stage, "stage"); f != nil {
			return nil, f
		}
		to = from
	case len(c.Stages) == 2:
		if from, f = index(c.Stages[0], "stages"); f != nil {
			return nil, f
		}
		if to, f = index(c.Stages[1], "stages"); f != nil {
			return nil, f
		}
		if to < from {
			return nil, &Failure{File: s.File, Pos: conf.ValuePos(c.Node, "stages"),
				Msg: fmt.Sprintf("stages: %q comes after %q in the pipeline; write [from, to] in pipeline order", c.Stages[0], c.Stages[1])}
		}
	}
	input, f := r.input(s, c)
	if f != nil {
		return nil, f
	}
	var stages []*spec.Stage
	if input != nil || p.Stages[from].Role != steps.RoleSource {
		if input == nil {
			return nil, &Failure{File: s.File, Pos: conf.NodePos(c.Node),
				Msg: fmt.Sprintf("stage %q is not the source: give the items it gets in input: or input_file:", p.Stages[from].Name)}
		}
		if p.Stages[from].Role == steps.RoleSource {
			from++ // the input replaces the source
		}
		stages = append(stages, inputStage(input, p.Stages))
	}
	for _, st := range p.Stages[from : to+1] {
		cp := *st
		if cp.Role == steps.RoleStep {
			// Process and cluster transports have tests of their own; a
			// test of the pipeline runs its stages here, so mocks and the
			// virtual clock reach them.
			cp.Mode = spec.ModeThread
		}
		stages = append(stages, &cp)
	}
	for i, st := range stages {
		st.Index = i
	}
	q := *p
	q.Stages = stages
	// The file's lock is for runs from cron, not for tests.
	q.Lock = nil
	return &q, nil
}

// input is the case's input items as a YAML list, or nil when it gives none.
func (r *Runner) input(s *Suite, c *Case) (*yaml.Node, *Failure) {
	if c.Input != nil {
		return c.Input, nil
	}
	if c.InputFile == "" {
		return nil, nil
	}
	fail := func(format string, args ...any) *Failure {
		return &Failure{File: s.File, Pos: conf.ValuePos(c.Node, "input_file"), Msg: "input_file: " + fmt.Sprintf(format, args...)}
	}
	name, err := confined(c.InputFile)
	if err != nil {
		return nil, fail("%v", err)
	}
	data, err := readBounded(s.root, name)
	if err != nil {
		return nil, fail("%v", err)
	}
	items, err := readJSONL(data)
	if err != nil {
		return nil, fail("%s:%v", c.InputFile, err)
	}
	seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
	for _, it := range items {
		var n yaml.Node
		if err := n.Encode(it); err != nil {
			return nil, fail("%v", err)
		}
		seq.Content = append(seq.Content, &n)
	}
	return seq, nil
}

// readJSONL reads one JSON value per line; blank lines are skipped. An
// error starts with the line number.
func readJSONL(data []byte) ([]any, error) {
	var out []any
	for i, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("%d: not a JSON value: %v", i+1, err)
		}
		if dec.More() {
			return nil, fmt.Errorf("%d: more than one JSON value on the line", i+1)
		}
		out = append(out, normalizeJSON(v))
	}
	return out, nil
}

// normalizeJSON turns json.Number into int64 or float64, as items are.
func normalizeJSON(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case []any:
		for i := range x {
			x[i] = normalizeJSON(x[i])
		}
	case map[string]any:
		for k := range x {
			x[k] = normalizeJSON(x[k])
		}
	}
	return v
}

// inProcess runs every mode's steps on goroutines here.
func inProcess() engine.Runners {
	return engine.Runners{spec.ModeThread: engine.ThreadRunner, spec.ModeProcess: engine.ThreadRunner, spec.ModeCluster: engine.ThreadRunner}
}

// recorder keeps what the assertions read of a run's events.
type recorder struct {
	sink string
	dir  string // the pipeline's folder, absolute
	mu   sync.Mutex
	o    *outcome
}

func (r *recorder) StageStarted(string, int, int64) {}
func (r *recorder) StageDone(string)                {}

func (r *recorder) ItemDone(ev *engine.ItemEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ev.Stage == r.sink && ev.Outcome == report.Succeeded {
		r.o.output = append(r.o.output, relative(ev.Item, r.dir))
	}
	if len(r.o.attempts) < maxAttemptLogs {
		r.o.attempts[attemptKey{ev.Stage, ev.Index}] = &attemptLog{outcome: ev.Outcome, attempts: append([]engine.Attempt(nil), ev.Attempts...)}
	}
}

// maxAttemptLogs bounds the attempts kept: a test runs small inputs, and a
// big one must not take the memory of a real run's every attempt.
const maxAttemptLogs = 1 << 20

// syncWriter serialises writes to a buffer.
type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w.Len() > 1<<20 {
		return len(b), nil // a chatty run: keep the first MiB
	}
	return s.w.Write(b)
}

// setEnv sets a case's environment and returns what puts the old back.
func setEnv(env map[string]string) func() {
	type old struct {
		v  string
		ok bool
	}
	saved := map[string]old{}
	for k, v := range env {
		ov, ok := os.LookupEnv(k)
		saved[k] = old{ov, ok}
		os.Setenv(k, v)
	}
	return func() {
		for k, o := range saved {
			if o.ok {
				os.Setenv(k, o.v)
			} else {
				os.Unsetenv(k)
			}
		}
	}
}

func envList(env map[string]string) []string {
	var out []string
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// relative writes the absolute paths under the pipeline's folder that an
// item holds as paths relative to it ("./logs/db.log"), so that a test's
// expected output is the same in every checkout. It copies what it changes.
func relative(v any, dir string) any {
	if dir == "" || dir == "/" {
		return v
	}
	switch x := v.(type) {
	case string:
		if x == dir {
			return "."
		}
		return strings.ReplaceAll(x, dir+"/", "./")
	case []any:
		out := make([]any, len(x))
		for i := range x {
			out[i] = relative(x[i], dir)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = relative(e, dir)
		}
		return out
	}
	return v
}

// captureFiles keeps what the run wrote, before the sandbox goes.
func captureFiles(o *outcome, rec *mock.Recorder, dir string, want map[string]string) {
	outs, _ := rec.Outputs()
	for _, p := range outs {
		if rel, err := filepath.Rel(dir, p); err == nil && filepath.IsLocal(rel) {
			p = filepath.ToSlash(rel)
		}
		o.written = append(o.written, p)
	}
	o.files, o.filesErr = map[string]string{}, map[string]string{}
	for p := range want {
		b, err := rec.Output(p)
		if err != nil {
			o.filesErr[p] = err.Error()
			continue
		}
		o.files[p] = string(b)
	}
}

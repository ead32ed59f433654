// Package exec is the `exec` step: run a program once per item.
//
// Programs run without a shell unless `shell: true`: each argv element is one
// argument, whatever characters the item holds. Each run gets a process group
// of its own so that a timeout or a cancelled run stops the program and
// everything it started.
package exec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/tmpl"
)

const (
	defaultMaxOutput = 64 << 20
	defaultGrace     = 2 * time.Second
	// The stderr tail kept for results and error messages.
	tailBytes = 4 << 10
	tailLines = 20
)

// Config is the `with:` block of an exec stage.
type Config struct {
	Argv      []*tmpl.T          `yaml:"argv" desc:"The program and its arguments, one list element per argument; each may hold '${ }' expressions. No shell is involved, so spaces, quotes and ';' in an item stay literal. An element that is exactly one expression giving a list adds one argument per list element. With 'shell: true', these become the positional parameters '$1', '$2'... of 'command'." example:"[\"wc\", \"-l\", \"${ item }\"]"`
	Shell     bool               `yaml:"shell" default:"false" desc:"Run 'command' with '/bin/sh -c' instead of running 'argv' directly. Values spliced into 'command' are read by the shell: pass items through 'argv' and refer to them as '\"$1\"'."`
	Command   *tmpl.T            `yaml:"command" desc:"The shell command line, only with 'shell: true'." example:"sort \"$1\" | uniq -c | sort -rn | head -5"`
	Stdin     *tmpl.T            `yaml:"stdin" desc:"Text written to the standard input of the program (mappings and lists as JSON). Without it the program reads an empty input." example:"${ item }"`
	Capture   string             `yaml:"capture" enum:"text,lines,json,none" default:"text" desc:"How standard output becomes the 'stdout' field of the result: 'text' (one string, trailing newlines removed), 'lines' (a list of strings, one per line), 'json' (the output parsed as one JSON value) or 'none' (discarded)."`
	Env       map[string]*tmpl.T `yaml:"env" desc:"Environment variables added to those flow runs with; values may hold '${ }' expressions. Programs do not inherit the 'FLOW_VAR_*' variables flow was given (secrets among them): pass what a program needs here, in 'argv' or in 'stdin'." example:"{LC_ALL: C}"`
	Dir       *tmpl.T            `yaml:"dir" desc:"Working directory; a relative path is resolved against the pipeline file directory, which is also the default." example:"work/${ item }"`
	OKCodes   []int              `yaml:"ok_codes" default:"[0]" desc:"Exit codes that count as success; any other exit code is an item error of class 'exit'." example:"[0, 1]"`
	MaxOutput *spec.ByteSize     `yaml:"max_output" default:"64MiB" desc:"Most standard output kept per run; a program that writes more is stopped and the item fails with class 'too_large'." example:"1MiB"`
	KillGrace time.Duration      `yaml:"kill_grace" default:"2s" desc:"On timeout or cancel the process group first gets SIGTERM, then SIGKILL after this long." example:"500ms"`

	Node *yaml.Node `yaml:"-" conf:"node"`
}

// Validate checks the options that depend on each other.
func (c *Config) Validate() error {
	var ds conf.Diags
	if c.Shell {
		if c.Command == nil {
			ds.Add(conf.KeyPos(c.Node, "shell"), "'shell: true' needs 'command', the shell command line to run")
		}
	} else {
		if c.Command != nil {
			ds.Add(conf.KeyPos(c.Node, "command"), "'command' runs through a shell, which needs 'shell: true'; or use 'argv' to run the program directly (safer)")
		}
		if len(c.Argv) == 0 && c.Command == nil {
			ds.Add(conf.NodePos(c.Node), "missing 'argv': the program and its arguments, e.g. argv: [\"wc\", \"-l\", \"${ item }\"]")
		}
	}
	if c.MaxOutput != nil && *c.MaxOutput <= 0 {
		ds.Add(conf.ValuePos(c.Node, "max_output"), "'max_output' must be above zero")
	}
	return ds.Err()
}

// Register adds the exec kind to r.
func Register(r *steps.Registry) {
	steps.RegisterStep(r, steps.Kind{
		Name:    "exec",
		Summary: "Run a program per item (argv, never a shell unless asked), capturing its output",
		Doc: markdown(`Runs 'argv' once per item, directly, without a shell: each element is exactly one
argument, so an item such as "; rm -rf ~" is passed as a harmless literal string. Set
'shell: true' to run 'command' with '/bin/sh -c'; 'argv' then supplies "$1", "$2"...

Standard output is captured according to 'capture'; standard error is kept as a tail
(the last 20 lines, at most 4 KiB). An exit code outside 'ok_codes' fails the item with
class 'exit' and the stderr tail in the message; a program that cannot be started fails
permanently. Each run gets its own process group: on a stage timeout or a cancelled run
the whole group gets SIGTERM, then SIGKILL after 'kill_grace', so programs started by
the program stop too. Processes left behind after the program exits are killed as well.
On Linux this holds whatever the program does: every process a run starts carries
'FLOW_EXEC_ID' in its environment, and those that left the group ('setsid', a double
fork) are killed at the end of the item too; if flow itself is killed, even with
SIGKILL, the programs and what they started end with it. Programs do not inherit the
'FLOW_VAR_*' variables flow was given: pass a variable through 'argv', 'env' or 'stdin'.`),
		Result:  "A mapping: 'stdout' (a string, a list of lines or a JSON value per 'capture'; absent with 'capture: none'), 'exit_code' (an integer) and 'stderr' (the last lines of standard error, \"\" when it wrote nothing).",
		Example: "argv: [\"wc\", \"-l\", \"${ item }\"]\ncapture: text",
	}, New)
}

type step struct {
	cfg       *Config
	env       *steps.Env
	okCodes   map[int]bool
	maxOutput int64
	grace     time.Duration
}

// New builds an exec step.
func New(cfg *Config, env *steps.Env) (steps.Step, error) {
	if env.Outside == nil {
		// Under a test's mocks no program starts: no guard process either.
		prepareTree()
	}
	s := &step{cfg: cfg, env: env, maxOutput: defaultMaxOutput, grace: defaultGrace, okCodes: map[int]bool{}}
	if cfg.MaxOutput != nil {
		s.maxOutput = int64(*cfg.MaxOutput)
	}
	if cfg.KillGrace > 0 {
		s.grace = cfg.KillGrace
	}
	if cfg.Capture == "" {
		cfg.Capture = "text"
	}
	for _, c := range cfg.OKCodes {
		s.okCodes[c] = true
	}
	if len(s.okCodes) == 0 {
		s.okCodes[0] = true
	}
	return s, nil
}

func (s *step) Do(ctx context.Context, in steps.Input) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sc := s.env.Scope(ctx, in)
	args, err := s.args(sc)
	if err != nil {
		return nil, steps.Permanent(err)
	}
	var line string
	if s.cfg.Shell {
		if line, err = s.cfg.Command.EvalString(sc); err != nil {
			return nil, steps.Permanent(err)
		}
	} else if len(args) == 0 || args[0] == "" {
		return nil, steps.Permanent(errors.New("argv gave no program to run"))
	}
	name := "sh -c"
	if !s.cfg.Shell {
		name = args[0]
	}

	dir := s.env.Dir
	if s.cfg.Dir != nil {
		d, err := s.cfg.Dir.EvalString(sc)
		if err != nil {
			return nil, steps.Permanent(err)
		}
		if d != "" && !filepath.IsAbs(d) && s.env.Dir != "" {
			d = filepath.Join(s.env.Dir, d)
		}
		dir = d
	}
	var added []string
	for k, t := range s.cfg.Env {
		v, err := t.EvalString(sc)
		if err != nil {
			return nil, steps.Permanent(fmt.Errorf("env %s: %w", k, err))
		}
		added = append(added, k+"="+v)
	}
	var stdin io.Reader
	if s.cfg.Stdin != nil {
		text, err := s.cfg.Stdin.EvalString(sc)
		if err != nil {
			return nil, steps.Permanent(err)
		}
		stdin = strings.NewReader(text)
	}
	stdout := &capped{max: s.maxOutput}
	var out io.Writer = stdout
	if s.cfg.Capture == "none" {
		out = io.Discard
	}
	stderr := &tail{max: tailBytes}

	var (
		code   int
		killed string // how the program was killed, when code < 0
		werr   error
	)
	if o := s.env.Outside; o != nil {
		// Under `flow test`: the mocks answer and no program starts.
		c := &steps.Command{At: steps.At{Stage: s.env.Stage, Index: in.Index}, Shell: s.cfg.Shell, Line: line,
			Argv: args, Dir: dir, Env: added, Stdin: stdin, Stdout: out, Stderr: stderr}
		code, err = o.Run(ctx, c)
		if err != nil && ctx.Err() == nil && !stdout.exceeded {
			var se *steps.Error
			if errors.As(err, &se) {
				return nil, &steps.Error{Err: fmt.Errorf("%s: %w", name, se.Err), Class: se.Class, Permanent: se.Permanent}
			}
			return nil, steps.Permanent(fmt.Errorf("cannot start %s: %w", name, err))
		}
		if code < 0 {
			killed = "signal"
		}
	} else {
		var ps *os.ProcessState
		ps, werr, err = s.start(ctx, line, args, dir, added, stdin, out, stdout, stderr, name)
		if err != nil {
			return nil, err
		}
		code = ps.ExitCode()
		killed = ps.String()
	}

	if stdout.exceeded {
		return nil, &steps.Error{Err: fmt.Errorf("%s wrote more than %d bytes to standard output (max_output); it was stopped", name, s.maxOutput), Class: "too_large", Permanent: true}
	}
	if ctx.Err() != nil {
		return nil, &steps.Error{Err: fmt.Errorf("%s was stopped: %w", name, context.Cause(ctx)), Class: steps.ClassOf(ctx.Err())}
	}
	errTail := stderr.String()
	if werr != nil && !errors.Is(werr, osexec.ErrWaitDelay) {
		var ee *osexec.ExitError
		if !errors.As(werr, &ee) {
			return nil, &steps.Error{Err: fmt.Errorf("%s: %w", name, werr), Class: "exit"}
		}
	}
	if code < 0 || !s.okCodes[code] {
		what := fmt.Sprintf("exited with status %d", code)
		if code < 0 {
			what = "was killed: " + killed
		}
		msg := fmt.Sprintf("%s %s", name, what)
		if errTail != "" {
			msg += "; stderr:\n" + errTail
		}
		return nil, &steps.Error{Err: errors.New(msg), Class: "exit"}
	}

	res := map[string]any{"exit_code": int64(code), "stderr": errTail}
	switch s.cfg.Capture {
	case "text":
		res["stdout"] = strings.TrimRight(stdout.buf.String(), "\r\n")
	case "lines":
		res["stdout"] = splitLines(stdout.buf.Bytes())
	case "json":
		v, err := decodeJSON(stdout.buf.Bytes())
		if err != nil {
			return nil, &steps.Error{Err: fmt.Errorf("%s: standard output is not JSON (capture: json): %v", name, err), Class: "decode", Permanent: true}
		}
		res["stdout"] = v
	}
	return res, nil
}

// start runs the program for real, in a process group of its own, and
// waits for it and for everything it started. err is set when it could not
// start; werr is what Wait said.
func (s *step) start(ctx context.Context, line string, args []string, dir string, added []string, stdin io.Reader, out io.Writer, stdout *capped, stderr *tail, name string) (ps *os.ProcessState, werr, err error) {
	var cmd *osexec.Cmd
	if s.cfg.Shell {
		// "flow-exec" becomes $0, the name the shell reports errors under.
		cmd = osexec.CommandContext(ctx, "/bin/sh", append([]string{"-c", line, "flow-exec"}, args...)...)
	} else {
		cmd = osexec.CommandContext(ctx, args[0], args[1:]...)
	}
	cmd.Dir = dir

	tag := newTag()
	env, outer := childEnv(os.Environ())
	env = append(env, added...)
	// Last: of two entries with one name, os/exec keeps the last one, so
	// env: cannot drop the tag.
	cmd.Env = append(env, tagEntry(outer, tag))
	if stdin != nil {
		cmd.Stdin = stdin
	}
	cmd.Stdout = out
	cmd.Stderr = stderr

	group := newGroup(cmd)
	dieWithFlow(cmd.SysProcAttr)
	cmd.Cancel = group.terminate
	cmd.WaitDelay = s.grace
	stdout.overflow = group.kill

	unlock := lockThread()
	if err := cmd.Start(); err != nil {
		unlock()
		return nil, nil, steps.Permanent(fmt.Errorf("cannot start %s: %w", name, err))
	}
	untrack := track(cmd.Process.Pid)
	werr = cmd.Wait()
	untrack()
	unlock()
	// Whatever the outcome, nothing started for this item may outlive it:
	// its process group, and what left the group (setsid) but still
	// carries the item's tag.
	group.kill()
	sweep(tag)
	return cmd.ProcessState, werr, nil
}

// args evaluates argv. A single-expression element that gives a list adds
// one argument per element; anything else is one argument.
func (s *step) args(sc *tmpl.Scope) ([]string, error) {
	out := make([]string, 0, len(s.cfg.Argv))
	for i, t := range s.cfg.Argv {
		v, err := t.Eval(sc)
		if err != nil {
			return nil, fmt.Errorf("argv[%d]: %w", i, err)
		}
		if list, ok := v.([]any); ok && !t.IsConst() {
			for _, e := range list {
				out = append(out, tmpl.Stringify(e))
			}
			continue
		}
		out = append(out, tmpl.Stringify(v))
	}
	return out, nil
}

func splitLines(b []byte) []any {
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return []any{}
	}
	parts := strings.Split(s, "\n")
	out := make([]any, len(parts))
	for i, p := range parts {
		out[i] = strings.TrimSuffix(p, "\r")
	}
	return out
}

func decodeJSON(b []byte) (any, error) {
	v, err := steps.DecodeJSON(b)
	switch {
	case err == io.EOF:
		return nil, errors.New("it is empty")
	case err == steps.ErrTrailingJSON:
		return nil, errors.New("it holds more than one JSON value; use 'capture: lines' and parse each line with fromJSON")
	}
	return v, err
}

// capped buffers up to max bytes; past that it calls overflow once (which
// stops the program) and refuses the write.
type capped struct {
	buf      bytes.Buffer
	max      int64
	exceeded bool
	overflow func()
}

func (c *capped) Write(p []byte) (int, error) {
	if c.exceeded {
		return 0, errTooLarge
	}
	if int64(c.buf.Len())+int64(len(p)) > c.max {
		c.exceeded = true
		if c.overflow != nil {
			c.overflow()
		}
		return 0, errTooLarge
	}
	return c.buf.Write(p)
}

var errTooLarge = errors.New("output too large")

// tail keeps the last max bytes written, and renders the last tailLines
// lines of them.
type tail struct {
	buf []byte
	max int
	// cut is set once bytes were dropped from the front: the first line
	// kept may be the end of a longer one.
	cut bool
}

func (t *tail) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= t.max {
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		t.cut = true
		return n, nil
	}
	if over := len(t.buf) + len(p) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.cut = true
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

// String renders the last lines. A first line cut at its start is dropped,
// or marked "…" when it is the only one: an unmarked cut could start in
// the middle of a secret, which the redaction of messages would then not
// recognise (it hides the end of a secret only after a cut mark).
func (t *tail) String() string {
	s := strings.TrimRight(string(t.buf), "\r\n")
	if t.cut {
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		} else {
			s = "…" + s
		}
	}
	lines := strings.Split(s, "\n")
	if len(lines) > tailLines {
		lines = lines[len(lines)-tailLines:]
	}
	return strings.ToValidUTF8(strings.Join(lines, "\n"), "\uFFFD")
}

// markdown turns the 'code' spans of a doc text into Markdown code spans.
func markdown(s string) string { return strings.ReplaceAll(s, "'", "`") }

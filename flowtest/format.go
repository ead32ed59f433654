// Package flowtest runs the tests of pipeline files: NAME_test.yaml beside
// NAME.yaml (or a `tests:` section in the pipeline file itself). A test case
// runs the whole pipeline, one stage or a range of stages in this process,
// with its input replaced, its outside access mocked and, by default, on a
// virtual clock; then it checks the output items, the report's counts, the
// attempts' times, the exit status or the validation errors. Every problem of
// a test file, and every failed assertion, is placed at FILE:LINE:COL.
package flowtest

import (
	"time"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/flowtest/mock"
	"github.com/flowrun/flow/tmpl"
)

// File is a test file, NAME_test.yaml: the tests of NAME.yaml beside it. It
// is a pipeline file's `tests:` section on its own.
type File struct {
	Tests []*Case `yaml:"tests" required:"true" desc:"The test cases, run one after the other in this order. 'flow test --run REGEX' picks cases by name."`

	Node *yaml.Node `yaml:"-" conf:"node"`
}

// Case is one test case.
type Case struct {
	Name   string   `yaml:"name" required:"true" desc:"Name of the case, unique in the file; shown in the output and matched by --run." example:"times out at 1s"`
	Stage  string   `yaml:"stage" desc:"Run only this stage (with the default sink after it, unless it is the sink). Without 'stage' and 'stages', the whole pipeline runs." example:"fetch"`
	Stages []string `yaml:"stages" desc:"Run the stages from the first name to the second, both included, as '[from, to]'. A range that does not start at the source needs 'input' or 'input_file'." example:"[fetch, out]"`

	Input     *yaml.Node `yaml:"input" desc:"The items the first stage run gets, as a YAML list: they replace the pipeline's source (when the range starts at it) or feed the first stage of the range. Strings are taken as written: '${ }' is not evaluated here."`
	InputFile string     `yaml:"input_file" desc:"A JSON Lines file (one JSON value per line) of input items, in place of 'input': relative to the test file and inside its folder, at most 16 MiB." example:"testdata/items.jsonl"`

	Set map[string]string `yaml:"set" desc:"Variables overridden as with '--set NAME=VALUE': each value is read as YAML (a number stays a number)." example:"{count: 3}"`
	Env map[string]string `yaml:"env" desc:"Environment variables of the run (what 'env.NAME' reads, and FLOW_VAR_NAME overrides), added to flow test's own for this case."`

	Clock   string        `yaml:"clock" enum:"virtual,real" default:"virtual" desc:"'virtual' (sleeps, timeouts, deadlines, backoff, Retry-After and rates take no real time, and attempt times are exact and the same on every run) or 'real' (the wall clock, for a step whose timing must be real)."`
	Timeout time.Duration `yaml:"timeout" default:"1m" desc:"Bound on the case in real time: a run still going after it is cancelled and the case fails. It guards against a hang; it is not an assertion." example:"10s"`

	Mocks *mock.Set `yaml:"mocks" desc:"What the pipeline finds outside: HTTP responses for fetch per URL pattern, program outcomes for exec per argv pattern, files from a fixture folder (what it writes is captured). Outside access that no mock answers fails the item and the test: a test never makes a real request."`

	Expect Expect `yaml:"expect" desc:"What the run must give. Without any expectation a case passes when the run exits 0."`

	Node *yaml.Node `yaml:"-" conf:"node"`
}

// Expect is what a case checks; only what is written is checked.
type Expect struct {
	Exit *int `yaml:"exit" desc:"The exit status 'flow run' would give: 0 (succeeded), 1 (items failed or a policy stopped the run) or 2 (invalid pipeline). Default: 2 with 'errors', 0 otherwise." example:"1"`

	Output   *yaml.Node `yaml:"output" desc:"Every item the sink got, as a list: equal values (numbers compare by value, mappings by keys), in this order unless 'order: any'."`
	Order    string     `yaml:"order" enum:"exact,any" default:"exact" desc:"Whether 'output' must come in its order ('exact') or in any order ('any')."`
	Contains *yaml.Node `yaml:"contains" desc:"Items that must each be among the output, in any order and among others."`
	Count    *int       `yaml:"count" desc:"How many items the sink got."`
	Each     *tmpl.T    `yaml:"each" desc:"An expression true for every output item ('item' is the item, 'index' its position in the output)." example:"${ item.status == 200 }"`
	All      *tmpl.T    `yaml:"all" desc:"An expression true over the whole output: 'item' is the list of every output item." example:"${ len(item) == 3 }"`
	Stdout   *string    `yaml:"stdout" desc:"The exact text the sink printed (the print sink, or the default JSON Lines sink)."`
	Snapshot *Snapshot  `yaml:"snapshot" desc:"Compare the output items with a stored file, one JSON value per line: 'true' (testdata/NAME_test/CASE.jsonl beside the test file) or a path relative to the test file. 'flow test --update' writes it."`

	Written []string          `yaml:"written" desc:"Every file the run wrote (into the test's sandbox), as paths relative to the pipeline's folder, in any order." example:"[out/report.jsonl]"`
	Files   map[string]string `yaml:"files" desc:"The exact text of files the run wrote, by path relative to the pipeline's folder." example:"{out.txt: \"3\\n\"}"`

	Requests []*Requests `yaml:"requests" desc:"The HTTP requests the run made to a URL (through the fetch mocks): how many, and when each arrived on the virtual clock."`
	Calls    []*Calls    `yaml:"calls" desc:"The program runs the run asked for with an argv (through the exec mocks): how many."`

	Stages   map[string]*Counts `yaml:"stages" desc:"The report's counts per stage name: only the counts written are checked."`
	Attempts []*Attempts        `yaml:"attempts" desc:"The attempts of one item in one stage: how many, when each started and ended on the virtual clock (from the start of the run), their error classes."`
	Duration *time.Duration     `yaml:"duration" desc:"How long the run took on the virtual clock: the sum of the waits it could not overlap (sleeps, latencies, backoff, rate and concurrency limits), exactly." example:"200ms"`
	Error    string             `yaml:"error" desc:"Text that the reason the run did not succeed must contain." example:"did not finish within its deadline"`
	Errors   []string           `yaml:"errors" desc:"The validation errors of the pipeline, each as 'LINE:COL: text', where text is part of the message: the pipeline must be invalid with exactly these." example:"[\"12:14: unknown key\"]"`

	Node *yaml.Node `yaml:"-" conf:"node"`
}

// Counts are a stage's counts in the run report; nil is not checked.
type Counts struct {
	In        *int64 `yaml:"in" desc:"Items that entered the stage."`
	Succeeded *int64 `yaml:"succeeded" desc:"Items that succeeded (for a sink: written)."`
	Failed    *int64 `yaml:"failed" desc:"Items that failed after their retries."`
	Skipped   *int64 `yaml:"skipped" desc:"Items that failed under 'on_error: skip'."`
	Cancelled *int64 `yaml:"cancelled" desc:"Items cancelled before they were done."`
	Filtered  *int64 `yaml:"filtered" desc:"Items 'when:' or a barrier dropped."`
	TimedOut  *int64 `yaml:"timed_out" desc:"Items whose attempt or stage timed out."`
	Retries   *int64 `yaml:"retries" desc:"Retries (attempts beyond the first) over all items."`
	Out       *int64 `yaml:"out" desc:"Items passed downstream."`

	Node *yaml.Node `yaml:"-" conf:"node"`
}

// Attempts is what one item's attempts in one stage must be.
type Attempts struct {
	Stage   string          `yaml:"stage" required:"true" desc:"The stage's name." example:"fetch"`
	Item    int64           `yaml:"item" required:"true" desc:"The item's index from the source: 0 is the first item."`
	Count   *int            `yaml:"count" desc:"How many attempts the item had in the stage."`
	Start   []time.Duration `yaml:"start" desc:"When each attempt started, from the start of the run, on the virtual clock." example:"[0s, 100ms, 300ms]"`
	End     []time.Duration `yaml:"end" desc:"When each attempt ended, from the start of the run, on the virtual clock." example:"[50ms, 150ms, 350ms]"`
	Classes []string        `yaml:"classes" desc:"The error class of each attempt, '' for one that succeeded." example:"[http_5xx, http_5xx, \"\"]"`
	Outcome string          `yaml:"outcome" enum:"succeeded,failed,skipped,cancelled,filtered" desc:"The item's outcome in the stage."`

	Node *yaml.Node `yaml:"-" conf:"node"`
}

// Requests is what the requests to one URL must be.
type Requests struct {
	URL    string          `yaml:"url" required:"true" desc:"The URL as sent; '*' matches any run of characters." example:"https://api.example.com/posts/*"`
	Method string          `yaml:"method" desc:"Only requests of this method. Default: any." example:"POST"`
	Count  *int            `yaml:"count" desc:"How many requests matched."`
	At     []time.Duration `yaml:"at" desc:"When each matching request arrived, in order, from the start of the run, on the virtual clock." example:"[0s, 1s]"`

	Node *yaml.Node `yaml:"-" conf:"node"`
}

// Calls is what the runs of one program must be.
type Calls struct {
	Argv  []string `yaml:"argv" required:"true" desc:"The program and its arguments, exactly as run; '*' in an element matches any run of characters." example:"[wc, -l, \"*\"]"`
	Count int      `yaml:"count" required:"true" desc:"How many runs matched."`

	Node *yaml.Node `yaml:"-" conf:"node"`
}

// Snapshot is `snapshot: true` or `snapshot: PATH`.
type Snapshot struct {
	On   bool
	Path string
	Node *yaml.Node
}

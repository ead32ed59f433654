// Package spec reads pipeline files: it parses YAML into typed structs that
// keep the position of every value, and validates them, reporting every
// problem at once as FILE:LINE:COL: message. It knows step kinds only through
// the Catalog interface, so it imports neither the engine nor any step.
package spec

import (
	"time"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/tmpl"
)

// Pipeline is one pipeline file.
type Pipeline struct {
	Version     int               `yaml:"version" required:"true" desc:"Format version of this file. Always 1." enum:"1" example:"1"`
	Name        string            `yaml:"name" desc:"Name of the pipeline, shown in progress output and in the run report." example:"parallel-api"`
	Description string            `yaml:"description" desc:"What the pipeline does, for the people who read the file."`
	Vars        Vars              `yaml:"vars" desc:"Variables with their default values, used in expressions as 'vars.NAME'. Override with '--set NAME=VALUE' or the environment variable 'FLOW_VAR_NAME'. A variable written as a mapping with 'default' and 'secret: true' is never printed in logs or reports."`
	Limits      map[string]*Limit `yaml:"limits" desc:"Named limits (rate and concurrency) shared by every stage that names them in 'limit:'."`
	Timeout     time.Duration     `yaml:"timeout" desc:"Bound on the whole run, as a Go duration (\"30s\", \"5m\"). When it passes, running work is cancelled and the run fails." example:"10m"`
	Lock        *Lock             `yaml:"lock" desc:"Hold an exclusive lock on a file for the whole run, so that overlapping runs (from cron, say) never run at once: a path, or a mapping such as '{file: run.lock, mode: skip}'. The flags '--lock', '--lock-mode' and '--lock-timeout' override it." example:"/var/lock/nightly.lock"`
	Stages      []*Stage          `yaml:"stages" required:"true" desc:"The stages, in order: a source first, then steps, then optionally a sink. Each stage streams its results into the next."`
	Tests       []*yaml.Node      `yaml:"tests" desc:"Test cases of this pipeline, run by 'flow test' and ignored by 'flow run' (they may also live in NAME_test.yaml beside the file). See docs/testing.md."`

	// File is the path the pipeline was read from; Dir its directory.
	File string `yaml:"-"`
	Dir  string `yaml:"-"`
	// Source is the text that was parsed and validated. Worker processes
	// and remote workers get these bytes, never the file again: a file
	// edited during a run must not run unvalidated.
	Source []byte     `yaml:"-"`
	Node   *yaml.Node `yaml:"-" conf:"node"`
}

// Lock is the file lock a run holds, so that runs do not overlap.
type Lock struct {
	File         string        `yaml:"file" required:"true" desc:"The lock file, relative to the pipeline file and inside its folder (as write: paths are), unless allow_outside is set; created when missing. It is never followed through a symbolic link and only ever written when it is a lock file of flow's (new, empty, or holding flow's holder line). The lock (flock) goes with the process, so a run killed in any way never leaves a stale lock." example:"run.lock"`
	Mode         string        `yaml:"mode" enum:"fail,skip,wait" default:"fail" desc:"When another run holds the lock: 'fail' (exit 1 without running), 'skip' (exit 75 without running: not an error for cron wrappers) or 'wait' (until it is free, or 'timeout')."`
	Timeout      time.Duration `yaml:"timeout" desc:"With 'mode: wait': give up (exit 1) after this long, as a Go duration. Without it a run waits as long as it takes." example:"10m"`
	AllowOutside bool          `yaml:"allow_outside" default:"false" desc:"Let 'file' be an absolute path or leave the pipeline's folder (/var/lock/nightly.lock): an opt-in for a pipeline you trust, since a pipeline from elsewhere could otherwise lock or create files anywhere."`

	Node *yaml.Node `yaml:"-" conf:"node"`
}

func (*Lock) Shorthand() string { return "file" }

// Limit is a named rate and/or concurrency limit.
type Limit struct {
	Rate        *Rate   `yaml:"rate" desc:"Most starts per unit of time, as \"N/s\", \"N/m\" or \"N/h\" (\"10/s\", \"600/m\")." example:"10/s"`
	Burst       int     `yaml:"burst" desc:"Starts allowed at once above the steady rate. Defaults to 1." example:"10"`
	Concurrency int     `yaml:"concurrency" desc:"Most items in flight at once across every stage that names this limit." example:"10"`
	Key         *tmpl.T `yaml:"key" desc:"Expression giving the bucket of an item (per host, per tenant): each distinct key gets its own rate and concurrency." example:"${ item.host }"`
	MaxKeys     int     `yaml:"max_keys" desc:"Most distinct keys tracked at once; the least recently used bucket is dropped beyond it." default:"10000"`

	Node *yaml.Node `yaml:"-" conf:"node"`
}

// Stage is one stage of a pipeline.
type Stage struct {
	Name   string     `yaml:"name" required:"true" desc:"Unique name of the stage, used in progress output, the report and errors." example:"fetch-posts"`
	Source *KindRef   `yaml:"source" desc:"Makes this stage the source: the kind of source and its options, e.g. '{range: {from: 1, to: 10}}' or '{glob: \"logs/*.log\"}'. Only the first stage may be a source."`
	Step   string     `yaml:"step" desc:"The kind of work this stage does to each item; its options go in 'with:'. See 'flow steps'." example:"fetch"`
	Sink   *KindRef   `yaml:"sink" desc:"Makes this stage the sink: where results go, e.g. '{print: table}' or '{write: {path: out.jsonl}}'. Only the last stage may be a sink. Without one, results are printed as JSON Lines."`
	With   *yaml.Node `yaml:"with" desc:"Options of the step named in 'step:'. Strings may hold '${ expr }' expressions over 'item', 'index', 'vars' and 'env'."`

	Mode    Mode     `yaml:"mode" enum:"thread,process,cluster" default:"thread" desc:"How items run: 'thread', a pool of goroutines in this process; 'process', a pool of worker processes (crash isolation, a hung item is killed); 'cluster', 'flow worker's on any machine through NATS JetStream (flow run --nats URL; without it, an embedded server and local workers)."`
	Workers Workers  `yaml:"workers" desc:"How many items run at once: a number, or 'auto' (thread: min(32, 4 x CPUs); process: number of CPUs; cluster: 64, spread over the workers' slots)." example:"8"`
	Rate    *Rate    `yaml:"rate" desc:"Most item starts per unit of time for this stage, as \"N/s\", \"N/m\" or \"N/h\"." example:"10/s"`
	Burst   int      `yaml:"burst" desc:"Starts allowed at once above the steady 'rate'. Defaults to 1."`
	Limit   []string `yaml:"limit" desc:"Name (or list of names) of shared limits from the top-level 'limits:' that this stage obeys."`

	Timeout  time.Duration `yaml:"timeout" desc:"Bound on each attempt of an item, as a Go duration. An attempt past it is cancelled and counts as timed out." example:"5s"`
	Deadline time.Duration `yaml:"deadline" desc:"Bound on the whole stage from its start (like 'executor.map(timeout=)'): what is not done by then is cancelled and recorded as timed out." example:"1s"`
	Retry    *Retry        `yaml:"retry" desc:"Retry failed attempts with exponential backoff and jitter."`

	Order     Order    `yaml:"order" enum:"input,completion,key" default:"input" desc:"Order in which results leave the stage: 'input' (like 'executor.map'), 'completion' (like 'as_completed'), or 'key' (items with the same 'key' one after another, in input order; different keys in parallel)."`
	Key       *tmpl.T  `yaml:"key" desc:"With 'order: key': expression giving an item's key." example:"${ item.user_id }"`
	Complete  Complete `yaml:"complete" desc:"When the stage is done: 'all' (every item, the default), 'first' (the first success wins and the rest is cancelled), or '{first: N}' (the first N successes)."`
	OnError   OnError  `yaml:"on_error" enum:"fail,skip,keep" default:"fail" desc:"What a failed item (after retries) does: 'fail' stops the run, 'skip' records it and drops it, 'keep' passes it on downstream carrying its error."`
	MaxErrors int      `yaml:"max_errors" desc:"With 'skip' or 'keep': the run fails once more than this many items of the stage have failed. 0 means no threshold."`
	When      *tmpl.T  `yaml:"when" desc:"Expression; items for which it is false skip this stage's work and are counted as filtered." example:"${ item.size > 0 }"`

	Cache *CacheSpec `yaml:"cache" desc:"Reuse stored results of this stage: 'off'; 'on' (results are stored and reused on every run); 'resume' (stored on every run, reused by 'flow run --resume' only); or '{ttl: 24h, salt: x, env: [VAR], reuse: resume}' (on, with a lifetime, a salt and the environment variables results depend on). Without it, the default of the kind: 'resume' for analyze-logs, resize and fetch GET; 'off' for exec and other fetch methods (effects) and compute (cheaper to run again than to store). See docs/state.md."`

	Labels   []string `yaml:"labels" desc:"With 'mode: cluster': the labels a worker must offer ('flow worker --label gpu') to run the items of this stage; a worker needs every one. Letters, digits, '-' and '_', starting with a letter or digit. Without it, any worker runs them." example:"[gpu]"`
	Transfer bool     `yaml:"transfer" default:"false" desc:"With 'mode: cluster': ship the files an item reads (the 'path' of analyze-logs, the 'src' of resize) to the worker through the JetStream Object Store, and bring back what it writes (the output of resize under 'out_dir'), for workers that do not share the file system of this machine. Sizes are bounded ('flow run --transfer-max-file', '--transfer-max-item') and checksums verified. See docs/cluster.md."`

	MaxTasksPerChild int      `yaml:"max_tasks_per_child" desc:"With 'mode: process': replace a worker process after it has handled this many items. 0 means never."`
	Memory           ByteSize `yaml:"memory" desc:"With 'mode: process': memory limit per worker process, e.g. \"512MiB\". An item that exceeds it fails and its worker is replaced." example:"512MiB"`

	// Resolved after validation.
	Role steps.Role `yaml:"-"` // source, step or sink
	Kind string     `yaml:"-"` // the kind's registered name
	// Options is the node holding the kind's options: `with:` for steps, the
	// value under the kind's name for sources and sinks.
	Options *yaml.Node `yaml:"-"`
	Index   int        `yaml:"-"`
	Node    *yaml.Node `yaml:"-" conf:"node"`
}

// Mode is how a stage's items run; each mode has its runner (engine.Runners).
type Mode string

const (
	ModeThread  Mode = "thread"  // goroutines in this process
	ModeProcess Mode = "process" // worker processes (procpool)
	ModeCluster Mode = "cluster" // flow workers on any machine, through NATS JetStream (cluster)
)

// Order is the order in which results leave a stage.
type Order string

const (
	OrderInput      Order = "input"      // executor.map
	OrderCompletion Order = "completion" // as_completed
	OrderKey        Order = "key"        // per key, in input order
)

// OnError is what a failed item does to the run.
type OnError string

const (
	OnErrorFail OnError = "fail" // stop the run
	OnErrorSkip OnError = "skip" // record it, drop it
	OnErrorKeep OnError = "keep" // record it, pass it on with its error
)

// Retry is a stage's retry policy.
type Retry struct {
	Attempts   int           `yaml:"attempts" desc:"Most attempts per item, the first included (3 means up to 2 retries)." default:"3" example:"3"`
	Backoff    time.Duration `yaml:"backoff" desc:"Wait before the first retry; doubles on each further retry." default:"100ms"`
	MaxBackoff time.Duration `yaml:"max_backoff" desc:"Longest wait between attempts." default:"30s"`
	Jitter     *float64      `yaml:"jitter" desc:"Random spread of each wait, as a fraction (0.2 = +/-20%)." default:"0.2"`
	On         []string      `yaml:"on" desc:"Error classes worth a retry (timeout, connection, http_429, http_5xx, exit, error...). Default: every error that is not permanent."`

	Node *yaml.Node `yaml:"-" conf:"node"`
}

// Rate is N events per Per.
type Rate struct {
	N   float64
	Per time.Duration
	Src string
}

// PerSecond is the rate in events per second.
func (r Rate) PerSecond() float64 { return r.N / r.Per.Seconds() }

// Workers is a worker count; Auto means choose by mode.
type Workers struct {
	N    int
	Auto bool
	Set  bool
}

// Complete is a completion policy: First == 0 means all.
type Complete struct {
	First int
}

// KindRef names a source or sink kind with its options: `{range: {...}}`,
// `{print: jsonl}` or just `stdin`.
type KindRef struct {
	Kind    string
	Options *yaml.Node
	Node    *yaml.Node
}

// ByteSize is a size in bytes, written "512MiB", "1GB", "64KiB" or a number.
type ByteSize int64

// Vars are the declared variables, in file order.
type Vars struct {
	List []*Var
}

// Var is one declared variable.
type Var struct {
	Name        string
	Value       any // the default, replaced by overrides
	Secret      bool
	Description string
	Node        *yaml.Node
}

// Map returns the variables as the `vars` map seen by expressions.
func (v Vars) Map() map[string]any {
	m := make(map[string]any, len(v.List))
	for _, x := range v.List {
		m[x.Name] = x.Value
	}
	return m
}

// Secrets returns the string values of variables marked secret, for redaction.
func (v Vars) Secrets() []string {
	var out []string
	for _, x := range v.List {
		if s, ok := x.Value.(string); ok && x.Secret && s != "" {
			out = append(out, s)
		}
	}
	return out
}

package mock

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/spec"
)

// Set is the `mocks:` section of a test case: what the pipeline finds when it
// reaches outside. Whatever it does not mock fails the access.
type Set struct {
	Fetch []FetchRule `yaml:"fetch" desc:"HTTP responses for the requests of 'fetch' stages. The first rule whose 'url' (and 'method', 'stage') matches a request answers it; a request no rule matches fails its item (class 'unmocked') and the test."`
	Exec  []ExecRule  `yaml:"exec" desc:"What the programs of 'exec' stages print and return, per argv pattern. The first rule that matches a run answers it; no program is ever started, and a run no rule matches fails its item (class 'unmocked') and the test."`
	Files *Files      `yaml:"files" desc:"The files the pipeline reads, from a fixture folder beside the test, and where what it writes goes: a sandbox, never the real folder. A file the pipeline reads that no fixture provides fails the access (class 'unmocked') and the test." example:"fixtures"`

	Node *yaml.Node `yaml:"-" conf:"node"`
}

// Response is one HTTP response of a fetch mock.
type Response struct {
	Status   int               `yaml:"status" default:"200" desc:"The HTTP status code." example:"503"`
	Headers  map[string]string `yaml:"headers" desc:"Response headers. 'Retry-After' (seconds or an HTTP date) on a 429 or 503 sets the least wait before the engine's next attempt, as from a real server; 'Content-Type' decides how 'decode: auto' reads the body." example:"{Retry-After: \"2\"}"`
	Body     string            `yaml:"body" desc:"The response body, as text." example:"{\"id\": 1}"`
	JSON     any               `yaml:"json" desc:"The response body as any YAML value, sent as JSON with 'Content-Type: application/json' unless 'headers' says otherwise." example:"{id: 1, title: hello}"`
	BodyFile string            `yaml:"body_file" desc:"A file beside the test (inside the test's folder, 64 MiB at most; each file is read once per case, and all of a case's body files together 256 MiB at most) whose bytes are the body." example:"fixtures/post-1.json"`
	Latency  time.Duration     `yaml:"latency" desc:"How long the server takes to answer, waited on the run's clock: on the virtual clock of 'flow test' it passes instantly and exactly, and counts against the fetch and stage timeouts." example:"250ms"`
	Fail     string            `yaml:"fail" enum:"connection" desc:"Instead of answering, fail the request: 'connection' drops it as a reset connection would (item class 'connection')."`
	Times    int               `yaml:"times" default:"1" desc:"How many requests in a row get this response, in a 'sequence'." example:"2"`

	Node *yaml.Node `yaml:"-" conf:"node"`
}

// Validate checks that a response has one body.
func (r *Response) Validate() error {
	var ds conf.Diags
	n := 0
	for _, k := range []string{"body", "json", "body_file"} {
		if conf.Lookup(r.Node, k) != nil {
			n++
		}
	}
	if n > 1 {
		ds.Add(conf.NodePos(r.Node), "give one of 'body', 'json' and 'body_file', not several")
	}
	if r.Status < 100 || r.Status > 999 {
		ds.Add(conf.ValuePos(r.Node, "status"), "'status' must be an HTTP status code, 100 to 999, got %d", r.Status)
	}
	if r.Times < 1 {
		ds.Add(conf.ValuePos(r.Node, "times"), "'times' must be 1 or more")
	}
	return ds.Err()
}

// FetchRule answers the requests that match it.
type FetchRule struct {
	URL       string     `yaml:"url" desc:"The URL requested, as fetch sends it (query parameters sorted by name, as 'query:' encodes them). A '*' matches any run of characters, '/' and '?' included; every other character is literal. Give 'url' or 'url_regexp'." example:"https://api.example.com/posts/*"`
	URLRegexp string     `yaml:"url_regexp" desc:"A regular expression (RE2) the whole URL must match, instead of 'url'." example:"^https://api\\.example\\.com/posts/[0-9]+$"`
	Method    string     `yaml:"method" enum:"GET,HEAD,POST,PUT,PATCH,DELETE,OPTIONS" desc:"Match only this method. Default: any."`
	Stage     string     `yaml:"stage" desc:"Match only the requests of this stage. Default: any stage."`
	Per       string     `yaml:"per" enum:"url,rule" default:"url" desc:"What a 'sequence' counts: 'url', the requests to each URL (and method) apart, so that every item's URL fails twice then succeeds whatever the order of the workers; or 'rule', every request the rule answers, in the order they arrive."`
	Sequence  []Response `yaml:"sequence" desc:"Responses given in turn, each 'times' times; after the last, the last repeats. Instead of a single response written in the rule itself." example:"[{status: 503, times: 2}, {status: 200, json: {ok: true}}]"`
	Response  `yaml:",inline"`

	Node *yaml.Node `yaml:"-" conf:"node"`
	re   *regexp.Regexp
}

var responseKeys = []string{"status", "headers", "body", "json", "body_file", "latency", "fail", "times"}

// Validate checks the pattern and that the rule gives either one response or
// a sequence.
func (r *FetchRule) Validate() error {
	var ds conf.Diags
	switch {
	case r.URL == "" && r.URLRegexp == "":
		ds.Add(conf.NodePos(r.Node), "a fetch mock needs 'url' (with '*' wildcards) or 'url_regexp'")
	case r.URL != "" && r.URLRegexp != "":
		ds.Add(conf.KeyPos(r.Node, "url_regexp"), "give 'url' or 'url_regexp', not both")
	case r.URLRegexp != "":
		re, err := regexp.Compile(r.URLRegexp)
		if err != nil {
			ds.Add(conf.ValuePos(r.Node, "url_regexp"), "invalid url_regexp: %v", err)
		}
		r.re = re
	}
	if conf.Lookup(r.Node, "sequence") != nil {
		for _, k := range responseKeys {
			if conf.Lookup(r.Node, k) != nil {
				ds.Add(conf.KeyPos(r.Node, k), "'%s' belongs in each response of 'sequence', not beside it", k)
			}
		}
		if len(r.Sequence) == 0 {
			ds.Add(conf.ValuePos(r.Node, "sequence"), "'sequence' needs at least one response")
		}
	} else {
		// The inline response decoded with the rule's node: check it there.
		r.Response.Node = r.Node
		ds.AddErr(conf.NodePos(r.Node), r.Response.Validate())
	}
	return ds.Err()
}

// responses is the rule's sequence, a single response being one of one.
func (r *FetchRule) responses() []Response {
	if len(r.Sequence) > 0 {
		return r.Sequence
	}
	return []Response{r.Response}
}

// ExecResult is one outcome of a mocked program.
type ExecResult struct {
	Stdout   string        `yaml:"stdout" desc:"What the program writes to standard output." example:"42 app.log"`
	Stderr   string        `yaml:"stderr" desc:"What the program writes to standard error; the item's error message shows its last lines when the exit code fails the item." example:"wc: app.log: No such file or directory"`
	ExitCode int           `yaml:"exit_code" default:"0" desc:"The exit code, 0 to 255; one outside the stage's 'ok_codes' fails the item with class 'exit'." example:"1"`
	Latency  time.Duration `yaml:"latency" desc:"How long the program runs, waited on the run's clock (instant and exact on the virtual clock), and bounded by the stage's timeout." example:"2s"`
	Times    int           `yaml:"times" default:"1" desc:"How many runs in a row get this outcome, in a 'sequence'." example:"2"`

	Node *yaml.Node `yaml:"-" conf:"node"`
}

// Validate checks the exit code and the count.
func (r *ExecResult) Validate() error {
	var ds conf.Diags
	if r.ExitCode < 0 || r.ExitCode > 255 {
		ds.Add(conf.ValuePos(r.Node, "exit_code"), "'exit_code' must be 0 to 255, got %d", r.ExitCode)
	}
	if r.Times < 1 {
		ds.Add(conf.ValuePos(r.Node, "times"), "'times' must be 1 or more")
	}
	return ds.Err()
}

// ExecRule answers the program runs that match it.
type ExecRule struct {
	Argv       []string     `yaml:"argv" desc:"The argv pattern, one element per argument: an element matches one argument exactly, a '*' in it matching any run of characters, and an element that is exactly '**' matches any number of arguments, none included. For 'shell: true' stages it matches the arguments \"$1\"... after 'command'." example:"[wc, -l, \"*\"]"`
	Command    string       `yaml:"command" desc:"For 'shell: true' stages: a pattern of the command line ('*' matches any run of characters). A rule with 'command' matches only shell runs, one without it only direct ones." example:"sort \"$1\" | uniq -c*"`
	Stage      string       `yaml:"stage" desc:"Match only the runs of this stage. Default: any stage."`
	Per        string       `yaml:"per" enum:"argv,rule" default:"argv" desc:"What a 'sequence' counts: 'argv', the runs of each distinct argv (and command) apart; or 'rule', every run the rule answers, in the order they arrive."`
	Sequence   []ExecResult `yaml:"sequence" desc:"Outcomes given in turn, each 'times' times; after the last, the last repeats. Instead of a single outcome written in the rule itself." example:"[{exit_code: 1, stderr: busy, times: 2}, {stdout: done}]"`
	ExecResult `yaml:",inline"`

	Node *yaml.Node `yaml:"-" conf:"node"`
}

var execResultKeys = []string{"stdout", "stderr", "exit_code", "latency", "times"}

// Validate checks that the rule matches something and gives one outcome or
// a sequence.
func (r *ExecRule) Validate() error {
	var ds conf.Diags
	if conf.Lookup(r.Node, "argv") == nil && r.Command == "" {
		ds.Add(conf.NodePos(r.Node), "an exec mock needs 'argv' (a pattern of the program and its arguments, e.g. [wc, -l, \"*\"]) or 'command' (for shell: true)")
	}
	if conf.Lookup(r.Node, "sequence") != nil {
		for _, k := range execResultKeys {
			if conf.Lookup(r.Node, k) != nil {
				ds.Add(conf.KeyPos(r.Node, k), "'%s' belongs in each outcome of 'sequence', not beside it", k)
			}
		}
		if len(r.Sequence) == 0 {
			ds.Add(conf.ValuePos(r.Node, "sequence"), "'sequence' needs at least one outcome")
		}
	} else {
		r.ExecResult.Node = r.Node
		ds.AddErr(conf.NodePos(r.Node), r.ExecResult.Validate())
	}
	return ds.Err()
}

func (r *ExecRule) results() []ExecResult {
	if len(r.Sequence) > 0 {
		return r.Sequence
	}
	return []ExecResult{r.ExecResult}
}

// Files maps fixtures to the paths the pipeline reads. The pipeline runs on
// a sandbox: a private copy of the fixtures laid out at the paths the
// pipeline names, where its writes land too.
type Files struct {
	Fixtures string            `yaml:"fixtures" desc:"A folder beside the test (inside the test's folder) whose content the pipeline finds in its own folder: 'fixtures/logs/a.log' is what the pipeline reads as 'logs/a.log'. It is copied, so the pipeline cannot change it." example:"fixtures"`
	Map      map[string]string `yaml:"map" desc:"More fixtures: a path as the pipeline names it (relative to the pipeline's folder, or absolute) mapped to a file or folder beside the test." example:"{/var/log/app: fixtures/varlog, config.yaml: fixtures/config-test.yaml}"`
	MaxBytes *spec.ByteSize    `yaml:"max_bytes" default:"256MiB" desc:"The most the fixtures may hold in all; they are copied for each test case." example:"1GiB"`

	Node *yaml.Node `yaml:"-" conf:"node"`
}

// Shorthand lets `files: fixtures` name the fixture folder.
func (f *Files) Shorthand() string { return "fixtures" }

// Validate checks that something is mapped.
func (f *Files) Validate() error {
	var ds conf.Diags
	for k, v := range f.Map {
		if k == "" || v == "" {
			ds.Add(conf.KeyPos(conf.Lookup(f.Node, "map"), k), "each entry of 'map' maps a path the pipeline reads to a fixture beside the test; both must be non-empty")
		}
	}
	if f.MaxBytes != nil && *f.MaxBytes <= 0 {
		ds.Add(conf.ValuePos(f.Node, "max_bytes"), "'max_bytes' must be above zero")
	}
	return ds.Err()
}

// wildcard reports whether s matches pattern, where '*' matches any run of
// characters and everything else is literal.
func wildcard(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return strings.HasSuffix(s, last)
}

// matchArgv matches argv against a pattern whose '**' elements match any
// number of arguments.
func matchArgv(pat, argv []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			for i := 0; i <= len(argv); i++ {
				if matchArgv(pat[1:], argv[i:]) {
					return true
				}
			}
			return false
		}
		if len(argv) == 0 || !wildcard(pat[0], argv[0]) {
			return false
		}
		pat, argv = pat[1:], argv[1:]
	}
	return len(argv) == 0
}

func quoteArgv(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = fmt.Sprintf("%q", a)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

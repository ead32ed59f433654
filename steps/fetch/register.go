// Package fetch is the `fetch` step: one HTTP request per item.
//
// Requests go through go-retryablehttp with retries turned off: the engine
// owns retries (a stage's `retry:`), so a request is never retried twice
// over. The library's retry policy and Retry-After parsing classify each
// outcome instead, and the step reports them as a *steps.Error with a class,
// Permanent for outcomes a retry cannot fix, and RetryAfter from the server.
package fetch

import (
	"crypto/tls"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/tmpl"
)

const (
	defaultMaxBytes     = 10 << 20
	defaultMaxRedirects = 10
	defaultTimeout      = 30 * time.Second
	userAgent           = "flow (+https://github.com/flowrun/flow)"
)

// Config is the `with:` block of a fetch stage.
type Config struct {
	URL             *tmpl.T            `yaml:"url" required:"true" desc:"The URL to request; may hold '${ }' expressions. 'query' adds to its query string." example:"https://api.example.com/posts/${ item }"`
	Method          string             `yaml:"method" enum:"GET,HEAD,POST,PUT,PATCH,DELETE,OPTIONS" default:"GET" desc:"The HTTP method."`
	Headers         map[string]*tmpl.T `yaml:"headers" desc:"Request headers; values may hold '${ }' expressions. Values of 'Authorization', 'Cookie' and token-like headers never appear in results, errors or reports." example:"{Authorization: \"Bearer ${ env.API_TOKEN }\"}"`
	Query           map[string]*tmpl.T `yaml:"query" desc:"Query parameters added to the URL, encoded for you; a value that is a list repeats the parameter." example:"{page: \"${ item }\", per_page: 100}"`
	Body            *tmpl.T            `yaml:"body" desc:"A text request body (mappings and lists are sent as JSON). 'Content-Type' defaults to 'text/plain; charset=utf-8'." example:"${ item.text }"`
	JSON            *tmpl.T            `yaml:"json" desc:"A request body sent as JSON: any YAML value whose strings may hold '${ }' expressions. 'Content-Type' defaults to 'application/json'." example:"{title: \"${ item }\", draft: true}"`
	Decode          string             `yaml:"decode" enum:"auto,json,text,bytes,none" default:"auto" desc:"How the response body becomes the result 'body': 'json' (parsed), 'text' (a string), 'bytes' (base64 text), 'none' (read and counted, then dropped); 'auto' parses JSON when the 'Content-Type' says JSON and gives text otherwise."`
	RaiseForStatus  *bool              `yaml:"raise_for_status" default:"true" desc:"Fail the item when the status is 400 or above (classes 'http_4xx', 'http_429', 'http_5xx'). With 'false' every status is data: the result records it, as in a link checker."`
	MaxBytes        *spec.ByteSize     `yaml:"max_bytes" default:"10MiB" desc:"Largest response body read; a larger body fails the item with class 'too_large'." example:"1MiB"`
	FollowRedirects *bool              `yaml:"follow_redirects" default:"true" desc:"Follow redirects. With 'false' a 3xx response is the result."`
	MaxRedirects    *int               `yaml:"max_redirects" default:"10" desc:"Most redirects followed for one request; more, or a redirect loop, fail the item with class 'redirects'."`
	KeepCredentials bool               `yaml:"keep_credentials_on_redirect" default:"false" desc:"Send the secret headers ('Authorization', 'Cookie' and every header redacted as token-like) on redirects to another host or port, or from https to http. Off, they go only to the scheme, host and port of the URL requested, as with curl; turn it on only for servers you trust to redirect."`
	Timeout         *time.Duration     `yaml:"timeout" default:"30s" desc:"Bound on one request, from connecting to the last byte of the body, redirects included; past it the item fails with class 'timeout'. Without it, a stage's 'timeout:' is the bound instead of 30s; with both, the shorter ends the attempt." example:"2m"`
	Insecure        bool               `yaml:"insecure" default:"false" desc:"Skip TLS certificate verification. Only for test servers with self-signed certificates."`

	Node *yaml.Node `yaml:"-" conf:"node"`
}

// Validate checks the options that depend on each other.
func (c *Config) Validate() error {
	var ds conf.Diags
	if c.Body != nil && c.JSON != nil {
		ds.Add(conf.KeyPos(c.Node, "json"), "give either 'body' (text) or 'json', not both")
	}
	if c.MaxBytes != nil && *c.MaxBytes <= 0 {
		ds.Add(conf.ValuePos(c.Node, "max_bytes"), "'max_bytes' must be above zero")
	}
	if c.Timeout != nil && *c.Timeout <= 0 {
		ds.Add(conf.ValuePos(c.Node, "timeout"), "'timeout' must be above zero; for a slow server or a long download give a longer one, such as 10m")
	}
	if c.MaxRedirects != nil && *c.MaxRedirects < 0 {
		ds.Add(conf.ValuePos(c.Node, "max_redirects"), "'max_redirects' must not be negative")
	}
	if c.URL != nil && c.URL.IsConst() {
		if u, err := c.URL.EvalString(&tmpl.Scope{}); err == nil {
			if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
				ds.Add(conf.ValuePos(c.Node, "url"), "url %q must start with http:// or https://", redactURL(u))
			}
		}
	}
	for name := range c.Headers {
		if name == "" || strings.ContainsAny(name, " \t\r\n:") {
			ds.Add(conf.KeyPos(conf.Lookup(c.Node, "headers"), name), "invalid header name %q", name)
		}
	}
	return ds.Err()
}

// Register adds the fetch kind to r.
func Register(r *steps.Registry) {
	steps.RegisterStep(r, steps.Kind{
		Name:    "fetch",
		Summary: "Make an HTTP request per item and decode the response",
		Doc: markdown(`Sends one HTTP request per item. Connections are reused across the workers of the stage
(one connection pool per stage), TLS certificates are verified unless 'insecure: true',
redirects are followed up to 'max_redirects' and a redirect loop is an error. Each request
is bounded by 'timeout' (30 s unless set, or the stage's own 'timeout:' when only that is
set), from connecting to the last byte of the body; with both set, the shorter one ends it.

Redirects: the secret headers (below) go only to the scheme, host and port of the URL
requested. A redirect to another host or port, or from https to http, gets none of them,
and neither does any later hop of that chain, as with curl; 'keep_credentials_on_redirect:
true' sends them on for a server you trust. Under 'raise_for_status', a 3xx response that
cannot be followed (no 'Location') fails the item with class 'redirects'; 304 Not
Modified is a result.

Retries belong to the stage: add 'retry:' to it. Each failure has a class for
'retry.on': 'connection' (refused, reset, DNS), 'timeout', 'http_429', 'http_5xx',
'http_4xx', 'decode' (the body is not what 'decode' asks), 'too_large' (over 'max_bytes'),
'redirects'. Outcomes a retry cannot fix (4xx other than 429, 501, an unknown host, a bad
certificate, a decode error, a body too large, a redirect loop) are never retried. On 429
and 503 a 'Retry-After' header (seconds or a date) sets the least wait before the next
attempt.

With 'raise_for_status: false' every status is a result, so a link checker records 404s
instead of failing on them; connection errors still fail the item (use 'on_error: keep' to
keep them as data too).

JSON bodies: an empty 2xx body where JSON is expected fails the item with class 'decode'
(as '.json()' raises in httpx); the empty body of a HEAD request, a 204, or a status kept
as a result (a 304, or any status under 'raise_for_status: false') is null. Integers
keep every digit: one beyond 64 bits stays an exact number, as does a number too large for
a float ('1e400'); both are written out as received and can be spliced into strings, but
arithmetic on them fails the item.

Secrets: the values of 'Authorization', 'Proxy-Authorization', 'Cookie', 'Set-Cookie' and
of any header whose name contains token, secret, key, auth or password are replaced by
"[redacted]" in results and never written in error messages; so are such query
parameters and passwords in URLs.`),
		Result:  "A mapping: 'url' (the URL requested), 'final_url' (the URL answered, after redirects), 'status' (an integer), 'headers' (the response headers, one string per name, secrets redacted), 'body' (per 'decode'), 'bytes' (the body size) and 'elapsed' (seconds, a number).",
		Example: "url: \"${ vars.base_url }/posts/${ item }\"\ndecode: json",
	}, New)
}

// New builds a fetch step with a connection pool sized to the stage.
func New(cfg *Config, env *steps.Env) (steps.Step, error) {
	workers := max(env.Workers, 1)
	s := &step{
		cfg:       cfg,
		env:       env,
		method:    cfg.Method,
		decode:    cfg.Decode,
		raise:     cfg.RaiseForStatus == nil || *cfg.RaiseForStatus,
		maxBytes:  defaultMaxBytes,
		follow:    cfg.FollowRedirects == nil || *cfg.FollowRedirects,
		keepCreds: cfg.KeepCredentials,
		maxRedir:  defaultMaxRedirects,
		timeout:   defaultTimeout,
	}
	if cfg.Timeout != nil {
		s.timeout = *cfg.Timeout
	}
	// The default bounds a request only where nothing else does: a stage
	// with its own per-attempt timeout and no fetch timeout written gets
	// the stage's, longer or shorter.
	if env.Timeout > 0 && conf.Lookup(cfg.Node, "timeout") == nil {
		s.timeout = env.Timeout
	}
	if s.method == "" {
		s.method = http.MethodGet
	}
	if s.decode == "" {
		s.decode = "auto"
	}
	if cfg.MaxBytes != nil {
		s.maxBytes = int64(*cfg.MaxBytes)
	}
	if cfg.MaxRedirects != nil {
		s.maxRedir = *cfg.MaxRedirects
	}
	s.transport = &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   30 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          max(100, 2*workers),
		MaxIdleConnsPerHost:   workers,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		TLSClientConfig:       &tls.Config{InsecureSkipVerify: cfg.Insecure, MinVersion: tls.VersionTLS12}, //nolint:gosec // opt-in, documented
	}
	var rt http.RoundTripper = s.transport
	if env.Outside != nil {
		// Under `flow test`: the mocks answer, redirects included (the
		// client follows them through the same transport).
		rt = env.Outside.Transport(env.Stage)
	}
	s.client = &retryablehttp.Client{
		HTTPClient: &http.Client{Transport: rt, CheckRedirect: s.checkRedirect},
		Logger:     nil,
		RetryMax:   0,
		// Classify only: the verdict travels in the request context, and
		// returning false makes Do hand back the response as it came.
		CheckRetry:   classifyHook,
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
	}
	return s, nil
}

// Close releases the stage's idle connections.
func (s *step) Close() error {
	s.transport.CloseIdleConnections()
	return nil
}

var _ steps.Step = (*step)(nil)

// markdown turns the 'code' spans of a doc text into Markdown code spans.
func markdown(s string) string { return strings.ReplaceAll(s, "'", "`") }

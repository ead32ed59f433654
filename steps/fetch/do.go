package fetch

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/flowrun/flow/clock"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/tmpl"
)

type step struct {
	cfg       *Config
	env       *steps.Env
	method    string
	decode    string
	raise     bool
	maxBytes  int64
	follow    bool
	keepCreds bool
	maxRedir  int
	timeout   time.Duration
	transport *http.Transport
	client    *retryablehttp.Client
}

// verdict is where classifyHook leaves go-retryablehttp's opinion of one
// request: whether a retry could help, and why not.
type verdict struct {
	retry bool
	err   error
}

type verdictKey struct{}

func classifyHook(ctx context.Context, resp *http.Response, err error) (bool, error) {
	retry, perr := retryablehttp.ErrorPropagatedRetryPolicy(ctx, resp, err)
	if v, ok := ctx.Value(verdictKey{}).(*verdict); ok {
		v.retry, v.err = retry, perr
	}
	return false, nil
}

// request is one prepared request with what error messages must not show.
type request struct {
	method  string
	url     *url.URL
	body    []byte
	header  http.Header
	secrets []string
}

func (s *step) Do(ctx context.Context, in steps.Input) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r, err := s.prepare(s.env.Scope(ctx, in))
	if err != nil {
		return nil, err
	}
	where := r.method + " " + redactURL(r.url.String())

	// The request's own bound, so that a server that never answers cannot
	// hold a worker for good when the stage sets no timeout. ctx keeps the
	// engine's: its errors are told apart by which context ended.
	rctx, cancel := clock.WithTimeoutCause(ctx, clock.From(ctx), s.timeout, nil)
	defer cancel()

	v := &verdict{}
	if s.env.Outside != nil {
		rctx = steps.WithAt(rctx, steps.At{Stage: s.env.Stage, Index: in.Index})
	}
	var body any
	if r.body != nil {
		body = r.body
	}
	req, err := retryablehttp.NewRequestWithContext(context.WithValue(rctx, verdictKey{}, v), r.method, r.url.String(), body)
	if err != nil {
		return nil, steps.Permanent(fmt.Errorf("%s: %s", where, r.scrub(err.Error())))
	}
	req.Header = r.header
	if h := r.header.Get("Host"); h != "" {
		req.Host = h
	}

	clk := clock.From(ctx)
	start := clk.Now()
	resp, err := s.client.Do(req)
	if err != nil {
		if ctx.Err() == nil && rctx.Err() != nil {
			return nil, s.timeoutError(where)
		}
		return nil, s.transportError(ctx, where, r, v, err)
	}
	defer resp.Body.Close()

	if s.raise && s.follow && isUnfollowed(resp.StatusCode) {
		what := "with no Location header to follow"
		if loc := resp.Header.Get("Location"); loc != "" {
			what = "to " + redactURL(loc) + ", a redirect that is not followed automatically"
		}
		return nil, &steps.Error{Err: fmt.Errorf("%s: HTTP %s %s; with 'follow_redirects: false' or 'raise_for_status: false' a 3xx response is the result", where, resp.Status, what), Class: "redirects", Permanent: true}
	}
	if s.raise && resp.StatusCode >= 400 {
		// Only a snippet, for the message; a short body is read to its end
		// so that the connection can be reused.
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, s.statusError(where, r, resp, snippet, v)
	}
	data, n, rerr := readBody(resp, s.maxBytes)
	if rerr != nil {
		switch {
		case errors.Is(rerr, errTooLarge):
			size := "has more than " + fmt.Sprint(s.maxBytes)
			if resp.ContentLength > s.maxBytes {
				size = fmt.Sprintf("declares %d", resp.ContentLength)
			}
			return nil, &steps.Error{Err: fmt.Errorf("%s: the response body %s bytes, above max_bytes (%d); raise max_bytes or use a narrower request", where, size, s.maxBytes), Class: "too_large", Permanent: true}
		case ctx.Err() != nil:
			return nil, &steps.Error{Err: fmt.Errorf("%s: stopped while reading the body: %w", where, context.Cause(ctx)), Class: steps.ClassOf(ctx.Err())}
		case rctx.Err() != nil:
			return nil, s.timeoutError(where)
		default:
			return nil, &steps.Error{Err: fmt.Errorf("%s: reading the body: %s", where, r.scrub(rerr.Error())), Class: "connection"}
		}
	}
	decoded, err := s.decodeBody(resp, data)
	if err != nil {
		return nil, &steps.Error{Err: fmt.Errorf("%s: %v", where, err), Class: "decode", Permanent: true}
	}
	return map[string]any{
		"url":       redactURL(r.url.String()),
		"final_url": redactURL(resp.Request.URL.String()),
		"status":    int64(resp.StatusCode),
		"headers":   redactHeaders(resp.Header),
		"body":      decoded,
		"bytes":     n,
		"elapsed":   clk.Now().Sub(start).Seconds(),
	}, nil
}

// prepare evaluates the templates of one request.
func (s *step) prepare(sc *tmpl.Scope) (*request, error) {
	raw, err := s.cfg.URL.EvalString(sc)
	if err != nil {
		return nil, steps.Permanent(err)
	}
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, steps.Permanent(fmt.Errorf("invalid url %q: want an absolute http:// or https:// URL", redactURL(raw)))
	}
	r := &request{method: s.method, url: u, header: http.Header{}}
	if u.User != nil {
		if p, ok := u.User.Password(); ok {
			r.secrets = append(r.secrets, p)
		}
	}
	if len(s.cfg.Query) > 0 {
		q := u.Query()
		for k, t := range s.cfg.Query {
			v, err := t.Eval(sc)
			if err != nil {
				return nil, steps.Permanent(fmt.Errorf("query %s: %w", k, err))
			}
			q.Del(k)
			switch x := v.(type) {
			case nil:
			case []any:
				for _, e := range x {
					q.Add(k, tmpl.Stringify(e))
				}
			default:
				q.Set(k, tmpl.Stringify(x))
			}
			if sensitive(k) {
				r.secrets = append(r.secrets, q[k]...)
			}
		}
		u.RawQuery = q.Encode()
	}
	for k, vs := range u.Query() {
		if sensitive(k) {
			r.secrets = append(r.secrets, vs...)
		}
	}

	r.header.Set("User-Agent", userAgent)
	switch {
	case s.cfg.JSON != nil:
		v, err := s.cfg.JSON.Eval(sc)
		if err != nil {
			return nil, steps.Permanent(err)
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, steps.Permanent(fmt.Errorf("json body: %w", err))
		}
		r.body = b
		r.header.Set("Content-Type", "application/json")
	case s.cfg.Body != nil:
		text, err := s.cfg.Body.EvalString(sc)
		if err != nil {
			return nil, steps.Permanent(err)
		}
		r.body = []byte(text)
		r.header.Set("Content-Type", "text/plain; charset=utf-8")
	}
	if s.decode == "json" {
		r.header.Set("Accept", "application/json")
	}
	for k, t := range s.cfg.Headers {
		v, err := t.EvalString(sc)
		if err != nil {
			// The template source may name a secret, never its value.
			return nil, steps.Permanent(fmt.Errorf("header %s: %w", k, err))
		}
		if strings.ContainsAny(v, "\r\n") {
			return nil, steps.Permanent(fmt.Errorf("header %s: the value holds a line break", k))
		}
		r.header.Set(k, v)
		if sensitive(k) {
			r.secrets = append(r.secrets, v)
			// "Bearer abc": the token alone may be echoed too.
			if _, tok, ok := strings.Cut(v, " "); ok {
				r.secrets = append(r.secrets, tok)
			}
		}
	}
	return r, nil
}

// scrub removes the values of secret headers and parameters from text that
// is going into an error message.
func (r *request) scrub(text string) string {
	for _, s := range r.secrets {
		if len(s) >= 4 {
			text = strings.ReplaceAll(text, s, redacted)
		}
	}
	return text
}

func (s *step) timeoutError(where string) error {
	return &steps.Error{Err: fmt.Errorf("%s: no complete response within %s (the fetch 'timeout'); for a slow server or a large body give 'timeout' under 'with:' a longer value", where, s.timeout), Class: "timeout"}
}

// isUnfollowed reports whether a status left at the end of a followed chain
// is a redirect that went nowhere: net/http returns a 3xx without a Location
// as it came. 304 Not Modified answers a conditional request and is no
// redirect.
func isUnfollowed(code int) bool {
	return code >= 300 && code < 400 && code != http.StatusNotModified
}

func (s *step) transportError(ctx context.Context, where string, r *request, v *verdict, err error) error {
	var re *redirectError
	if errors.As(err, &re) {
		return &steps.Error{Err: fmt.Errorf("%s: %s", where, re.Error()), Class: "redirects", Permanent: true}
	}
	if ctx.Err() != nil {
		return &steps.Error{Err: fmt.Errorf("%s: %w", where, context.Cause(ctx)), Class: steps.ClassOf(ctx.Err())}
	}
	// A transport that knows its class (the mocks of `flow test`) keeps it.
	var se *steps.Error
	if errors.As(err, &se) {
		return &steps.Error{Err: fmt.Errorf("%s: %s", where, r.scrub(se.Err.Error())), Class: se.Class, Permanent: se.Permanent, RetryAfter: se.RetryAfter}
	}
	// url.Error repeats the full URL, secrets included: keep its cause only.
	cause := err
	var ue *url.Error
	if errors.As(err, &ue) {
		cause = ue.Err
	}
	msg := fmt.Sprintf("%s: %s", where, r.scrub(cause.Error()))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &steps.Error{Err: errors.New(msg), Class: "timeout"}
	}
	var dns *net.DNSError
	if errors.As(err, &dns) && dns.IsNotFound {
		return &steps.Error{Err: errors.New(msg + " (unknown host)"), Class: "connection", Permanent: true}
	}
	if isCertError(err) {
		return &steps.Error{Err: errors.New(msg + "; for a test server with a self-signed certificate, set 'insecure: true'"), Class: "connection", Permanent: true}
	}
	return &steps.Error{Err: errors.New(msg), Class: "connection", Permanent: !v.retry}
}

func isCertError(err error) bool {
	var (
		unknown  x509.UnknownAuthorityError
		invalid  x509.CertificateInvalidError
		hostname x509.HostnameError
		verify   *tlsVerifyError
	)
	return errors.As(err, &unknown) || errors.As(err, &invalid) || errors.As(err, &hostname) || errors.As(err, &verify)
}

func (s *step) statusError(where string, r *request, resp *http.Response, snippet []byte, v *verdict) error {
	msg := fmt.Sprintf("%s: HTTP %s", where, resp.Status)
	if text := snippetOf(snippet); text != "" {
		msg += ": " + r.scrub(text)
	}
	e := &steps.Error{Err: errors.New(msg)}
	switch code := resp.StatusCode; {
	case code == http.StatusTooManyRequests:
		e.Class = "http_429"
	case code >= 500:
		e.Class = "http_5xx"
		e.Permanent = !v.retry // 501 Not Implemented will not change
	default:
		e.Class = "http_4xx"
		e.Permanent = true
	}
	if code := resp.StatusCode; code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
		e.RetryAfter = retryAfter(resp)
	}
	return e
}

// retryAfter reads Retry-After (seconds or an HTTP date) with the library's
// parser: DefaultBackoff returns the header's wait on 429 and 503, and with
// zero bounds nothing otherwise.
func retryAfter(resp *http.Response) time.Duration {
	return retryablehttp.DefaultBackoff(0, 0, 0, resp)
}

func snippetOf(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	s := strings.ToValidUTF8(string(b), "")
	s = strings.Join(strings.Fields(s), " ")
	if len(b) == 200 && s != "" {
		s += "..."
	}
	return s
}

var errTooLarge = errors.New("body too large")

// firstGrow is the most readBody reserves before data arrives: enough for
// most API answers in one piece, and nothing a lying Content-Length can
// multiply across workers.
const firstGrow = 32 << 10

// readBody reads at most limit bytes, and one more to tell a body of exactly
// limit bytes from a larger one. A declared Content-Length above the limit
// fails before reading anything; one below it is only a hint, since the
// server may send less: the buffer grows as data arrives.
func readBody(resp *http.Response, limit int64) ([]byte, int64, error) {
	if resp.ContentLength > limit {
		return nil, resp.ContentLength, errTooLarge
	}
	var buf bytes.Buffer
	if resp.ContentLength > 0 {
		buf.Grow(int(min(resp.ContentLength, firstGrow)))
	}
	n, err := buf.ReadFrom(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, n, err
	}
	if n > limit {
		return buf.Bytes()[:limit], n, errTooLarge
	}
	return buf.Bytes(), n, nil
}

func (s *step) decodeBody(resp *http.Response, data []byte) (any, error) {
	mode := s.decode
	if mode == "auto" {
		mode = "text"
		if isJSON(resp.Header.Get("Content-Type")) {
			mode = "json"
		}
	}
	switch mode {
	case "none":
		return nil, nil
	case "bytes":
		return base64.StdEncoding.EncodeToString(data), nil
	case "text":
		return strings.ToValidUTF8(string(data), "\uFFFD"), nil
	}
	if len(bytes.TrimSpace(data)) == 0 {
		// HTTP itself says there is no body (HEAD, 204), or the status is
		// kept as data (raise_for_status: false, a 304): null, not an
		// error, so that a link checker records the status.
		if resp.Request.Method == http.MethodHead || resp.StatusCode == http.StatusNoContent || resp.StatusCode/100 != 2 {
			return nil, nil
		}
		// As httpx's .json() raises: an empty answer where JSON was
		// expected is most often an error page or a proxy's, not null.
		return nil, fmt.Errorf("HTTP %s with an empty body where JSON was expected (Content-Type %q); use 'decode: text' or 'decode: none' if the server may answer with nothing", resp.Status, resp.Header.Get("Content-Type"))
	}
	v, err := steps.DecodeJSON(data)
	switch {
	case err == steps.ErrTrailingJSON:
		return nil, fmt.Errorf("the body holds data after its JSON value (Content-Type %q); use 'decode: text' to read it as text", resp.Header.Get("Content-Type"))
	case err != nil:
		return nil, fmt.Errorf("the body is not valid JSON (%v; Content-Type %q); use 'decode: text' to read it as text", err, resp.Header.Get("Content-Type"))
	}
	return v, nil
}

func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// redirectError stops a chain of redirects.
type redirectError struct {
	msg string
}

func (e *redirectError) Error() string { return e.msg }

func (s *step) checkRedirect(req *http.Request, via []*http.Request) error {
	if !s.follow {
		return http.ErrUseLastResponse
	}
	next := req.URL.String()
	for i, prev := range via {
		if prev.URL.String() == next {
			chain := make([]string, 0, len(via)-i+1)
			for _, p := range via[i:] {
				chain = append(chain, redactURL(p.URL.String()))
			}
			chain = append(chain, redactURL(next))
			return &redirectError{msg: "redirect loop: " + strings.Join(chain, " -> ")}
		}
	}
	if len(via) > s.maxRedir {
		return &redirectError{msg: fmt.Sprintf("stopped after %d redirects (max_redirects), last to %s", s.maxRedir, redactURL(next))}
	}
	s.guardCredentials(req, via)
	return nil
}

// guardCredentials decides which credentials the next hop of a redirect
// gets. net/http copies every header of the first request to each hop and
// strips only Authorization and Cookie, and only for another domain (not
// another port, a subdomain or a downgrade to http): an X-Api-Key or a
// Private-Token would reach whatever host the server names. As curl does,
// the headers 'sensitive' names go only to the origin (scheme, host, port)
// of the first request, and once a chain has left it they stay off, so that
// a host that got no credentials cannot send the client back for them.
func (s *step) guardCredentials(req *http.Request, via []*http.Request) {
	first := via[0]
	if s.keepCreds {
		// net/http has stripped its own list for another domain: put back
		// what the person asked to keep.
		for k, vs := range first.Header {
			if sensitive(k) {
				req.Header[k] = vs
			}
		}
		return
	}
	left := !sameOrigin(first.URL, req.URL)
	for _, hop := range via[1:] {
		left = left || !sameOrigin(first.URL, hop.URL)
	}
	if !left {
		return
	}
	for k := range req.Header {
		if sensitive(k) {
			delete(req.Header, k)
		}
	}
	// The Referer net/http adds is the previous URL, query included, which
	// may hold an api_key; a Referer the pipeline set itself stays.
	if first.Header.Get("Referer") == "" {
		req.Header.Del("Referer")
	}
}

// sameOrigin reports whether b may receive a's credentials: the same host
// and port, and not plain http after https. http to https on the same port
// is an upgrade, not a leak.
func sameOrigin(a, b *url.URL) bool {
	if !strings.EqualFold(a.Hostname(), b.Hostname()) || port(a) != port(b) {
		return false
	}
	return !(a.Scheme == "https" && b.Scheme != "https")
}

func port(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if strings.EqualFold(u.Scheme, "https") {
		return "443"
	}
	return "80"
}

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
	maxRedir  int
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

	v := &verdict{}
	var body any
	if r.body != nil {
		body = r.body
	}
	req, err := retryablehttp.NewRequestWithContext(context.WithValue(ctx, verdictKey{}, v), r.method, r.url.String(), body)
	if err != nil {
		return nil, steps.Permanent(fmt.Errorf("%s: %s", where, r.scrub(err.Error())))
	}
	req.Header = r.header
	if h := r.header.Get("Host"); h != "" {
		req.Host = h
	}

	start := time.Now()
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, s.transportError(ctx, where, r, v, err)
	}
	defer resp.Body.Close()

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
			size := "more than " + fmt.Sprint(s.maxBytes)
			if resp.ContentLength > 0 {
				size = fmt.Sprint(resp.ContentLength)
			}
			return nil, &steps.Error{Err: fmt.Errorf("%s: the response body has %s bytes, above max_bytes (%d); raise max_bytes or use a narrower request", where, size, s.maxBytes), Class: "too_large", Permanent: true}
		case ctx.Err() != nil:
			return nil, &steps.Error{Err: fmt.Errorf("%s: stopped while reading the body: %w", where, context.Cause(ctx)), Class: steps.ClassOf(ctx.Err())}
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
		"elapsed":   time.Since(start).Seconds(),
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

func (s *step) transportError(ctx context.Context, where string, r *request, v *verdict, err error) error {
	var re *redirectError
	if errors.As(err, &re) {
		return &steps.Error{Err: fmt.Errorf("%s: %s", where, re.Error()), Class: "redirects", Permanent: true}
	}
	if ctx.Err() != nil {
		return &steps.Error{Err: fmt.Errorf("%s: %w", where, context.Cause(ctx)), Class: steps.ClassOf(ctx.Err())}
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

// readBody reads at most limit bytes, and one more to tell a body of exactly
// limit bytes from a larger one. A declared Content-Length above the limit
// fails before reading anything.
func readBody(resp *http.Response, limit int64) ([]byte, int64, error) {
	if resp.ContentLength > limit {
		return nil, resp.ContentLength, errTooLarge
	}
	var buf bytes.Buffer
	if resp.ContentLength > 0 {
		buf.Grow(int(resp.ContentLength))
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
		return nil, nil
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
	return nil
}

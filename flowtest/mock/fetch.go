package mock

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/flowrun/flow/clock"
	"github.com/flowrun/flow/internal/redact"
	"github.com/flowrun/flow/steps"
)

// Transport answers the stage's HTTP requests from the fetch mocks.
func (r *Recorder) Transport(stage string) http.RoundTripper {
	return &transport{r: r, stage: stage}
}

type transport struct {
	r     *Recorder
	stage string
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := t.r
	ctx := req.Context()
	at, ok := steps.AtFrom(ctx)
	if !ok {
		at = steps.At{Stage: t.stage, Index: -1}
	}
	raw := req.URL.String()
	rec := Request{Stage: at.Stage, Index: at.Index, Method: req.Method, URL: redact.URL(raw), Headers: redactHeaders(req.Header), Rule: -1, Time: clock.From(ctx).Now()}
	if req.Body != nil {
		rec.BodyBytes, _ = io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	var rule *fetchRule
	for i := range r.fetch {
		f := &r.fetch[i]
		if f.Stage != "" && f.Stage != at.Stage {
			continue
		}
		if f.Method != "" && f.Method != req.Method {
			continue
		}
		if f.re != nil && !f.re.MatchString(raw) || f.re == nil && !wildcard(f.URL, raw) {
			continue
		}
		rule = f
		break
	}
	if rule == nil {
		r.record(func() { r.requests = append(r.requests, rec) })
		hint := fmt.Sprintf("fetch: [{url: %q, status: 200, body: \"...\"}]", rec.URL)
		if req.Method != http.MethodGet {
			hint = fmt.Sprintf("fetch: [{url: %q, method: %s, status: 200, body: \"...\"}]", rec.URL, req.Method)
		}
		return nil, r.refuse(Access{Stage: at.Stage, Index: at.Index, What: "fetch", Target: req.Method + " " + rec.URL, Hint: hint})
	}
	k := countKey{kind: "fetch", rule: rule.index}
	if rule.Per != "rule" {
		k.key = req.Method + " " + raw
	}
	resp := rule.responses[r.next(k, func(i int) int { return max(rule.responses[i].Times, 1) }, len(rule.responses))]
	rec.Rule = rule.index
	if resp.Fail == "" {
		rec.Status = resp.Status
	}
	r.record(func() { r.requests = append(r.requests, rec) })
	if resp.Latency > 0 {
		if err := clock.Sleep(ctx, resp.Latency); err != nil {
			return nil, err
		}
	}
	if resp.Fail == "connection" {
		return nil, &steps.Error{Err: fmt.Errorf("connection reset by peer (fetch mock %d, fail: connection)", rule.index+1), Class: "connection"}
	}
	h := http.Header{}
	for k, v := range resp.Headers {
		h.Set(k, v)
	}
	if h.Get("Content-Type") == "" {
		switch {
		case resp.JSON != nil:
			h.Set("Content-Type", "application/json")
		case len(resp.body) > 0 && resp.BodyFile == "":
			h.Set("Content-Type", "text/plain; charset=utf-8")
		}
	}
	body := resp.body
	if req.Method == http.MethodHead {
		body = nil
	}
	h.Set("Content-Length", strconv.Itoa(len(resp.body)))
	return &http.Response{
		Status:        strconv.Itoa(resp.Status) + " " + http.StatusText(resp.Status),
		StatusCode:    resp.Status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}, nil
}

// The redaction of requests is fetch's (internal/redact): the same names
// are secrets.
func redactHeaders(h http.Header) map[string]string {
	out := make(map[string]string, len(h))
	for k, vs := range h {
		name := strings.ToLower(k)
		if redact.CredentialName(name) {
			out[name] = redact.Hidden
			continue
		}
		out[name] = strings.Join(vs, ", ")
	}
	return out
}

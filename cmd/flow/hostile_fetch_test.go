package main

// Hostile servers against fetch, end to end (issue 13 classes 2, 4, 6 and
// 8): the real binary in its own process, loopback servers only, with the
// helpers of reliability_test.go.

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// headerLog keeps every header value and URL a server received.
type headerLog struct {
	mu   sync.Mutex
	seen []string
}

func (l *headerLog) record(r *http.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen = append(l.seen, r.URL.String())
	for k, vs := range r.Header {
		for _, v := range vs {
			l.seen = append(l.seen, k+": "+v)
		}
	}
}

func (l *headerLog) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.seen, "\n")
}

// A server redirects to another host (another port of 127.0.0.1, and from
// https to http): the credentials of the request must not reach it, whether
// net/http would strip them (Authorization, Cookie) or not (X-Api-Key,
// Private-Token); the opt-in sends them to a host the pipeline trusts.
func TestHostileFetchRedirectCredentials(t *testing.T) {
	const secret = "r3direct-S3CRET-value"
	var evil, trusted headerLog
	evilSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		evil.record(r)
		fmt.Fprint(w, "evil")
	}))
	defer evilSrv.Close()
	trustedSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		trusted.record(r)
		fmt.Fprint(w, "trusted")
	}))
	defer trustedSrv.Close()
	redirect := func(w http.ResponseWriter, r *http.Request) {
		to := evilSrv.URL
		if r.URL.Path == "/trusted" {
			to = trustedSrv.URL
		}
		http.Redirect(w, r, to+"/landed", http.StatusFound)
	}
	origin := httptest.NewServer(http.HandlerFunc(redirect))
	defer origin.Close()
	tlsOrigin := httptest.NewTLSServer(http.HandlerFunc(redirect))
	defer tlsOrigin.Close()

	headers := `
        Authorization: "Bearer ${ vars.token }"
        Cookie: "session=${ vars.token }"
        X-Api-Key: "${ vars.token }"
        Private-Token: "${ vars.token }"`
	r := relRun(t, fmt.Sprintf(`version: 1
vars:
  token: {default: %s, secret: true}
stages:
  - name: src
    source: {items: [%s/cross, %s/downgrade]}
  - name: get
    step: fetch
    with:
      url: "${ item }"
      insecure: true
      headers:%s
  - name: trust
    step: fetch
    with:
      url: "%s/trusted"
      keep_credentials_on_redirect: true
      headers:%s
  - name: pick
    step: compute
    with: {value: "${ item.body }"}
  - name: out
    sink: {write: {path: out.jsonl}}
`, secret, origin.URL, tlsOrigin.URL, headers, origin.URL, headers))
	r.check(t, 0, 5, []string{`"trusted"`, `"trusted"`})
	got := evil.text()
	if strings.Count(got, "/landed") != 2 {
		t.Fatalf("the other host was not reached through both redirects:\n%s", got)
	}
	if strings.Contains(got, secret) {
		t.Errorf("a credential reached the other host:\n%s", got)
	}
	for _, h := range []string{"Authorization", "Cookie", "X-Api-Key", "Private-Token"} {
		if strings.Contains(got, h+":") {
			t.Errorf("the other host received %s:\n%s", h, got)
		}
		if !strings.Contains(trusted.text(), h+": ") {
			t.Errorf("keep_credentials_on_redirect: the trusted host did not receive %s", h)
		}
	}
}

// JSON numbers that no 64-bit type holds go from a server's body to the
// output file digit for digit, in a thread and across a worker process.
func TestHostileFetchNumbersExact(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"id": 123456789012345678901234567890, "u": 18446744073709551615, "big": 1e400, "ok": 9007199254740993}`)
	}))
	defer srv.Close()
	for _, mode := range []string{"thread", "process"} {
		t.Run(mode, func(t *testing.T) {
			r := relRun(t, fmt.Sprintf(`version: 1
stages:
  - name: src
    source: {items: [a]}
  - name: get
    step: fetch
    mode: %s
    with: {url: "%s/${ item }"}
  - name: pick
    step: compute
    mode: %s
    with: {value: {id: "${ item.body.id }", u: "${ item.body.u }", big: "${ item.body.big }", ok: "${ item.body.ok }", url: "x/${ item.body.id }"}}
  - name: out
    sink: {write: {path: out.jsonl}}
`, mode, srv.URL, mode))
			r.check(t, 0, 4, []string{`{"big":1e400,"id":123456789012345678901234567890,"ok":9007199254740993,"u":18446744073709551615,"url":"x/123456789012345678901234567890"}`})
		})
	}
}

// A server that accepts the connection and never answers: without any
// timeout on the stage or the pipeline, the request's own bound ends the
// item.
func TestHostileFetchNeverAnswers(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	r := relRun(t, relFetch(srv.URL, "[a]", "", "timeout: 300ms"))
	r.check(t, 1, 3, nil)
	if f := r.failure(t, "get"); f.Class != "timeout" || !strings.Contains(f.Error, "within 300ms") {
		t.Errorf("failure %+v, want class timeout naming the fetch timeout", f)
	}
}

// A server declares a 10 GB body and sends a few bytes. Below max_bytes the
// declared length is only a hint: the run's peak memory stays that of a
// small body.
func TestHostileFetchLyingContentLength(t *testing.T) {
	const declared = 10_000_000_000
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\npartial", declared)
		buf.Flush()
	}))
	defer srv.Close()
	dir := t.TempDir()
	cmd := relCommand(t, dir, relFetch(srv.URL, "[a, b, c, d]", "on_error: skip", "max_bytes: 20GB"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	code := relWait(t, cmd)
	r := relCollect(t, dir, code, "", "")
	r.check(t, 0, 3, []string{""})
	if s := r.stage(t, "get"); s.Skipped != 4 || r.failure(t, "get").Class != "connection" {
		t.Errorf("want 4 items cut short (class connection):\n%s", r.raw)
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		t.Skip("no rusage on this system")
	}
	peak := ru.Maxrss << 10 // kilobytes on Linux
	t.Logf("peak RSS %d MiB for 4 bodies declared as %d bytes each", peak>>20, int64(declared))
	if peak > 512<<20 {
		t.Errorf("peak RSS %d MiB: the declared length was allocated", peak>>20)
	}
	if _, err := os.Stat(filepath.Join(dir, "out.jsonl")); err != nil {
		t.Error(err)
	}
}

// Issue 14's fidelity to httpx: a redirect that cannot be followed, and an
// empty body where JSON is expected, fail their items (classed) instead of
// passing as a success or as null.
func TestHostileFetchUnfollowedRedirectAndEmptyJSON(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/nowhere":
			w.WriteHeader(http.StatusFound)
		case "/empty":
			w.Header().Set("Content-Type", "application/json")
		default:
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"ok": true}`)
		}
	}))
	defer srv.Close()
	r := relRun(t, relFetch(srv.URL, "[nowhere, empty, fine]", "on_error: skip", ""))
	lines := relLines(t, filepath.Join(r.dir, "out.jsonl"))
	r.check(t, 0, 3, lines)
	if len(lines) != 1 || !strings.Contains(lines[0], `"body":{"ok":true}`) {
		t.Errorf("want the one good result, got %q", lines)
	}
	classes := map[string]string{}
	for _, f := range r.rep.Failures {
		classes[fmt.Sprint(f.Item)] = f.Class
	}
	if classes["nowhere"] != "redirects" || classes["empty"] != "decode" || len(classes) != 2 {
		t.Errorf("failures by item %v, want nowhere: redirects, empty: decode\n%s", classes, r.raw)
	}
}

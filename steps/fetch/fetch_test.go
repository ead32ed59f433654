package fetch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/steps/steptest"
)

func build(t *testing.T, with string) (steps.Step, error) {
	t.Helper()
	env := &steps.Env{Workers: 4, Env: map[string]string{"API_TOKEN": "s3cr3t-token-value"}}
	v, err := steptest.Build(t, Register, "fetch", steptest.Node(t, with), env)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { v.(*step).Close() })
	return v.(steps.Step), nil
}

func mustBuild(t *testing.T, with string) steps.Step {
	t.Helper()
	s, err := build(t, with)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	return s
}

func get(t *testing.T, s steps.Step, item any) (map[string]any, error) {
	t.Helper()
	v, err := s.Do(context.Background(), steps.Input{Item: item})
	if err != nil {
		return nil, err
	}
	return v.(map[string]any), nil
}

func stepErr(t *testing.T, err error) *steps.Error {
	t.Helper()
	var se *steps.Error
	if !errors.As(err, &se) {
		t.Fatalf("want a *steps.Error, got %T %v", err, err)
	}
	return se
}

func server(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func TestJSON200(t *testing.T) {
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("X-Request-Id", "r1")
		fmt.Fprintf(w, `{"id": %s, "title": "post", "score": 1.5, "tags": ["a"]}`, strings.TrimPrefix(r.URL.Path, "/posts/"))
	})
	s := mustBuild(t, fmt.Sprintf(`url: "%s/posts/${ item }"`, srv.URL))
	m, err := get(t, s, 7)
	if err != nil {
		t.Fatal(err)
	}
	wantBody := map[string]any{"id": int64(7), "title": "post", "score": 1.5, "tags": []any{"a"}}
	if !reflect.DeepEqual(m["body"], wantBody) {
		t.Errorf("body = %#v", m["body"])
	}
	if m["status"] != int64(200) || m["url"] != srv.URL+"/posts/7" || m["bytes"].(int64) < 40 {
		t.Errorf("result = %#v", m)
	}
	if h := m["headers"].(map[string]any); h["x-request-id"] != "r1" || h["content-type"] != "application/json; charset=utf-8" {
		t.Errorf("headers = %#v", h)
	}
	if e, ok := m["elapsed"].(float64); !ok || e <= 0 {
		t.Errorf("elapsed = %#v", m["elapsed"])
	}
}

// Method, query, headers and a JSON body all reach the server.
func TestRequestOptions(t *testing.T) {
	var got struct {
		method, query, ctype, auth, ua string
		body                           map[string]any
	}
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		got.method, got.query, got.ctype = r.Method, r.URL.RawQuery, r.Header.Get("Content-Type")
		got.auth, got.ua = r.Header.Get("Authorization"), r.Header.Get("User-Agent")
		_ = json.NewDecoder(r.Body).Decode(&got.body)
		w.WriteHeader(http.StatusCreated)
	})
	s := mustBuild(t, fmt.Sprintf(`
url: "%s/items?fixed=1"
method: POST
query: {page: "${ item }", tag: [x, y]}
headers: {Authorization: "Bearer ${ env.API_TOKEN }"}
json: {name: "${ item }", n: 2}
`, srv.URL))
	m, err := get(t, s, 3)
	if err != nil {
		t.Fatal(err)
	}
	if got.method != "POST" || got.query != "fixed=1&page=3&tag=x&tag=y" || got.ctype != "application/json" ||
		got.auth != "Bearer s3cr3t-token-value" || !strings.HasPrefix(got.ua, "flow") {
		t.Errorf("server saw %+v", got)
	}
	if !reflect.DeepEqual(got.body, map[string]any{"name": float64(3), "n": float64(2)}) {
		t.Errorf("json body = %#v", got.body)
	}
	if m["status"] != int64(201) || m["body"] != "" {
		t.Errorf("result = %#v", m)
	}
}

func TestTextBody(t *testing.T) {
	var body, ctype string
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		body, ctype = string(b), r.Header.Get("Content-Type")
		w.Write([]byte("ok"))
	})
	_, err := get(t, mustBuild(t, fmt.Sprintf(`{url: "%s", method: PUT, body: "line ${ item }"}`, srv.URL)), 1)
	if err != nil || body != "line 1" || !strings.HasPrefix(ctype, "text/plain") {
		t.Fatalf("body %q ctype %q err %v", body, ctype, err)
	}
}

func TestDecodeModes(t *testing.T) {
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/json" {
			w.Header().Set("Content-Type", "application/problem+json")
			w.Write([]byte(`{"a": 1}`))
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte("hi\xff"))
	})
	cases := []struct {
		decode, path string
		want         any
	}{
		{"auto", "/json", map[string]any{"a": int64(1)}},
		{"auto", "/text", "hi\uFFFD"},
		{"text", "/json", `{"a": 1}`},
		{"bytes", "/text", "aGn/"},
		{"none", "/json", nil},
		{"json", "/json", map[string]any{"a": int64(1)}},
	}
	for _, c := range cases {
		m, err := get(t, mustBuild(t, fmt.Sprintf(`{url: "%s%s", decode: %s}`, srv.URL, c.path, c.decode)), nil)
		if err != nil {
			t.Errorf("%s %s: %v", c.decode, c.path, err)
			continue
		}
		if !reflect.DeepEqual(m["body"], c.want) {
			t.Errorf("%s %s: body = %#v, want %#v", c.decode, c.path, m["body"], c.want)
		}
		if c.decode == "none" && m["bytes"] != int64(8) {
			t.Errorf("none still counts bytes: %v", m["bytes"])
		}
	}
}

func TestInvalidJSON(t *testing.T) {
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"a": 1,`))
	})
	for _, decode := range []string{"auto", "json"} {
		_, err := get(t, mustBuild(t, fmt.Sprintf(`{url: "%s", decode: %s}`, srv.URL, decode)), nil)
		se := stepErr(t, err)
		if se.Class != "decode" || !se.Permanent || !strings.Contains(err.Error(), "not valid JSON") {
			t.Errorf("%s: %#v %v", decode, se, err)
		}
	}
}

func TestStatus404(t *testing.T) {
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no such post", http.StatusNotFound)
	})
	_, err := get(t, mustBuild(t, fmt.Sprintf(`url: "%s/p/1"`, srv.URL)), nil)
	se := stepErr(t, err)
	if se.Class != "http_4xx" || !se.Permanent || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "no such post") {
		t.Errorf("raise_for_status true: %#v %v", se, err)
	}
	// Like the guide's check_url: the status is data.
	m, err := get(t, mustBuild(t, fmt.Sprintf(`{url: "%s/p/1", raise_for_status: false}`, srv.URL)), nil)
	if err != nil || m["status"] != int64(404) || m["body"] != "no such post\n" {
		t.Errorf("raise_for_status false: %#v %v", m, err)
	}
}

func TestStatus5xx(t *testing.T) {
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/500":
			w.WriteHeader(500)
		case "/501":
			w.WriteHeader(501)
		case "/503":
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(503)
		}
	})
	s := mustBuild(t, fmt.Sprintf(`url: "%s/${ item }"`, srv.URL))
	_, err := get(t, s, 500)
	if se := stepErr(t, err); se.Class != "http_5xx" || se.Permanent || se.RetryAfter != 0 {
		t.Errorf("500: %#v", se)
	}
	_, err = get(t, s, 501)
	if se := stepErr(t, err); se.Class != "http_5xx" || !se.Permanent {
		t.Errorf("501: %#v", se)
	}
	_, err = get(t, s, 503)
	if se := stepErr(t, err); se.Class != "http_5xx" || se.Permanent || se.RetryAfter != 7*time.Second {
		t.Errorf("503: %#v", se)
	}
}

func TestStatus429RetryAfter(t *testing.T) {
	date := time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/seconds":
			w.Header().Set("Retry-After", "3")
		case "/date":
			w.Header().Set("Retry-After", date)
		}
		w.WriteHeader(http.StatusTooManyRequests)
	})
	s := mustBuild(t, fmt.Sprintf(`url: "%s/${ item }"`, srv.URL))
	_, err := get(t, s, "seconds")
	if se := stepErr(t, err); se.Class != "http_429" || se.Permanent || se.RetryAfter != 3*time.Second {
		t.Errorf("seconds: %#v", se)
	}
	_, err = get(t, s, "date")
	// The date is an hour ahead; allow for the clock moving while testing.
	if se := stepErr(t, err); se.Class != "http_429" || se.RetryAfter < 50*time.Minute || se.RetryAfter > time.Hour {
		t.Errorf("date: %#v", se)
	}
	_, err = get(t, s, "none")
	if se := stepErr(t, err); se.Class != "http_429" || se.RetryAfter != 0 {
		t.Errorf("no header: %#v", se)
	}
}

func TestMaxBytes(t *testing.T) {
	big := strings.Repeat("x", 2048)
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/chunked" {
			// No Content-Length: the limit must hold while reading.
			for i := 0; i < 4; i++ {
				w.Write([]byte(big))
				w.(http.Flusher).Flush()
			}
			return
		}
		if r.URL.Path == "/exact" {
			w.Write([]byte(big[:1024]))
			return
		}
		w.Write([]byte(big))
	})
	for _, path := range []string{"/chunked", "/sized"} {
		_, err := get(t, mustBuild(t, fmt.Sprintf(`{url: "%s%s", max_bytes: 1KiB}`, srv.URL, path)), nil)
		se := stepErr(t, err)
		if se.Class != "too_large" || !se.Permanent || !strings.Contains(err.Error(), "max_bytes") {
			t.Errorf("%s: %#v %v", path, se, err)
		}
	}
	// Exactly max_bytes passes.
	m, err := get(t, mustBuild(t, fmt.Sprintf(`{url: "%s", max_bytes: 1024}`, srv.URL+"/exact")), nil)
	if err != nil || m["bytes"] != int64(1024) {
		t.Errorf("exactly max_bytes: %v %v", m["bytes"], err)
	}
}

func TestRedirects(t *testing.T) {
	var srv *httptest.Server
	srv = server(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/a":
			http.Redirect(w, r, "/b", http.StatusFound)
		case "/b":
			http.Redirect(w, r, "/a", http.StatusFound)
		case "/old":
			http.Redirect(w, r, "/new", http.StatusMovedPermanently)
		case "/new":
			w.Write([]byte("moved"))
		default: // /chain/N redirects N times
			var n int
			fmt.Sscanf(r.URL.Path, "/chain/%d", &n)
			if n == 0 {
				w.Write([]byte("end"))
				return
			}
			http.Redirect(w, r, fmt.Sprintf("/chain/%d", n-1), http.StatusFound)
		}
	})
	_, err := get(t, mustBuild(t, fmt.Sprintf(`url: "%s/a"`, srv.URL)), nil)
	se := stepErr(t, err)
	if se.Class != "redirects" || !se.Permanent || !strings.Contains(err.Error(), "redirect loop") || !strings.Contains(err.Error(), "/a -> ") {
		t.Errorf("loop: %#v %v", se, err)
	}
	m, err := get(t, mustBuild(t, fmt.Sprintf(`url: "%s/old"`, srv.URL)), nil)
	if err != nil || m["body"] != "moved" || m["url"] != srv.URL+"/old" || m["final_url"] != srv.URL+"/new" {
		t.Errorf("follow: %#v %v", m, err)
	}
	m, err = get(t, mustBuild(t, fmt.Sprintf(`{url: "%s/old", follow_redirects: false}`, srv.URL)), nil)
	if err != nil || m["status"] != int64(301) || m["headers"].(map[string]any)["location"] != "/new" {
		t.Errorf("no follow: %#v %v", m, err)
	}
	s := mustBuild(t, fmt.Sprintf(`{url: "%s/chain/${ item }", max_redirects: 3}`, srv.URL))
	if m, err := get(t, s, 3); err != nil || m["body"] != "end" {
		t.Errorf("3 redirects with max 3: %v %v", m, err)
	}
	_, err = get(t, s, 4)
	if se := stepErr(t, err); se.Class != "redirects" || !strings.Contains(err.Error(), "stopped after 3 redirects") {
		t.Errorf("4 redirects with max 3: %v", err)
	}
}

// Cancelling while the body streams in stops the read at once.
func TestCancelMidBody(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	release := make(chan struct{})
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000000")
		w.Write([]byte("partial"))
		w.(http.Flusher).Flush()
		cancel() // the client has the headers and part of the body
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	s := mustBuild(t, fmt.Sprintf(`url: "%s"`, srv.URL))
	_, err := s.Do(ctx, steps.Input{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

func TestTimeoutClass(t *testing.T) {
	release := make(chan struct{})
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := mustBuild(t, fmt.Sprintf(`url: "%s"`, srv.URL)).Do(ctx, steps.Input{})
	if steps.ClassOf(err) != "timeout" || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v (class %s)", err, steps.ClassOf(err))
	}
}

func TestConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, err = get(t, mustBuild(t, fmt.Sprintf(`url: "http://%s/x?api_key=${ env.API_TOKEN }"`, addr)), nil)
	se := stepErr(t, err)
	if se.Class != "connection" || se.Permanent || !strings.Contains(err.Error(), "refused") {
		t.Errorf("%#v %v", se, err)
	}
	if strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("secret in error: %v", err)
	}
}

func TestConnectionReset(t *testing.T) {
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.(*net.TCPConn).SetLinger(0)
			conn.Close()
		}
	})
	_, err := get(t, mustBuild(t, fmt.Sprintf(`url: "%s"`, srv.URL)), nil)
	if se := stepErr(t, err); se.Class != "connection" || se.Permanent {
		t.Errorf("%#v %v", se, err)
	}
}

func TestTLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("secure")) }))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
	srv.StartTLS()
	defer srv.Close()
	_, err := get(t, mustBuild(t, fmt.Sprintf(`url: "%s"`, srv.URL)), nil)
	se := stepErr(t, err)
	if se.Class != "connection" || !se.Permanent || !strings.Contains(err.Error(), "insecure: true") {
		t.Errorf("verification: %#v %v", se, err)
	}
	m, err := get(t, mustBuild(t, fmt.Sprintf(`{url: "%s", insecure: true}`, srv.URL)), nil)
	if err != nil || m["body"] != "secure" {
		t.Errorf("insecure: %v %v", m, err)
	}
}

// Credentials never reach results or error messages.
func TestRedaction(t *testing.T) {
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Set-Cookie", "sid=abc123; HttpOnly")
		w.Header().Set("X-Api-Key", "k-123456")
		w.Header().Set("X-Auth-Token", "t-123456")
		w.Header().Set("Content-Type", "text/plain")
		if r.URL.Path == "/fail" {
			// A server that echoes the request's credentials in its error.
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, "bad credentials: %s %s", r.Header.Get("Authorization"), r.Header.Get("Cookie"))
			return
		}
		w.Write([]byte("ok"))
	})
	s := mustBuild(t, fmt.Sprintf(`
url: "%s/${ item }?access_token=${ env.API_TOKEN }&page=2"
headers: {Authorization: "Bearer ${ env.API_TOKEN }", Cookie: "session=cookie-value-1", X-Trace: visible}
`, srv.URL))
	m, err := get(t, s, "ok")
	if err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(m)
	for _, secret := range []string{"abc123", "k-123456", "t-123456", "s3cr3t"} {
		if strings.Contains(string(out), secret) {
			t.Errorf("result leaks %q: %s", secret, out)
		}
	}
	h := m["headers"].(map[string]any)
	if h["set-cookie"] != redacted || h["x-api-key"] != redacted || h["content-type"] != "text/plain" {
		t.Errorf("headers = %#v", h)
	}
	if m["url"] != srv.URL+"/ok?access_token=REDACTED&page=2" {
		t.Errorf("url = %v", m["url"])
	}
	_, err = get(t, s, "fail")
	if err == nil || strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "cookie-value-1") || !strings.Contains(err.Error(), "bad credentials") {
		t.Errorf("error = %v", err)
	}
}

// One stage shares one connection pool: sequential requests reuse a
// connection instead of opening one each.
func TestConnectionReuse(t *testing.T) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`ok`))
	}))
	srv.Config.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	s := mustBuild(t, fmt.Sprintf(`url: "%s/${ item }"`, srv.URL))
	for i := 0; i < 20; i++ {
		if _, err := get(t, s, i); err != nil {
			t.Fatal(err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("20 sequential requests opened %d connections, want 1", n)
	}
}

func TestConcurrentDo(t *testing.T) {
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"path": %q}`, r.URL.Path)
	})
	s := mustBuild(t, fmt.Sprintf(`url: "%s/${ item }"`, srv.URL))
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := get(t, s, i)
			if err != nil || m["body"].(map[string]any)["path"] != fmt.Sprintf("/%d", i) {
				t.Errorf("%d: %v %v", i, m, err)
			}
		}()
	}
	wg.Wait()
}

func TestOptionErrors(t *testing.T) {
	for _, c := range []struct{ with, want string }{
		{`{}`, `missing required key "url"`},
		{`{url: "ftp://x"}`, "http://"},
		{`{url: "http://x", body: a, json: {a: 1}}`, "not both"},
		{`{url: "http://x", method: FETCH}`, "must be one of"},
		{`{url: "http://x", decode: xml}`, "must be one of"},
		{`{url: "http://x", max_bytes: big}`, "invalid size"},
		{`{url: "http://x", max_redirects: -1}`, "negative"},
		{`{url: "http://x", headers: {"bad name": v}}`, "invalid header name"},
		{`{url: "http://x/${ item + }"}`, "expression"},
	} {
		_, err := build(t, c.with)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.with, err, c.want)
		}
	}
	// A URL that only turns out bad per item fails that item permanently.
	_, err := get(t, mustBuild(t, `url: "${ item }"`), "not a url")
	if se := stepErr(t, err); !se.Permanent || !strings.Contains(err.Error(), "invalid url") {
		t.Errorf("bad item url: %v", err)
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://u:pw@h/p?a=1&token=x&API_KEY=y": "https://u:REDACTED@h/p?a=1&token=REDACTED&API_KEY=REDACTED",
		"https://h/p?q=1":                        "https://h/p?q=1",
		"https://h/p?signature":                  "https://h/p?signature",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// Per-request cost over a reused loopback connection, JSON decoded.
func BenchmarkFetchJSON(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"id": 1, "title": "post", "tags": ["a", "b"]}`))
	}))
	defer srv.Close()
	var doc yaml.Node
	_ = yaml.Unmarshal([]byte(fmt.Sprintf(`url: "%s/posts/${ item }"`, srv.URL)), &doc)
	r := steps.NewRegistry()
	Register(r)
	k, _ := r.Lookup("fetch")
	v, err := k.Build(doc.Content[0], nil, &steps.Env{Workers: 1})
	if err != nil {
		b.Fatal(err)
	}
	s := v.Step.(*step)
	defer s.Close()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := s.Do(context.Background(), steps.Input{Item: i}); err != nil {
			b.Fatal(err)
		}
	}
}

// credentialHeaders are the secret headers of TestRedirectCredentials: the
// two net/http strips for another domain, and two it never strips.
var credentialHeaders = []string{"Authorization", "Cookie", "X-Api-Key", "Private-Token"}

// seen records, per path, the credential headers a server received.
type seen struct {
	mu sync.Mutex
	m  map[string][]string
}

func (s *seen) record(r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string][]string{}
	}
	var got []string
	for _, h := range append(credentialHeaders, "X-Trace") {
		if v := r.Header.Get(h); v != "" {
			got = append(got, h+"="+v)
		}
	}
	s.m[r.URL.Path] = got
}

func (s *seen) get(path string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[path]
}

const credentialOpts = `
headers:
  Authorization: "Bearer ${ env.API_TOKEN }"
  Cookie: "sid=c00kie"
  X-Api-Key: "k-${ env.API_TOKEN }"
  Private-Token: "p-${ env.API_TOKEN }"
  X-Trace: visible
`

// Secret headers go only to the origin asked for: not to another port of
// the same host (which net/http allows for Authorization and Cookie, and
// for every other header), not over http after https, and not back to the
// origin once a chain has left it.
func TestRedirectCredentials(t *testing.T) {
	var log seen
	other := server(t, func(w http.ResponseWriter, r *http.Request) {
		log.record(r)
		if strings.HasPrefix(r.URL.Path, "/bounce") {
			http.Redirect(w, r, r.URL.Query().Get("to"), http.StatusFound)
			return
		}
		w.Write([]byte("other"))
	})
	var origin *httptest.Server
	origin = server(t, func(w http.ResponseWriter, r *http.Request) {
		log.record(r)
		switch r.URL.Path {
		case "/same":
			http.Redirect(w, r, "/landed", http.StatusFound)
		case "/cross":
			http.Redirect(w, r, other.URL+"/cross-landed", http.StatusFound)
		case "/back":
			http.Redirect(w, r, other.URL+"/bounce?to="+origin.URL+"/back-landed", http.StatusFound)
		default:
			w.Write([]byte("origin"))
		}
	})
	all := []string{"Authorization=Bearer s3cr3t-token-value", "Cookie=sid=c00kie", "X-Api-Key=k-s3cr3t-token-value", "Private-Token=p-s3cr3t-token-value", "X-Trace=visible"}
	s := mustBuild(t, fmt.Sprintf("url: \"%s/${ item }\"", origin.URL)+credentialOpts)
	for _, path := range []string{"same", "cross", "back"} {
		if _, err := get(t, s, path); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	for path, want := range map[string][]string{
		"/same":         all,
		"/landed":       all, // a redirect within the origin keeps them
		"/cross-landed": {"X-Trace=visible"},
		"/bounce":       {"X-Trace=visible"},
		"/back-landed":  {"X-Trace=visible"},
	} {
		if got := log.get(path); !reflect.DeepEqual(got, want) {
			t.Errorf("%s received %q, want %q", path, got, want)
		}
	}

	// The opt-in sends them everywhere, even to another host name (for
	// which net/http strips Authorization and Cookie itself).
	log = seen{}
	host := strings.Replace(other.URL, "127.0.0.1", "localhost", 1)
	trusted := server(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, host+"/trusted-landed", http.StatusFound)
	})
	s = mustBuild(t, fmt.Sprintf("url: \"%s\"\nkeep_credentials_on_redirect: true", trusted.URL)+credentialOpts)
	if _, err := get(t, s, nil); err != nil {
		t.Fatal(err)
	}
	if got := log.get("/trusted-landed"); !reflect.DeepEqual(got, all) {
		t.Errorf("keep_credentials_on_redirect: received %q, want %q", got, all)
	}
}

// An https server redirecting to http on the same host name: the secrets
// would cross the network in clear text.
func TestRedirectDowngradeDropsCredentials(t *testing.T) {
	var log seen
	plain := server(t, func(w http.ResponseWriter, r *http.Request) {
		log.record(r)
		w.Write([]byte("plain"))
	})
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.URL+"/clear", http.StatusFound)
	}))
	defer tlsSrv.Close()
	s := mustBuild(t, fmt.Sprintf("url: \"%s\"\ninsecure: true", tlsSrv.URL)+credentialOpts)
	m, err := get(t, s, nil)
	if err != nil || m["body"] != "plain" {
		t.Fatalf("%v %v", m, err)
	}
	if got := log.get("/clear"); !reflect.DeepEqual(got, []string{"X-Trace=visible"}) {
		t.Errorf("http after https received %q", got)
	}
}

func TestSameOrigin(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"https://h/x", "https://h/y", true},
		{"https://h/x", "https://H:443/y", true},
		{"http://h/x", "https://h:80/y", true}, // an upgrade on the same port
		{"https://h/x", "http://h:443/y", false},
		{"https://h/x", "http://h/y", false},
		{"http://h/x", "https://h/y", false}, // 80 -> 443: another port
		{"https://h/x", "https://h:8443/y", false},
		{"https://h/x", "https://sub.h/y", false},
		{"http://127.0.0.1:1/x", "http://localhost:1/y", false},
	} {
		a, _ := url.Parse(c.a)
		b, _ := url.Parse(c.b)
		if got := sameOrigin(a, b); got != c.want {
			t.Errorf("sameOrigin(%s, %s) = %v", c.a, c.b, got)
		}
	}
}

// A declared Content-Length is a claim, not data: a server declaring 1 GiB
// and sending a few bytes must not make the client reserve 1 GiB.
func TestLyingContentLengthCostsNothing(t *testing.T) {
	const declared = 1 << 30
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\npartial", declared)
		buf.Flush()
	})
	s := mustBuild(t, fmt.Sprintf(`{url: "%s", max_bytes: 2GiB}`, srv.URL))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := get(t, s, nil)
	runtime.ReadMemStats(&after)
	if se := stepErr(t, err); se.Class != "connection" {
		t.Errorf("a body cut short: %#v %v", se, err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 16<<20 {
		t.Errorf("reading 7 bytes of a declared %d allocated %d MiB", declared, n>>20)
	}
	// Above max_bytes, the claim alone fails the item before any reading.
	_, err = get(t, mustBuild(t, fmt.Sprintf(`{url: "%s", max_bytes: 1KiB}`, srv.URL)), nil)
	if se := stepErr(t, err); se.Class != "too_large" || !strings.Contains(err.Error(), "declares 1073741824 bytes") {
		t.Errorf("declared above max_bytes: %v", err)
	}
}

// A server that never answers: the request's own timeout ends it, with a
// class a stage's retry.on can name, whether or not the stage has one.
func TestRequestTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	if s := mustBuild(t, fmt.Sprintf(`url: "%s"`, srv.URL)).(*step); s.timeout != defaultTimeout || defaultTimeout <= 0 {
		t.Errorf("default timeout %v", s.timeout)
	}
	_, err := get(t, mustBuild(t, fmt.Sprintf(`{url: "%s", timeout: 50ms}`, srv.URL)), nil)
	se := stepErr(t, err)
	if se.Class != "timeout" || se.Permanent || !strings.Contains(err.Error(), "within 50ms") || !strings.Contains(err.Error(), "'timeout'") {
		t.Errorf("%#v %v", se, err)
	}
	// A stalled body is bounded too.
	stall := server(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.Write([]byte("part"))
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	_, err = get(t, mustBuild(t, fmt.Sprintf(`{url: "%s", timeout: 50ms}`, stall.URL)), nil)
	if se := stepErr(t, err); se.Class != "timeout" || !strings.Contains(err.Error(), "within 50ms") {
		t.Errorf("stalled body: %v", err)
	}
	if _, err := build(t, `{url: "http://x", timeout: 0s}`); err == nil || !strings.Contains(err.Error(), "above zero") {
		t.Errorf("timeout 0: %v", err)
	}
}

// A redirect status that cannot be followed is no success (httpx's
// raise_for_status raises on it), unless the person asked for statuses as
// data.
func TestRedirectWithoutLocation(t *testing.T) {
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/304":
			w.WriteHeader(http.StatusNotModified)
		default:
			w.WriteHeader(http.StatusFound)
			w.Write([]byte("nowhere"))
		}
	})
	_, err := get(t, mustBuild(t, fmt.Sprintf(`url: "%s/302"`, srv.URL)), nil)
	if se := stepErr(t, err); se.Class != "redirects" || !se.Permanent || !strings.Contains(err.Error(), "no Location") {
		t.Errorf("302 without Location: %#v %v", se, err)
	}
	for _, with := range []string{"raise_for_status: false", "follow_redirects: false"} {
		m, err := get(t, mustBuild(t, fmt.Sprintf("url: \"%s/302\"\n%s", srv.URL, with)), nil)
		if err != nil || m["status"] != int64(302) {
			t.Errorf("%s: %v %v", with, m, err)
		}
	}
	m, err := get(t, mustBuild(t, fmt.Sprintf(`url: "%s/304"`, srv.URL)), nil)
	if err != nil || m["status"] != int64(304) {
		t.Errorf("304: %v %v", m, err)
	}
}

// An empty body is not JSON (httpx's .json() raises), except where HTTP
// says there is no body.
func TestEmptyJSONBody(t *testing.T) {
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/503":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "/head":
			w.Write([]byte(`{"a": 1}`))
		}
	})
	for _, decode := range []string{"json", "auto"} {
		_, err := get(t, mustBuild(t, fmt.Sprintf(`{url: "%s/empty", decode: %s}`, srv.URL, decode)), nil)
		if se := stepErr(t, err); se.Class != "decode" || !se.Permanent || !strings.Contains(err.Error(), "empty body") {
			t.Errorf("%s: %#v %v", decode, se, err)
		}
	}
	for _, with := range []string{`{url: "%s/204", decode: json}`, `{url: "%s/head", decode: json, method: HEAD}`, `{url: "%s/503", decode: json, raise_for_status: false}`} {
		m, err := get(t, mustBuild(t, fmt.Sprintf(with, srv.URL)), nil)
		if err != nil || m["body"] != nil {
			t.Errorf("%s: %v %v", with, m, err)
		}
	}
}

// Integers of any size keep every digit, and a number past float64 stays a
// number: a JSON sink writes both back exactly as the server sent them.
func TestJSONNumbersExact(t *testing.T) {
	const doc = `{"id":123456789012345678901234567890,"u":18446744073709551615,"big":1e400,"n":-9223372036854775808,"f":0.5}`
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(doc))
	})
	m, err := get(t, mustBuild(t, fmt.Sprintf(`url: "%s"`, srv.URL)), nil)
	if err != nil {
		t.Fatal(err)
	}
	body := m["body"].(map[string]any)
	want := map[string]any{"id": json.Number("123456789012345678901234567890"), "u": json.Number("18446744073709551615"),
		"big": json.Number("1e400"), "n": int64(-9223372036854775808), "f": 0.5}
	if !reflect.DeepEqual(body, want) {
		t.Errorf("body = %#v", body)
	}
	out, err := json.Marshal(body)
	if err != nil || string(out) != `{"big":1e400,"f":0.5,"id":123456789012345678901234567890,"n":-9223372036854775808,"u":18446744073709551615}` {
		t.Errorf("written back: %s %v", out, err)
	}
}

// net/http sends the previous URL as Referer, query and all: across origins
// that would hand an api_key in the URL to the other host.
func TestRedirectRefererStaysHome(t *testing.T) {
	var mu sync.Mutex
	referers := map[string]string{}
	other := server(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		referers[r.URL.Path] = r.Header.Get("Referer")
		mu.Unlock()
	})
	origin := server(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		referers[r.URL.Path] = r.Header.Get("Referer")
		mu.Unlock()
		switch r.URL.Path {
		case "/cross":
			http.Redirect(w, r, other.URL+"/away", http.StatusFound)
		case "/same":
			http.Redirect(w, r, "/home", http.StatusFound)
		}
	})
	s := mustBuild(t, fmt.Sprintf(`url: "%s/${ item }?api_key=${ env.API_TOKEN }"`, origin.URL))
	for _, p := range []string{"cross", "same"} {
		if _, err := get(t, s, p); err != nil {
			t.Fatal(err)
		}
	}
	referer := func(path string) string {
		mu.Lock()
		defer mu.Unlock()
		return referers[path]
	}
	if r := referer("/away"); r != "" {
		t.Errorf("the other host got Referer %q", r)
	}
	if r := referer("/home"); !strings.HasSuffix(r, "/same?api_key=s3cr3t-token-value") {
		t.Errorf("within the origin, Referer %q", r)
	}
	// A Referer the pipeline sets is its own choice.
	s = mustBuild(t, fmt.Sprintf(`{url: "%s/cross", headers: {Referer: "https://example.org/"}}`, origin.URL))
	if _, err := get(t, s, nil); err != nil {
		t.Fatal(err)
	}
	if r := referer("/away"); r != "https://example.org/" {
		t.Errorf("explicit Referer became %q", r)
	}
}

// A stage's own timeout replaces the 30s default when fetch's timeout is
// not written, longer or shorter; a written one is kept.
func TestStageTimeoutReplacesTheDefault(t *testing.T) {
	for _, tc := range []struct {
		with  string
		stage time.Duration
		want  time.Duration
	}{
		{`url: "http://127.0.0.1/"`, 0, defaultTimeout},
		{`url: "http://127.0.0.1/"`, 5 * time.Minute, 5 * time.Minute},
		{`url: "http://127.0.0.1/"`, time.Second, time.Second},
		{`{url: "http://127.0.0.1/", timeout: 2s}`, 5 * time.Minute, 2 * time.Second},
	} {
		env := &steps.Env{Workers: 1, Timeout: tc.stage}
		v, err := steptest.Build(t, Register, "fetch", steptest.Node(t, tc.with), env)
		if err != nil {
			t.Fatal(err)
		}
		s := v.(*step)
		if s.timeout != tc.want {
			t.Errorf("%s with a stage timeout of %s: request timeout %s, want %s", tc.with, tc.stage, s.timeout, tc.want)
		}
		s.Close()
	}
}

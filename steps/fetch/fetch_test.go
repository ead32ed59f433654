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
	"reflect"
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

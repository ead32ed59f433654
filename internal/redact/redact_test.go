package redact

import (
	"encoding/base64"
	"encoding/json"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"
)

const secret = `p&ss<w>rd "quoted" /slash/ é ✓ 𝄞 + space`

// leaks fails if out holds the secret, any of its forms, or any start or
// end of them of MinFragment bytes or more... except where out is meant to
// keep text of its own that happens to match.
func leaks(t *testing.T, what, out string) {
	t.Helper()
	for _, f := range Forms(secret) {
		if strings.Contains(out, f) {
			t.Errorf("%s: %q still holds the form %q", what, out, f)
		}
	}
	if strings.Contains(out, secret[:8]) {
		t.Errorf("%s: %q still holds the secret's first 8 bytes", what, out)
	}
}

func TestEveryFormHidden(t *testing.T) {
	r := New([]string{secret, ""})
	goJSON, _ := json.Marshal(map[string]string{"token": secret})
	basic := base64.StdEncoding.EncodeToString([]byte("user:" + secret))
	for what, text := range map[string]string{
		"literal":             "token=" + secret + ";",
		"Go JSON (HTML-safe)": string(goJSON),
		"JSON without HTML escapes": func() string {
			var b strings.Builder
			e := json.NewEncoder(&b)
			e.SetEscapeHTML(false)
			e.Encode(secret)
			return b.String()
		}(),
		"Python json.dumps":  `{"token": "` + asciiJSON(secret) + `"}`,
		"query":              "GET /x?q=" + url.QueryEscape(secret) + "&n=1",
		"query, lower hex":   "GET /x?q=" + strings.ToLower(url.QueryEscape(secret)),
		"path":               "GET /x/" + url.PathEscape(secret),
		"basic auth":         "Authorization: Basic " + basic,
		"base64 url, offset": base64.RawURLEncoding.EncodeToString([]byte("a" + secret + "zz")),
		"base64 at offset 0": base64.StdEncoding.EncodeToString([]byte(secret)),
	} {
		out := r.String(text)
		if !strings.Contains(out, Mark) {
			t.Errorf("%s: nothing hidden in %q", what, out)
		}
		leaks(t, what, out)
	}
}

// A numeric-looking secret is text; an expression can still make a number
// of it, which must not print either.
func TestNumbersAndValues(t *testing.T) {
	r := New([]string{"00123456", "9007199254740993"})
	v := r.Value(map[string]any{"pin": "00123456", "n": int64(9007199254740993), "f": 42.5, "00123456": []any{"x00123456y"}})
	m := v.(map[string]any)
	if m["pin"] != Mark || m["n"] != Mark || m["f"] != 42.5 {
		t.Errorf("Value = %#v", v)
	}
	if l, ok := m[Mark].([]any); !ok || l[0] != "x***y" {
		t.Errorf("map key or list element not redacted: %#v", v)
	}
}

// A preview cut before redaction keeps the start of a secret; a tail cut
// keeps its end.
func TestCutsHideFragments(t *testing.T) {
	const s = "s3cr3t-T0KEN-value-0123456789"
	r := New([]string{s})
	for _, c := range []struct{ in, want string }{
		{"item 4 (map[auth:Bearer " + s[:20] + "...)", "item 4 (map[auth:Bearer ***...)"},
		{"tail: …" + s[9:] + "\nnext", "tail: …***\nnext"},
		{"body: " + s[:4] + "...", "body: ***..."},
		{"body: " + s[:3] + "...", "body: s3c..."}, // too short to say anything
		{"an ordinary sentence... goes on", "an ordinary sentence... goes on"},
		{"whole " + s + "... and more", "whole ***... and more"},
		{"json " + strings.ReplaceAll(url.QueryEscape(s), "-", "-")[:12] + "…", "json ***…"},
	} {
		if got := r.String(c.in); got != c.want {
			t.Errorf("String(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestNothingToHide(t *testing.T) {
	var nilR *Redactor
	for _, r := range []*Redactor{nilR, New(nil), New([]string{""})} {
		if r.Active() || r.String("a...b") != "a...b" || r.Value(int64(3)) != int64(3) {
			t.Errorf("%#v changes text", r)
		}
	}
}

// The fragment search agrees with the obvious quadratic one.
func TestFragmentsAgreeWithBruteForce(t *testing.T) {
	brute := func(forms []string, text string, before bool) int {
		best := 0
		for _, f := range forms {
			for k := MinFragment; k < len(f) && k <= len(text); k++ {
				if (before && strings.HasSuffix(text, f[:k])) || (!before && strings.HasPrefix(text, f[len(f)-k:])) {
					best = max(best, k)
				}
			}
		}
		return best
	}
	rng := rand.New(rand.NewPCG(1, 2))
	word := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = "ab&"[rng.IntN(3)]
		}
		return string(b)
	}
	for range 2000 {
		r := New([]string{word(1 + rng.IntN(12)), word(1 + rng.IntN(12))})
		text := word(rng.IntN(16))
		if got, want := r.fragmentBefore(text), brute(r.forms, text, true); got != want {
			t.Fatalf("fragmentBefore(%q) with %q = %d, want %d", text, r.forms, got, want)
		}
		if got, want := r.fragmentAfter(text), brute(r.forms, text, false); got != want {
			t.Fatalf("fragmentAfter(%q) with %q = %d, want %d", text, r.forms, got, want)
		}
	}
}

func BenchmarkStringLongSecretWithCuts(b *testing.B) {
	jwt := strings.Repeat("eyJhbGciOiJIUzI1NiJ9.", 40)
	r := New([]string{jwt})
	text := strings.Repeat("item preview "+jwt[:50]+"... and more ", 20)
	for b.Loop() {
		r.String(text)
	}
}

// A secret written in pieces, from a worker's output say, is hidden whole.
func TestWriterJoinsPieces(t *testing.T) {
	const s = "s3cr3t-T0KEN"
	var out strings.Builder
	w := New([]string{s}).Writer(&out)
	for _, p := range []string{"line one s3c", "r3t-T0", "KEN end\nnext ", "s3cr3t-T0KEN", "\nlast s3cr"} {
		w.Write([]byte(p))
	}
	if out.String() != "line one *** end\nnext ***\n" {
		t.Errorf("before Flush: %q", out.String())
	}
	w.(*Writer).Flush()
	if got := out.String(); got != "line one *** end\nnext ***\nlast ***" {
		t.Errorf("after Flush: %q", got)
	}
	out.Reset()
	w = New([]string{s}).Writer(&out)
	w.Write([]byte(strings.Repeat("x", maxLine) + "s3cr3t-"))
	w.Write([]byte("T0KEN\n"))
	if got := out.String(); strings.Contains(got, "s3cr") || !strings.HasSuffix(got, "x***\n") {
		t.Errorf("a long line split inside the secret: %q", got[len(got)-20:])
	}
	if New(nil).Writer(&out) != &out {
		t.Error("nothing to hide, yet the writer is wrapped")
	}
}

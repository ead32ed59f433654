package cachekey

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func build(t *testing.T, in Input) Key {
	t.Helper()
	k, err := Build(in, nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// The digest of a fixed input is fixed: a change here invalidates every
// cache in the field, so it must come with a FormatVersion bump.
func TestKeyStable(t *testing.T) {
	in := Input{
		Kind:    "fetch",
		Options: map[string]any{"url": "http://x/${ item }", "method": "GET", "max_bytes": 10485760, "headers": map[string]any{"Accept": "application/json"}},
		Item:    map[string]any{"id": 7, "tags": []any{"a", "b"}},
		Env:     map[string]string{"REGION": "eu"},
		Salt:    "v2",
	}
	const want = "a73b8e24cb39920a82a0309eb6ce460578d42d27d795968ae8a2bee00130035d"
	for range 20 { // map order varies from run to run
		if got := build(t, in).Digest; got != want {
			t.Fatalf("digest %s, want %s", got, want)
		}
	}
}

func TestKeyCanonical(t *testing.T) {
	base := build(t, Input{Kind: "compute", Options: map[string]any{"n": 1}, Item: map[string]any{"a": 1, "b": "<x>"}})
	var fromJSON any
	d := json.NewDecoder(strings.NewReader(`{"b":"<x>","a":1.0}`))
	d.UseNumber()
	d.Decode(&fromJSON)
	same := []Input{
		{Kind: "compute", Options: map[string]any{"n": 1.0}, Item: fromJSON},
		{Kind: "compute", Options: map[string]any{"n": int64(1)}, Item: map[string]any{"b": "<x>", "a": float64(1)}},
		{Kind: "compute", Options: map[string]any{"n": 1, "workers": 4, "rate": "10/s", "timeout": time.Second, "on_error": "skip", "order": "completion", "retry": map[string]any{"attempts": 5}}, Item: map[string]any{"a": 1, "b": "<x>"}},
		{Kind: "compute", Options: map[string]any{"n": 1}, Item: struct {
			A int    `json:"a"`
			B string `json:"b"`
		}{1, "<x>"}},
	}
	for i, in := range same {
		if got := build(t, in); got.Digest != base.Digest {
			t.Errorf("input %d: key differs: %s", i, Diff(base.Parts, got.Parts))
		}
	}
	differ := []Input{
		{Kind: "exec", Options: map[string]any{"n": 1}, Item: map[string]any{"a": 1, "b": "<x>"}},
		{Kind: "compute", Options: map[string]any{"n": 2}, Item: map[string]any{"a": 1, "b": "<x>"}},
		{Kind: "compute", Options: map[string]any{"n": 1}, Item: map[string]any{"a": 1.5, "b": "<x>"}},
		{Kind: "compute", Options: map[string]any{"n": 1}, Item: map[string]any{"a": 1, "b": "<x>"}, Salt: "s"},
		{Kind: "compute", Options: map[string]any{"n": 1}, Item: map[string]any{"a": 1, "b": "<x>"}, Env: map[string]string{"X": ""}},
	}
	for i, in := range differ {
		if got := build(t, in); got.Digest == base.Digest {
			t.Errorf("input %d: same key as the base", i)
		}
	}
	if string(base.Parts.Item) != `{"a":1,"b":"<x>"}` {
		t.Errorf("canonical item %s", base.Parts.Item)
	}
}

// Only declared variables count, and their values are never kept in clear;
// neither are secrets in options or items.
func TestKeyEnvAndSecrets(t *testing.T) {
	in := Input{
		Kind:    "fetch",
		Options: map[string]any{"headers": map[string]any{"Authorization": "Bearer tok-123"}},
		Item:    map[string]any{"q": "tok-123 inside"},
		Env:     map[string]string{"API_REGION": "eu-west-1"},
		Secrets: []string{"tok-123"},
	}
	k := build(t, in)
	parts, _ := json.Marshal(k.Parts)
	for _, leak := range []string{"tok-123", "eu-west-1"} {
		if strings.Contains(string(parts), leak) {
			t.Errorf("parts hold %q in clear: %s", leak, parts)
		}
	}
	in.Env = map[string]string{"API_REGION": "us-east-1"}
	k2 := build(t, in)
	ch := Diff(k.Parts, k2.Parts)
	if len(ch) != 1 || ch[0].Part != "env" || ch[0].Name != "API_REGION" || strings.Contains(ch[0].String(), "east") {
		t.Errorf("env change: %+v", ch)
	}
	in.Options = map[string]any{"headers": map[string]any{"Authorization": "Bearer tok-456"}}
	in.Secrets = []string{"tok-456"}
	ch = Diff(k2.Parts, build(t, in).Parts)
	var names []string
	for _, c := range ch {
		names = append(names, c.Part+" "+c.Name)
	}
	// The item still holds the old token, in clear to nobody: unchanged.
	if strings.Join(names, ",") != "option headers.Authorization" {
		t.Errorf("secret change: %v", ch)
	}
}

func TestDiffText(t *testing.T) {
	was := build(t, Input{Kind: "exec", Options: map[string]any{"cmd": []any{"echo", "a"}, "dir": "/tmp"}, Item: 1, Salt: ""})
	now := build(t, Input{Kind: "exec", Options: map[string]any{"cmd": []any{"echo", "b"}, "shell": true}, Item: 2, Salt: "x"})
	got := Describe(Diff(was.Parts, now.Parts))
	want := `salt changed: "" -> x
option cmd changed: ["echo","a"] -> ["echo","b"]
option dir removed (was "/tmp")
option shell added: true
item changed: 1 -> 2
`
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

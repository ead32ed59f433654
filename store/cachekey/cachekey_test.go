package cachekey

import (
	"bytes"
	"encoding/json"
	"math"
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

// The digest built from Parts' fields equals the digest of Parts as
// canonical JSON (the definition, and what every stored key was made
// with), whatever the parts hold; prepared options give the same key.
func TestDigestIsCanonicalParts(t *testing.T) {
	inputs := []Input{
		{Kind: "compute", Options: map[string]any{"value": "${ item * item }"}, Item: 3},
		{Kind: "fetch", Options: map[string]any{"url": "http://x/${ item }", "timeout": "10s", "max_bytes": int64(1 << 20), "headers": map[string]any{"A": "<b>&"}, "n": 1.5, "list": []any{1, "x", nil, true}}, Item: map[string]any{"u": "é\u2028", "n": 1e21}},
		{Kind: "k", Options: nil, Item: nil, Salt: "v2", Env: map[string]string{"LANG": "C", "E": ""}},
		{Kind: "k", Options: map[string]any{"workers": 4, "s": "has s3cret in it"}, Item: "s3cret", Secrets: []string{"s3cret"}},
		// Numbers of every Go type an item holds, spelled as the JSON
		// round trip spells them.
		{Kind: "n", Options: map[string]any{"f": 2.5, "i": 7}, Item: []any{int64(-3), 0, -0.0, 0.1, 1e19, 1e21, 1e-7, float64(1 << 63), 9.223372036854775e18, -123456789.0, int64(math.MaxInt64), uint64(math.MaxUint64), float32(1.1), json.Number("1.50")}},
		{Kind: "n", Item: 12.0},
		{Kind: "s", Item: map[string]any{"plain": "a b<c>&d~", "quote": `a"b\c`, "ctl": "a\tb\x01\x7f", "u": "é\u2028"}},
		{Kind: "bad\xff", Options: map[string]any{"k\xfe": "v\xff\xfe", "k\xff": []any{"\xc3"}, "k": map[string]any{"\xe2\x82": 1}}, Item: "\xff", Salt: "\xff", Env: map[string]string{"E\xff": "x"}},
	}
	for i, in := range inputs {
		k, err := Build(in, nil)
		if err != nil {
			t.Fatal(err)
		}
		p := k.Parts
		p.Item = nil
		if want := Digest(Canonical(p)); k.Digest != want {
			t.Errorf("input %d: digest %s, canonical parts %s", i, k.Digest, want)
		}
		if want := Digest(roundTrip(t, in.Item)); p.ItemDigest != want {
			t.Errorf("input %d: item digest %s, of the item's JSON round trip %s", i, p.ItemDigest, want)
		}
		prep, err := PrepareOptions(in.Options, in.Secrets)
		if err != nil {
			t.Fatal(err)
		}
		in.Options, in.Prepared = prep, true
		if k2, err := Build(in, nil); err != nil || k2.Digest != k.Digest {
			t.Errorf("input %d: prepared options give %s, want %s (%v)", i, k2.Digest, k.Digest, err)
		}
		if in.Encoded, err = EncodeOptions(prep); err != nil {
			t.Fatal(err)
		}
		k3, err := Build(in, nil)
		if err != nil || k3.Digest != k.Digest {
			t.Errorf("input %d: encoded options give %s, want %s (%v)", i, k3.Digest, k.Digest, err)
		}
		// The stored parts are json.Marshal's, whether the options were
		// encoded for the stage or not.
		want, err := json.Marshal(k3.Parts)
		if err != nil {
			t.Fatal(err)
		}
		for _, key := range []Key{k, k3} {
			if got, err := key.PartsJSON(); err != nil || !bytes.Equal(got, want) {
				t.Errorf("input %d: parts JSON\n%s\nwant\n%s (%v)", i, got, want, err)
			}
		}
	}
	// With files: a digester that needs no disk.
	k, err := Build(Input{Kind: "analyze-logs", Files: []string{"/a", "/b\xff"}, Item: "/a"}, fakeFiles{})
	if err != nil {
		t.Fatal(err)
	}
	p := k.Parts
	p.Item = nil
	if want := Digest(Canonical(p)); k.Digest != want {
		t.Errorf("with files: digest %s, canonical parts %s", k.Digest, want)
	}
}

// roundTrip is v's canonical JSON by the definition: the values JSON
// decodes to as they are, any other through json.Marshal and back.
func roundTrip(t *testing.T, v any) []byte {
	t.Helper()
	var c func(v any) any
	c = func(v any) any {
		switch x := v.(type) {
		case nil, bool, string:
			return x
		case json.Number:
			n, err := canonicalNumber(x)
			if err != nil {
				t.Fatal(err)
			}
			return n
		case []any:
			out := make([]any, len(x))
			for i, e := range x {
				out[i] = c(e)
			}
			return out
		case map[string]any:
			out := map[string]any{}
			for k, e := range x {
				out[k] = c(e)
			}
			return out
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		var back any
		if err := d.Decode(&back); err != nil {
			t.Fatal(err)
		}
		return c(back)
	}
	var buf bytes.Buffer
	writeCanonical(&buf, c(v))
	return buf.Bytes()
}

type fakeFiles struct{}

func (fakeFiles) FileDigest(path string) (string, error) { return Digest([]byte(path)), nil }

// BenchmarkBuild: the key of one item of a fetch stage, its options
// canonical per item (as before PrepareOptions) or once (prepared), and
// the digest by the definition (a JSON round trip of the parts) beside the
// one built from the fields.
func BenchmarkBuild(b *testing.B) {
	opts := map[string]any{"url": "http://x/${ item }", "method": "GET", "timeout": "10s", "max_bytes": int64(1 << 20),
		"headers": map[string]any{"Accept": "application/json"}, "decode": "json", "follow": true, "retries": int64(3)}
	item := map[string]any{"id": 12345, "name": "something"}
	b.Run("per-item", func(b *testing.B) {
		for range b.N {
			if _, err := Build(Input{Kind: "fetch", Options: opts, Item: item}, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	prep, _ := PrepareOptions(opts, nil)
	b.Run("prepared", func(b *testing.B) {
		for range b.N {
			if _, err := Build(Input{Kind: "fetch", Options: prep, Prepared: true, Item: item}, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	k, _ := Build(Input{Kind: "fetch", Options: prep, Prepared: true, Item: item}, nil)
	enc, _ := EncodeOptions(prep)
	b.Run("encoded", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := Build(Input{Kind: "fetch", Options: prep, Prepared: true, Encoded: enc, Item: item}, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("digest-fields", func(b *testing.B) {
		var buf bytes.Buffer
		for range b.N {
			buf.Reset()
			k.Parts.writeDigested(&buf, nil)
			_ = Digest(buf.Bytes())
		}
	})
	b.Run("digest-roundtrip", func(b *testing.B) {
		for range b.N {
			p := k.Parts
			p.Item = nil
			_ = Digest(Canonical(p))
		}
	})
}

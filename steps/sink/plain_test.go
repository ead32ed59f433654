package sink

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
)

// marshalPlain writes exactly what encoding/json writes (without HTML
// escaping), and declines what it does not handle.
func TestMarshalPlain(t *testing.T) {
	vals := []any{0, 1, -1, 42, math.MaxInt64, math.MinInt64, int64(7), int64(math.MinInt64),
		true, false, nil, "", "a", "hello world", "<b>&amp;</b>", "~!@#$%^&*()_+{}|:?><,./;'[]=-`",
		strings.Repeat("x", 256),
		map[string]any{}, map[string]any{"a": 1},
		map[string]any{"file": "a.log", "path": "/l/a.log", "lines": int64(12), "errors": int64(0), "warnings": int64(3)},
		map[string]any{"b": nil, "a": true, "B": "x", "_": -1, "a b": "", "~": false}}
	for b := 0; b < 256; b++ {
		vals = append(vals, "a"+string(rune(b))+"z", "a"+string([]byte{byte(b)})+"z")
	}
	for _, v := range vals {
		var fast bytes.Buffer
		fast.WriteString("prefix")
		ok := marshalPlain(&fast, v)
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			t.Fatal(err)
		}
		w := strings.TrimSuffix(want.String(), "\n")
		if !ok {
			if fast.String() != "prefix" {
				t.Errorf("%#v: declined but wrote %q", v, fast.String())
			}
			continue
		}
		if got := strings.TrimPrefix(fast.String(), "prefix"); got != w {
			t.Errorf("%#v: wrote %s, encoding/json writes %s", v, got, w)
		}
	}
	// What it must leave to encoding/json.
	big := map[string]any{}
	for i := range 17 {
		big[fmt.Sprint(i)] = i
	}
	for _, v := range []any{1.5, []any{1}, "quote\"", "back\\slash", "tab\t", "é", strings.Repeat("x", 257),
		map[string]any{"a": 1, "b": 1.5}, map[string]any{"a": map[string]any{}}, map[string]any{"é": 1},
		map[string]any{"a": "x", "z": "<\n>"}, map[string]any{"a": []any{}}, big} {
		var b bytes.Buffer
		if marshalPlain(&b, v) || b.Len() != 0 {
			t.Errorf("%#v: taken by the plain path (%q)", v, b.String())
		}
	}
}

func BenchmarkMarshalInt(b *testing.B) {
	var buf bytes.Buffer
	for i := 0; i < b.N; i++ {
		buf.Reset()
		_ = marshal(&buf, i)
	}
}

// BenchmarkMarshalRecord is an analyze-logs result, the sink's work per file.
func BenchmarkMarshalRecord(b *testing.B) {
	var buf bytes.Buffer
	m := map[string]any{"file": "app-0042.log", "path": "/var/log/app/app-0042.log", "lines": int64(34), "errors": int64(1), "warnings": int64(2)}
	for b.Loop() {
		buf.Reset()
		if err := marshal(&buf, m); err != nil {
			b.Fatal(err)
		}
	}
}

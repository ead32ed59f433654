package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestValueRoundTrip(t *testing.T) {
	cases := []any{
		nil, true, false,
		int64(0), int64(-7), int64(math.MaxInt64), int64(math.MinInt64),
		3.0, -0.5, 1e300, 1.5e-10, float64(1 << 60),
		// Numbers no int64 or float64 holds keep their digits.
		json.Number("12345678901234567890"), json.Number("-123456789012345678901234567890"), json.Number("1e400"), json.Number("-2.5E+999"),
		"", "plain", "quote\" back\\ slash", "tab\tnl\ncr\r\x00\x1f", "héllo, 世界 🎉", "\u2028\u2029",
		[]any{}, []any{int64(1), "two", 3.5, nil, []any{true}},
		map[string]any{}, map[string]any{"a": int64(1), "b": map[string]any{"c": []any{2.0}}},
	}
	for _, v := range cases {
		b, err := AppendValue(nil, v)
		if err != nil {
			t.Fatalf("encode %#v: %v", v, err)
		}
		if !json.Valid(b) {
			t.Fatalf("encode %#v: invalid JSON %s", v, b)
		}
		got, err := ParseValue(b)
		if err != nil {
			t.Fatalf("parse %s: %v", b, err)
		}
		if !reflect.DeepEqual(got, v) {
			t.Errorf("round trip of %#v gave %#v (wire %s)", v, got, b)
		}
	}
}

func TestValueNormalizesOtherTypes(t *testing.T) {
	type point struct {
		X int `json:"x"`
	}
	cases := []struct {
		in   any
		want any
	}{
		{int(5), int64(5)},
		{uint64(math.MaxUint64), float64(math.MaxUint64)},
		{float32(2), 2.0},
		{[]string{"a", "b"}, []any{"a", "b"}},
		{map[string]string{"k": "v"}, map[string]any{"k": "v"}},
		{point{X: 3}, map[string]any{"x": int64(3)}},
		{json.Number("12"), int64(12)},
		{"bad \xff utf8", "bad \ufffd utf8"},
	}
	for _, c := range cases {
		b, err := AppendValue(nil, c.in)
		if err != nil {
			t.Fatalf("encode %#v: %v", c.in, err)
		}
		got, err := ParseValue(b)
		if err != nil {
			t.Fatalf("parse %s: %v", b, err)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%#v: got %#v, want %#v", c.in, got, c.want)
		}
	}
}

func TestValueErrors(t *testing.T) {
	for _, v := range []any{math.NaN(), math.Inf(1), map[string]any{"x": []any{math.Inf(-1)}}, make(chan int),
		json.Number("Inf"), json.Number("0x10"), json.Number("1_000"), json.Number("01"), json.Number("1."), json.Number("")} {
		if _, err := AppendValue(nil, v); err == nil {
			t.Errorf("encoding %#v: want an error", v)
		}
	}
	for _, s := range []string{``, `[`, `{"a"}`, `[1,]`, `01`, `"\x01"`, `"\q"`, `tru`, `1 2`, `{1:2}`, `-`, `"abc`} {
		if _, err := ParseValue([]byte(s)); err == nil {
			t.Errorf("parsing %q: want an error", s)
		}
	}
}

func TestParseValueMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{
		`"\u00e9\ud83c\udf89\/"`, `"\ud800"`, `  [ 1 , 2.5e3 , -0 , {"k" : [ ] } ]  `,
		`-9223372036854775808`, `1E2`, `1e-400`,
	} {
		got, err := ParseValue([]byte(s))
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		var want any
		if err := json.Unmarshal([]byte(s), &want); err != nil {
			t.Fatal(err)
		}
		// encoding/json reads every number as float64; compare in that form.
		if !reflect.DeepEqual(floats(got), want) {
			t.Errorf("%s: got %#v, encoding/json %#v", s, got, want)
		}
	}
}

func floats(v any) any {
	switch x := v.(type) {
	case int64:
		return float64(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = floats(e)
		}
		return out
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			out[k] = floats(e)
		}
		return out
	}
	return v
}

func FuzzValue(f *testing.F) {
	for _, s := range []string{`null`, `[1,2.0,"x"]`, `{"a":{"b":[true,false]}}`, `"\u00e9"`, `-1.5e7`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := ParseValue(data)
		if err != nil {
			return
		}
		b, err := AppendValue(nil, v)
		if err != nil {
			t.Fatalf("re-encoding %#v: %v", v, err)
		}
		v2, err := ParseValue(b)
		if err != nil {
			t.Fatalf("re-parsing %s: %v", b, err)
		}
		if !reflect.DeepEqual(v, v2) {
			t.Fatalf("%s -> %#v -> %s -> %#v", data, v, b, v2)
		}
	})
}

func TestMessagesRoundTrip(t *testing.T) {
	msgs := []Message{
		&Hello{Version: Version, File: "p.yaml", Dir: "/tmp/x", Source: "version: 1\n", Stage: "work",
			Vars: map[string]any{"n": int64(3), "ratio": 2.0, "names": []any{"a"}}, Workers: 4, Worker: 2, Heartbeat: time.Second, Memory: 1 << 29},
		&Ready{Version: Version, PID: 42},
		&Ready{Version: Version, PID: 43, Err: &ErrorInfo{Message: "unknown stage", Class: "error", Permanent: true}},
		&Items{{ID: 1, Index: 0, Value: "a"}, {ID: 2, Index: 7, Value: map[string]any{"k": []any{1.5}}}, {ID: 3, Index: 8, Value: nil}},
		&Items{},
		&Results{Busy: 1500 * time.Microsecond, Results: []Result{
			{ID: 1, Value: int64(1)},
			{ID: 2, Err: &ErrorInfo{Message: "HTTP 429", Class: "http_429", RetryAfter: 2 * time.Second}},
			{ID: 3, Value: nil},
		}},
		&Results{},
		&Cancel{4, 5, 6},
		&Cancel{},
		&Heartbeat{Done: 10, Running: 11},
		&Shutdown{},
	}
	for _, compact := range []bool{false, true} {
		var stream bytes.Buffer
		w := NewWriter(&stream)
		if compact {
			w.Compact()
		}
		for _, m := range msgs {
			if err := w.Write(m); err != nil {
				t.Fatalf("write %T: %v", m, err)
			}
		}
		r := NewReader(&stream)
		for _, want := range msgs {
			got, err := r.Read()
			if err != nil {
				t.Fatalf("compact %v: read %T: %v", compact, want, err)
			}
			if hw, ok := want.(*Hello); ok && hw.Vars == nil {
				hw.Vars = map[string]any{}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("compact %v: got %#v, want %#v", compact, got, want)
			}
		}
		if _, err := r.Read(); err != io.EOF {
			t.Errorf("after the last frame: got %v, want io.EOF", err)
		}
	}
}

// The compact form carries any ID below 2^63 and any index, in any order
// (a requeued item comes before newer ones), and its values as JSON.
func TestCompactNumbers(t *testing.T) {
	items := Items{
		{ID: 1 << 62, Index: math.MinInt64, Value: int64(math.MaxInt64)},
		{ID: 1, Index: math.MaxInt64, Value: "x"},
		{ID: math.MaxInt64, Index: -1, Value: 2.0},
		{ID: 0, Index: 0, Value: []any{int64(-300), "é\n"}},
	}
	body, err := AppendCompact(nil, &items)
	if err != nil {
		t.Fatal(err)
	}
	m, err := ParseBody(body)
	if err != nil {
		t.Fatal(err)
	}
	if got := *m.(*Items); !reflect.DeepEqual(got, items) {
		t.Errorf("got %#v, want %#v", got, items)
	}
	res := &Results{Busy: -5, Results: []Result{{ID: math.MaxInt64, Value: "a"}, {ID: 3, Err: &ErrorInfo{Message: "m", Class: "c"}}, {ID: 4}}}
	if body, err = AppendCompact(nil, res); err != nil {
		t.Fatal(err)
	}
	if m, err = ParseBody(body); err != nil {
		t.Fatal(err)
	}
	if got := m.(*Results); !reflect.DeepEqual(got, res) {
		t.Errorf("got %#v, want %#v", got, res)
	}
	// Consecutive items take a byte for their ID and one for their index.
	seq := Items{{ID: 1000, Index: 5000, Raw: []byte("1")}, {ID: 1001, Index: 5001, Raw: []byte("2")}, {ID: 1002, Index: 5002, Raw: []byte("3")}}
	if body, err = AppendCompact(nil, &seq); err != nil {
		t.Fatal(err)
	}
	if want := 1 + 1 + (2 + 1 + 1) + (2 + 1 + 1) + len("1,2,3"); len(body) != want {
		t.Errorf("compact items take %d bytes (%q), want %d", len(body), body, want)
	}
}

// Corrupt compact bodies are refused with an error, without allocating
// for counts the frame cannot hold.
func TestCompactCorrupt(t *testing.T) {
	for _, body := range [][]byte{
		{'i'},
		{'i', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 2, 2, '1'}, // count 2^63-ish
		{'i', 2, 2, 2, 2, 2, '1'},     // values missing
		{'i', 1, 2, 2, '1', ',', '2'}, // a value too many
		{'i', 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, '1'}, // id 2^63
		{'i', 1, 2, 2, 0x01}, // value not JSON
		{'o'},
		{'o', 0, 1, 2, 2, '1'}, // flag 2
		{'o', 0, 1, 2, 1, '1'}, // error not an object
		{'o', 0, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},                           // ids run into the end
		{'o', 0, 1, 0x82, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0, '1'}, // varint overflow
	} {
		if m, err := ParseBody(body); err == nil {
			t.Errorf("%q parsed into %#v", body, m)
		}
	}
}

func TestRawValuesAreSentAsIs(t *testing.T) {
	raw, err := AppendValue(nil, map[string]any{"pre": "encoded"})
	if err != nil {
		t.Fatal(err)
	}
	body, err := AppendBody(nil, &Items{{ID: 9, Index: 1, Raw: raw, Value: "ignored"}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := ParseBody(body)
	if err != nil {
		t.Fatal(err)
	}
	if got := (*m.(*Items))[0].Value; !reflect.DeepEqual(got, map[string]any{"pre": "encoded"}) {
		t.Errorf("got %#v", got)
	}
}

func TestEncodingErrorLeavesStreamClean(t *testing.T) {
	var stream bytes.Buffer
	w := NewWriter(&stream)
	err := w.Write(&Items{{ID: 1, Index: 3, Value: math.NaN()}})
	if err == nil || !strings.Contains(err.Error(), "item 3") {
		t.Fatalf("want an error naming item 3, got %v", err)
	}
	if stream.Len() != 0 {
		t.Fatalf("a failed encode wrote %d bytes", stream.Len())
	}
}

func TestCorruptStreams(t *testing.T) {
	var ok bytes.Buffer
	if err := NewWriter(&ok).Write(&Cancel{1, 2}); err != nil {
		t.Fatal(err)
	}
	frame := ok.Bytes()
	cases := map[string][]byte{
		"cut inside a frame": frame[:len(frame)-1],
		"cut inside length":  frame[:2],
		"zero length":        {0, 0, 0, 0},
		"huge length":        {0xff, 0xff, 0xff, 0xff},
		"unknown type":       {0, 0, 0, 3, 'Z', '{', '}'},
		"bad payload":        {0, 0, 0, 3, 'C', '[', '{'},
		"trailing data":      {0, 0, 0, 4, 'C', '[', ']', 'x'},
	}
	for name, data := range cases {
		_, err := NewReader(bytes.NewReader(data)).Read()
		if err == nil || err == io.EOF {
			t.Errorf("%s: want an error, got %v", name, err)
		}
		if name == "cut inside a frame" && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%s: want io.ErrUnexpectedEOF, got %v", name, err)
		}
	}
}

func BenchmarkItemsRoundTrip(b *testing.B) {
	items := make(Items, 256)
	for i := range items {
		items[i] = Item{ID: uint64(i + 1), Index: int64(i), Value: map[string]any{"n": int64(i), "name": "item"}}
	}
	b.ReportAllocs()
	var buf []byte
	for b.Loop() {
		var err error
		buf, err = AppendBody(buf[:0], &items)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ParseBody(buf); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(items))/b.Elapsed().Seconds(), "items/s")
}

// FuzzParseBody: a corrupt or hostile frame is an error, never a panic, and
// what parses encodes again.
func FuzzParseBody(f *testing.F) {
	for _, m := range []Message{
		&Hello{Version: 1, Stage: "s", Vars: map[string]any{"a": int64(1)}},
		&Ready{PID: 1}, &Items{{ID: 1, Index: 2, Value: "x"}},
		&Results{Busy: 5, Results: []Result{{ID: 1, Value: 1.5}, {ID: 2, Err: &ErrorInfo{Message: "m"}}}},
		&Cancel{1}, &Heartbeat{Done: 1}, &Shutdown{},
	} {
		b, err := AppendBody(nil, m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := ParseBody(body)
		if err != nil {
			return
		}
		if _, err := AppendBody(nil, m); err != nil {
			t.Fatalf("%T parsed from %q does not encode: %v", m, body, err)
		}
	})
}

// A reader told to reuse its memory gives each frame's items and results
// whole, though the slices of one are the next one's.
func TestReaderReuse(t *testing.T) {
	for _, compact := range []bool{false, true} {
		testReaderReuse(t, compact)
	}
}

func testReaderReuse(t *testing.T, compact bool) {
	var stream bytes.Buffer
	w := NewWriter(&stream)
	if compact {
		w.Compact()
	}
	for i := range 3 {
		items := Items{}
		results := &Results{Busy: time.Duration(i)}
		for j := range 3 - i {
			items = append(items, Item{ID: uint64(j), Index: int64(i), Value: fmt.Sprint(i, j)})
			results.Results = append(results.Results, Result{ID: uint64(j), Value: int64(i * j)})
		}
		if err := w.Write(&items); err != nil {
			t.Fatal(err)
		}
		if err := w.Write(results); err != nil {
			t.Fatal(err)
		}
	}
	r := NewReader(&stream)
	r.Reuse()
	for i := range 3 {
		m, err := r.Read()
		if err != nil {
			t.Fatal(err)
		}
		items := *m.(*Items)
		if len(items) != 3-i || items[len(items)-1].Value != fmt.Sprint(i, 2-i) {
			t.Errorf("frame %d: items %v", i, items)
		}
		if m, err = r.Read(); err != nil {
			t.Fatal(err)
		}
		res := m.(*Results)
		if len(res.Results) != 3-i || res.Busy != time.Duration(i) || res.Results[len(res.Results)-1].Value != int64(i*(2-i)) {
			t.Errorf("frame %d: results %+v", i, res)
		}
	}
}

// Frames encoded ahead (AppendFrame, in the writer's form) and written
// together (WriteFrame) read back as written one by one; a frame that fails
// to encode leaves the buffer as it was.
func TestAppendFrame(t *testing.T) {
	var stream bytes.Buffer
	w := NewWriter(&stream)
	w.Compact()
	items := &Items{{ID: 7, Index: 2, Value: "x"}}
	buf, err := w.AppendFrame(nil, items)
	if err != nil {
		t.Fatal(err)
	}
	if buf[4] != byte(TItemsCompact) {
		t.Errorf("frame type %q, want the compact form", buf[4])
	}
	n := len(buf)
	if buf, err = w.AppendFrame(buf, &Items{{ID: 8, Value: math.Inf(1)}}); err == nil || len(buf) != n {
		t.Fatalf("a failed encode: err %v, buffer %d -> %d bytes", err, n, len(buf))
	}
	if buf, err = w.AppendFrame(buf, &Cancel{7}); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFrame(buf); err != nil {
		t.Fatal(err)
	}
	r := NewReader(&stream)
	for _, want := range []Message{items, &Cancel{7}} {
		got, err := r.Read()
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("got %#v, %v; want %#v", got, err, want)
		}
	}
}

// TestBoxedIntsSurvive reads many whole numbers, which are boxed from
// shared chunks (parser.box), and checks each after the chunks have been
// through collections and the numbers' text is gone.
func TestBoxedIntsSurvive(t *testing.T) {
	var want []any
	for i := range 1000 {
		want = append(want, int64(i*7919-3_000_000), int64(i%300))
	}
	data, err := AppendValue(nil, want)
	if err != nil {
		t.Fatal(err)
	}
	v, err := ParseValue(data)
	if err != nil {
		t.Fatal(err)
	}
	clear(data)
	got := v.([]any)
	// Keep one value in four: the rest of their chunks may go.
	var kept []any
	for i := 0; i < len(got); i += 4 {
		kept = append(kept, got[i])
	}
	got = nil
	for range 3 {
		runtime.GC()
		_ = make([]int64, 1<<16) // reuse freed memory, if any was
	}
	for i, k := range kept {
		if w := want[4*i]; k != w {
			t.Fatalf("value %d: got %v (%T), want %v", 4*i, k, k, w)
		}
	}
}

// TestHugeLengthAllocatesAsBytesArrive: a length prefix near MaxFrame on a
// stream that then ends (garbage on the protocol descriptor) fails as a cut
// stream without allocating what the prefix claims.
func TestHugeLengthAllocatesAsBytesArrive(t *testing.T) {
	data := append([]byte{0x31, 0, 0, 0xae}, bytes.Repeat([]byte("x"), 100)...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := NewReader(bytes.NewReader(data)).Read()
	runtime.ReadMemStats(&after)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %v, want io.ErrUnexpectedEOF", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 16<<20 {
		t.Errorf("reading 104 bytes allocated %d bytes", n)
	}
}

package steps

import (
	"encoding/json"
	"io"
	"math"
	"reflect"
	"testing"
)

func TestDecodeJSON(t *testing.T) {
	v, err := DecodeJSON([]byte(`{"id": 9007199254740993, "f": 1.5, "big": 1e400, "huge": 123456789012345678901234567890, "u": 18446744073709551615, "tiny": 1e-400, "l": [1, 2.0]}`))
	if err != nil {
		t.Fatal(err)
	}
	// Ids beyond 2^53 stay exact, whole numbers written as floats stay
	// floats, and numbers beyond int64 or float64 stay numbers with their
	// digits.
	want := map[string]any{"id": int64(9007199254740993), "f": 1.5, "big": json.Number("1e400"),
		"huge": json.Number("123456789012345678901234567890"), "u": json.Number("18446744073709551615"), "tiny": 0.0,
		"l": []any{int64(1), 2.0}}
	if !reflect.DeepEqual(v, want) {
		t.Errorf("got %#v\nwant %#v", v, want)
	}
	if _, err := DecodeJSON([]byte(" ")); err != io.EOF {
		t.Errorf("empty input: %v, want io.EOF", err)
	}
	if _, err := DecodeJSON([]byte(`{} {}`)); err != ErrTrailingJSON {
		t.Errorf("two values: %v, want ErrTrailingJSON", err)
	}
	if _, err := DecodeJSON([]byte(`{"a":`)); err == nil {
		t.Error("truncated JSON decoded without error")
	}
}

func TestScalar(t *testing.T) {
	type named int16
	for _, tc := range []struct {
		in   any
		want any
		ok   bool
	}{
		{named(-7), int64(-7), true},
		{uint8(200), int64(200), true},
		{uint64(math.MaxUint64), float64(math.MaxUint64), true},
		{float32(1.5), float64(1.5), true},
		{"x", "x", true},
		{true, true, true},
		{[]int{1}, nil, false},
		{struct{}{}, nil, false},
	} {
		got, ok := Scalar(reflect.ValueOf(tc.in))
		if ok != tc.ok || got != tc.want {
			t.Errorf("Scalar(%#v) = %#v, %v; want %#v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestFinite(t *testing.T) {
	in := map[string]any{"a": []any{1.5, math.NaN(), "x"}, "b": math.Inf(-1), "c": map[string]any{"d": math.Inf(1)}, "e": int64(3)}
	got := Finite(in)
	want := map[string]any{"a": []any{1.5, "NaN", "x"}, "b": "-Infinity", "c": map[string]any{"d": "Infinity"}, "e": int64(3)}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Finite = %v, want %v", got, want)
	}
	if !math.IsNaN(in["a"].([]any)[1].(float64)) {
		t.Errorf("Finite modified its argument")
	}
	plain := []any{1.0, "x"}
	if g := Finite(plain).([]any); &g[0] != &plain[0] {
		t.Errorf("Finite copied a list without non-finite numbers")
	}
}

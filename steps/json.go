package steps

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"reflect"
	"strconv"
	"strings"
)

// ErrTrailingJSON is returned by DecodeJSON for data holding more than one
// JSON value; callers say what to do about it in their own terms.
var ErrTrailingJSON = errors.New("data after the JSON value")

// DecodeJSON decodes exactly one JSON value into the JSON-shaped values steps
// exchange (see JSONNumbers). Empty input is io.EOF.
func DecodeJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, ErrTrailingJSON
	}
	return JSONNumbers(v), nil
}

// JSONNumbers replaces, in place, the json.Number values a decoder with
// UseNumber produces: int64 when whole and in range (so ids stay exact),
// float64 when it has a fraction or an exponent. A number neither holds
// without loss (an integer beyond 64 bits, a float beyond float64 such as
// 1e400) stays a json.Number, its digits as written: sinks write it out
// unchanged, templates splice it into strings, and arithmetic on it fails
// its item instead of computing with a rounded value.
func JSONNumbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		return number(x)
	case []any:
		for i, e := range x {
			x[i] = JSONNumbers(e)
		}
	case map[string]any:
		for k, e := range x {
			x[k] = JSONNumbers(e)
		}
	}
	return v
}

func number(n json.Number) any {
	s := string(n)
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return i
	}
	if !strings.ContainsAny(s, ".eE") {
		return n
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && !(errors.Is(err, strconv.ErrRange) && !math.IsInf(f, 0)) {
		// Past float64: infinity is no JSON value, and a string would
		// change the type. (Underflow to zero is kept, as encoding/json and
		// Python do.)
		return n
	}
	return f
}

// Scalar returns the JSON-shaped value of a number, string or bool of any Go
// type (a named int, a uint8, a float32...): int64, or float64 for an
// unsigned value past the int64 range and for floats; string; bool. ok is
// false for every other kind, which callers shape in their own terms.
func Scalar(rv reflect.Value) (v any, ok bool) {
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int(), true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		u := rv.Uint()
		if u > math.MaxInt64 {
			return float64(u), true
		}
		return int64(u), true
	case reflect.Float32, reflect.Float64:
		return rv.Float(), true
	case reflect.String:
		return rv.String(), true
	case reflect.Bool:
		return rv.Bool(), true
	}
	return nil, false
}

// Finite returns v with every NaN, +Inf and -Inf float replaced by the
// string "NaN", "Infinity" or "-Infinity" (JavaScript's and Python's
// spellings), copying only the lists and mappings that hold one: JSON has
// no form for them, and a sink or report must still be written.
func Finite(v any) any {
	switch x := v.(type) {
	case float64:
		return finiteFloat(x)
	case float32:
		return finiteFloat(float64(x))
	case []any:
		var out []any
		for i, e := range x {
			if f := Finite(e); out != nil || !same(f, e) {
				if out == nil {
					out = append(make([]any, 0, len(x)), x[:i]...)
				}
				out = append(out, f)
			}
		}
		if out == nil {
			return x
		}
		return out
	case map[string]any:
		var out map[string]any
		for k, e := range x {
			if f := Finite(e); !same(f, e) {
				if out == nil {
					out = make(map[string]any, len(x))
					for k2, e2 := range x {
						out[k2] = e2
					}
				}
				out[k] = f
			}
		}
		if out == nil {
			return x
		}
		return out
	}
	return v
}

func finiteFloat(f float64) any {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	return f
}

// same reports whether Finite left e as it was (it only replaces floats,
// and lists and mappings by new ones).
func same(f, e any) bool {
	switch x := e.(type) {
	case float64:
		g, ok := f.(float64)
		return ok && (g == x || x != x && g != g)
	case float32:
		g, ok := f.(float64)
		return ok && float32(g) == x
	case []any:
		g, ok := f.([]any)
		return ok && len(g) == len(x) && (len(x) == 0 || &g[0] == &x[0])
	case map[string]any:
		g, ok := f.(map[string]any)
		return ok && reflect.ValueOf(g).UnsafePointer() == reflect.ValueOf(x).UnsafePointer()
	}
	return true
}

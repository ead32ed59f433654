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

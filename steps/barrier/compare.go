package barrier

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strings"
	"time"

	"github.com/flowrun/flow/steps"
)

// Sort keys of any JSON shape are totally ordered, so that a sort never
// fails halfway through a run over one odd item:
//
//	null < false < true < numbers < times < strings < lists < mappings
//
// Numbers compare by value whatever their type (3 == 3.0); strings compare
// byte by byte; lists element by element, a shorter prefix first, which makes
// '[item.errors, item.file]' a two-level key; mappings by their JSON text.
const (
	rankNull = iota
	rankBool
	rankNumber
	rankTime
	rankString
	rankList
	rankMap
	rankOther
)

// normalizeKey turns what an expression returns into one of the ranked
// shapes: int64 and float64 for every number type, durations as nanoseconds.
func normalizeKey(v any) any {
	switch x := v.(type) {
	case nil, bool, int64, float64, string, time.Time:
		return x
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normalizeKey(e)
		}
		return out
	case map[string]any:
		return x
	}
	rv := reflect.ValueOf(v)
	if s, ok := steps.Scalar(rv); ok {
		return s
	}
	switch rv.Kind() {
	case reflect.Slice, reflect.Array:
		out := make([]any, rv.Len())
		for i := range out {
			out[i] = normalizeKey(rv.Index(i).Interface())
		}
		return out
	}
	return v
}

func rank(v any) int {
	switch v.(type) {
	case nil:
		return rankNull
	case bool:
		return rankBool
	case int64, float64:
		return rankNumber
	case time.Time:
		return rankTime
	case string:
		return rankString
	case []any:
		return rankList
	case map[string]any:
		return rankMap
	}
	return rankOther
}

// compare orders two normalized keys: -1, 0 or +1.
func compare(a, b any) int {
	ra, rb := rank(a), rank(b)
	if ra != rb {
		return cmpInt(ra, rb)
	}
	switch x := a.(type) {
	case nil:
		return 0
	case bool:
		y := b.(bool)
		switch {
		case x == y:
			return 0
		case !x:
			return -1
		}
		return 1
	case int64:
		switch y := b.(type) {
		case int64:
			return cmpInt(x, y)
		case float64:
			return cmpIntFloat(x, y)
		}
	case float64:
		switch y := b.(type) {
		case int64:
			return -cmpIntFloat(y, x)
		case float64:
			return cmpFloat(x, y)
		}
	case time.Time:
		return x.Compare(b.(time.Time))
	case string:
		return strings.Compare(x, b.(string))
	case []any:
		y := b.([]any)
		for i := 0; i < len(x) && i < len(y); i++ {
			if c := compare(x[i], y[i]); c != 0 {
				return c
			}
		}
		return cmpInt(len(x), len(y))
	case map[string]any:
		return bytes.Compare(jsonText(x), jsonText(b))
	}
	return strings.Compare(fmt.Sprint(a), fmt.Sprint(b))
}

func cmpInt[T int | int64](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// cmpFloat puts NaN below every number, so that it sorts consistently.
func cmpFloat(a, b float64) int {
	an, bn := math.IsNaN(a), math.IsNaN(b)
	switch {
	case an && bn:
		return 0
	case an:
		return -1
	case bn:
		return 1
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// cmpIntFloat compares exactly: converting a large int64 to float64 would
// round it and make distinct keys tie.
func cmpIntFloat(i int64, f float64) int {
	switch {
	case math.IsNaN(f):
		return 1
	case f >= 1<<63:
		return -1
	case f < -(1 << 63):
		return 1
	}
	t := math.Trunc(f)
	if c := cmpInt(i, int64(t)); c != 0 {
		return c
	}
	switch frac := f - t; {
	case frac > 0:
		return -1
	case frac < 0:
		return 1
	}
	return 0
}

func jsonText(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return []byte(fmt.Sprint(v))
	}
	return b
}

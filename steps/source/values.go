package source

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/tmpl"
)

// Source options are evaluated once, when the source is built, with 'vars'
// and 'env' in scope and no item.
func evalOnce(t *tmpl.T, env *steps.Env) (any, error) {
	if t == nil {
		return nil, nil
	}
	v, err := t.Eval(&tmpl.Scope{Vars: env.Vars, Env: env.Env, Ctx: context.Background()})
	if err != nil {
		return nil, at(t, "%v", err)
	}
	return v, nil
}

// at places an error at the template's position in the pipeline file when it
// has one, so build-time errors read FILE:LINE:COL like validation errors.
func at(t *tmpl.T, format string, args ...any) error {
	if t != nil && t.Node() != nil {
		return conf.Errorf(conf.NodePos(t.Node()), format, args...)
	}
	return fmt.Errorf(format, args...)
}

func evalString(t *tmpl.T, env *steps.Env, what string) (string, error) {
	v, err := evalOnce(t, env)
	if err != nil {
		return "", err
	}
	s, ok := v.(string)
	if !ok || s == "" {
		return "", at(t, "%s must be a non-empty string, got %s", what, describe(v))
	}
	return s, nil
}

// toInt64 accepts the integer types expressions produce and whole floats
// (a number read from a variable may arrive as 10.0).
func toInt64(v any) (int64, bool) {
	switch x := v.(type) {
	case int64:
		return x, true
	case int:
		return int64(x), true
	case int32:
		return int64(x), true
	case int16:
		return int64(x), true
	case int8:
		return int64(x), true
	case uint8:
		return int64(x), true
	case uint16:
		return int64(x), true
	case uint32:
		return int64(x), true
	case uint:
		if uint64(x) <= math.MaxInt64 {
			return int64(x), true
		}
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x), true
		}
	case float64:
		if x == math.Trunc(x) && x >= math.MinInt64 && x < math.MaxInt64 {
			return int64(x), true
		}
	case float32:
		return toInt64(float64(x))
	}
	return 0, false
}

// jsonShaped converts what expressions and decoders produce into the values
// items must be: nil, bool, int64, float64, string, []any, map[string]any.
func jsonShaped(v any) (any, error) {
	switch x := v.(type) {
	case nil, bool, int64, float64, string:
		return x, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			c, err := jsonShaped(e)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			c, err := jsonShaped(e)
			if err != nil {
				return nil, err
			}
			out[k] = c
		}
		return out, nil
	case float32:
		return float64(x), nil
	}
	if i, ok := toInt64(v); ok {
		return i, nil
	}
	// Anything else (typed slices and maps from expr builtins) goes through
	// JSON, which yields the shapes above or says why it cannot.
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Func || rv.Kind() == reflect.Chan {
		return nil, fmt.Errorf("a %T cannot be an item", v)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("a %T cannot be an item: %v", v, err)
	}
	var back any
	if err := decodeJSON(b, &back); err != nil {
		return nil, err
	}
	return back, nil
}

func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "nothing (null)"
	case string:
		return fmt.Sprintf("the string %q", x)
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	case bool:
		return fmt.Sprintf("the boolean %v", x)
	}
	if _, ok := toInt64(v); ok || isFloat(v) {
		return "the number " + tmpl.Stringify(v)
	}
	return tmpl.Stringify(v) // in the pipeline's words, never a Go type name
}

func isFloat(v any) bool {
	switch v.(type) {
	case float32, float64:
		return true
	}
	return false
}

// resolve makes a relative path relative to the pipeline directory.
func resolve(dir, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	if dir == "" {
		dir = "."
	}
	return filepath.Join(dir, p)
}

// rangeInt reads a range bound: a whole number, or a string holding one,
// since everything read from 'env' is a string ("${ env.COUNT }").
func rangeInt(v any) (int64, bool) {
	if s, ok := v.(string); ok {
		n, err := strconv.ParseInt(strings.ReplaceAll(strings.TrimSpace(s), "_", ""), 10, 64)
		return n, err == nil
	}
	return toInt64(v)
}

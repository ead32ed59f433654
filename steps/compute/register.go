// Package compute is the `compute` step: one templated value per item,
// evaluated with expr-lang and the function library of tmpl/funcs.go.
package compute

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/flowrun/flow/internal/box"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/tmpl"
)

// Config is the `with:` block of a compute stage.
type Config struct {
	Value *tmpl.T `yaml:"value" required:"true" desc:"The result for each item: any YAML value. Strings may hold '${ }' expressions; a string that is exactly one expression keeps its type (a number stays a number), mappings and lists are evaluated leaf by leaf. Expressions see 'item', 'index', 'vars' and 'env', the expr-lang builtins and the functions 'count_primes', 'sleep', 'fail', 'sha256', 'sha1', 'md5', 'base64_encode', 'base64_decode', 'hex', 'hex_decode', 'basename', 'dirname', 'ext', 'stem', 'thousands' and 'sprintf'." example:"{symbol: \"${ item }\", price: \"${ vars.prices[item] }\"}"`
}

// Register adds the compute kind to r.
func Register(r *steps.Registry) {
	steps.RegisterStep(r, steps.Kind{
		Name:    "compute",
		Summary: "Compute a value per item with expressions (math, strings, hashing, count_primes, sleep, fail)",
		Doc: markdown(`Evaluates 'value' once per item. The template is compiled and type-checked when the
pipeline is validated; evaluation is bounded (an expression that builds a huge range,
list or string is stopped with an error, and very large expressions are refused).

Functions beyond the expr-lang builtins:

- 'count_primes(n)': the number of primes below n (a segmented sieve; n up to 2,000,000,000).
- 'sleep(d)': waits for a duration string ("200ms", "1.5s") or a number of seconds, and
  returns null, so 'sleep(0.2) ?? item' waits, then yields the item. A stage timeout or a
  cancelled run interrupts it.
- 'fail(message)': fails the item with that message, like raising an exception.
- 'sha256(s)', 'sha1(s)', 'md5(s)': hex digests; 'base64_encode(s)', 'base64_decode(s)',
  'hex(s or n)', 'hex_decode(s)'.
- 'basename(p)', 'dirname(p)', 'ext(p)' (with the dot: ".gz"), 'stem(p)' (base name without
  its last extension).
- 'thousands(n)': "1,234,567", like Python f"{n:,}"; 'sprintf(format, args...)' with Go
  formatting verbs ("%05d", "%.2f", "%s").

Errors: 'fail()' gives an item error of class 'error' that a 'retry:' policy may retry;
any other evaluation error depends only on the item, so it is permanent and never retried:
a type mismatch ("upper() wants a string, got the number 3"), a missing key, a division or
modulo by zero ("division by zero", like ZeroDivisionError in Python), and a value past the
memory budget of one evaluation (256 MiB, counted before each builtin, function or string
'+' builds its result; class 'too_large'). Loops ('map', 'filter', 'reduce'...) and
builtins check the timeout of the stage and the cancellation of the run, so a CPU-bound expression
stops at its timeout.`),
		Result:  "The evaluated 'value': a number, string, boolean, null, list or mapping. Integers are 64-bit; dates are RFC 3339 strings; durations are strings such as \"1.5s\".",
		Example: "value:\n  n: \"${ item }\"\n  primes: \"${ count_primes(item) }\"",
	}, New)
}

// New builds a compute step; the template was compiled when decoding.
func New(cfg *Config, env *steps.Env) (steps.Step, error) {
	if cfg.Value == nil {
		return nil, errors.New("compute: 'value' is required")
	}
	// A constant value still goes through Eval: each item gets its own
	// copy of mappings and lists, which later stages may modify.
	v := cfg.Value
	return steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
		// JSONValue as the template places each value: the mappings and
		// lists it builds are this item's own, and JSON-shaped already.
		out, err := v.EvalConv(env.Scope(ctx, in), JSONValue)
		if err != nil {
			return nil, classify(ctx, err)
		}
		return out, nil
	}), nil
}

func classify(ctx context.Context, err error) error {
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		// Cancellation and stage timeouts belong to the engine; keep the
		// context error visible to it.
		return &steps.Error{Err: err, Class: steps.ClassOf(ctx.Err())}
	}
	var fe *tmpl.FailError
	if errors.As(err, &fe) {
		return &steps.Error{Err: fe, Class: "error"}
	}
	var be *tmpl.BudgetError
	if errors.As(err, &be) {
		return &steps.Error{Err: err, Class: "too_large", Permanent: true}
	}
	return &steps.Error{Err: err, Class: "error", Permanent: true}
}

// JSONValue turns what expr-lang evaluates to into the JSON-shaped values
// that steps must return (nil, bool, int64, float64, string, []any,
// map[string]any): results may cross a process boundary or be written by
// any sink.
func JSONValue(v any) any {
	switch x := v.(type) {
	case nil, bool, int64, float64, string:
		return x
	case json.Number:
		// A number too large for int64 or float64 (see steps.JSONNumbers):
		// a number still, not the string its Stringer gives.
		return x
	case int:
		// Every integer an expression computes is an int: retyping it
		// spares an allocation per item.
		return box.Int64(v)
	case float32:
		return float64(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = JSONValue(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = JSONValue(e)
		}
		return out
	case time.Time:
		return x.Format(time.RFC3339Nano)
	case time.Duration:
		return x.String()
	case []byte:
		return string(x)
	case error:
		return x.Error()
	case fmt.Stringer:
		return x.String()
	}
	rv := reflect.ValueOf(v)
	if s, ok := steps.Scalar(rv); ok {
		return s
	}
	switch rv.Kind() {
	case reflect.Slice, reflect.Array:
		out := make([]any, rv.Len())
		for i := range out {
			out[i] = JSONValue(rv.Index(i).Interface())
		}
		return out
	case reflect.Map:
		out := make(map[string]any, rv.Len())
		it := rv.MapRange()
		for it.Next() {
			out[fmt.Sprint(it.Key().Interface())] = JSONValue(it.Value().Interface())
		}
		return out
	case reflect.Pointer, reflect.Interface:
		if rv.IsNil() {
			return nil
		}
		return JSONValue(rv.Elem().Interface())
	case reflect.Struct:
		out := map[string]any{}
		t := rv.Type()
		for i := 0; i < t.NumField(); i++ {
			if t.Field(i).IsExported() {
				out[t.Field(i).Name] = JSONValue(rv.Field(i).Interface())
			}
		}
		return out
	}
	return fmt.Sprint(v)
}

// markdown turns the 'code' spans of a doc text into Markdown code spans.
func markdown(s string) string { return strings.ReplaceAll(s, "'", "`") }

package tmpl

import (
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"path"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/expr-lang/expr/file"

	"github.com/flowrun/flow/clock"
)

// The function library available in every expression, besides expr-lang's
// builtins (math, strings, dates, lists). Functions are declared with Go
// signatures so that a wrong call is refused when the pipeline is validated,
// not halfway through a run. Functions that can take long (sleep,
// count_primes) take the scope's ctx as first parameter: expr.WithContext in
// Options inserts it, so a cancelled run or a stage timeout stops them.

// FailError is the error raised by fail(message) in an expression. Steps can
// recognise it with errors.As to report the message as the item's error.
type FailError struct{ Msg string }

func (e *FailError) Error() string { return e.Msg }

// MaxPrimeLimit bounds count_primes: above it a single call would run for
// many seconds, which is more likely a typo than a wish.
const MaxPrimeLimit = 2_000_000_000

// maxSleep bounds sleep for the same reason; a stage timeout is the tool for
// long waits.
const maxSleep = 24 * time.Hour

func init() {
	Func("count_primes", func(p ...any) (any, error) {
		n, ok := toInt64(p[1])
		if !ok {
			return nil, fmt.Errorf("count_primes() wants an integer, got %s", describe(p[1]))
		}
		return CountPrimes(ctxOf(p[0]), n)
	}, new(func(context.Context, int) int), new(func(context.Context, float64) int))

	Func("sleep", func(p ...any) (any, error) {
		d, err := sleepDuration(p[1])
		if err != nil {
			return nil, err
		}
		return nil, Sleep(ctxOf(p[0]), d)
	},
		new(func(context.Context, string) any),
		new(func(context.Context, int) any),
		new(func(context.Context, float64) any),
	)

	Func("fail", func(p ...any) (any, error) {
		msg := Stringify(p[0])
		if msg == "" {
			msg = "fail() called"
		}
		return nil, &FailError{Msg: msg}
	}, new(func(any) any))

	hashFn := func(name string, sum func([]byte) []byte) {
		Func(name, func(p ...any) (any, error) {
			return hex.EncodeToString(sum(bytesOf(p[0]))), nil
		}, new(func(any) string))
	}
	hashFn("sha256", func(b []byte) []byte { s := sha256.Sum256(b); return s[:] })
	hashFn("sha1", func(b []byte) []byte { s := sha1.Sum(b); return s[:] })
	hashFn("md5", func(b []byte) []byte { s := md5.Sum(b); return s[:] })

	Func("base64_encode", func(p ...any) (any, error) {
		return base64.StdEncoding.EncodeToString(bytesOf(p[0])), nil
	}, new(func(any) string))
	Func("base64_decode", func(p ...any) (any, error) {
		s, err := str("base64_decode", p[0])
		if err != nil {
			return nil, err
		}
		s = strings.TrimSpace(s)
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			// Accept the URL-safe and unpadded alphabets too: tokens and
			// JWT parts use them.
			for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
				if b2, err2 := enc.DecodeString(s); err2 == nil {
					return string(b2), nil
				}
			}
			return nil, fmt.Errorf("base64_decode: %q is not valid base64: %v", clip(s, 40), err)
		}
		return string(b), nil
	}, new(func(string) string))
	Func("hex", func(p ...any) (any, error) {
		switch x := p[0].(type) {
		case int:
			return fmt.Sprintf("%x", x), nil
		case int64:
			return fmt.Sprintf("%x", x), nil
		}
		return hex.EncodeToString(bytesOf(p[0])), nil
	}, new(func(string) string), new(func(int) string))
	Func("hex_decode", func(p ...any) (any, error) {
		s, err := str("hex_decode", p[0])
		if err != nil {
			return nil, err
		}
		b, err := hex.DecodeString(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("hex_decode: %q is not valid hex: %v", clip(s, 40), err)
		}
		return string(b), nil
	}, new(func(string) string))

	// Paths use forward slashes whatever the OS, like glob results.
	pathFn := func(name string, fn func(string) string) {
		Func(name, func(p ...any) (any, error) {
			s, err := str(name, p[0])
			if err != nil {
				return nil, err
			}
			return fn(strings.ReplaceAll(s, "\\", "/")), nil
		}, new(func(string) string))
	}
	pathFn("basename", path.Base)
	pathFn("dirname", path.Dir)
	pathFn("ext", path.Ext)
	pathFn("stem", func(p string) string {
		b := path.Base(p)
		return strings.TrimSuffix(b, path.Ext(b))
	})

	Func("thousands", func(p ...any) (any, error) {
		return thousands(p[0])
	}, new(func(int) string), new(func(float64) string))
	Func("sprintf", func(p ...any) (any, error) {
		f, err := str("sprintf", p[0])
		if err != nil {
			return nil, err
		}
		return fmt.Sprintf(f, p[1:]...), nil
	}, new(func(string, ...any) string))
}

func ctxOf(v any) context.Context {
	if c, ok := v.(context.Context); ok && c != nil {
		return c
	}
	// A Scope built without a context (tests, validation-time evaluation).
	return context.Background()
}

// toInt64 accepts what an item or variable may hold where an integer is
// expected: any integer, or a float without a fraction (YAML reads 1e6 so).
func toInt64(v any) (int64, bool) {
	switch x := v.(type) {
	case int:
		return int64(x), true
	case int64:
		return x, true
	case int32:
		return int64(x), true
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<62 {
			return int64(x), true
		}
	}
	return 0, false
}

// str checks at run time what the declared signature could not (an item
// field is of unknown type when the pipeline is validated).
func str(fn string, v any) (string, error) {
	if s, ok := v.(string); ok {
		return s, nil
	}
	return "", fmt.Errorf("%s() wants a string, got %s", fn, describe(v))
}

// describe names a value as the pipeline format does: "the number 3", "the
// string \"abc\"", "a list".
func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return fmt.Sprintf("the string %q", clip(x, 40))
	case bool:
		return fmt.Sprintf("the boolean %v", x)
	case time.Time:
		return "the date " + x.Format(time.RFC3339)
	case time.Duration:
		return "the duration " + x.String()
	case json.Number:
		// Integers beyond 64 bits read from JSON keep their digits, which
		// the expr-lang operators cannot compute with.
		return "the number " + clip(x.String(), 40) + " (beyond 64 bits)"
	}
	if isNumber(v) {
		return "the number " + clip(Stringify(v), 40)
	}
	return typeWord(reflect.TypeOf(v))
}

func bytesOf(v any) []byte {
	switch x := v.(type) {
	case string:
		return []byte(x)
	case []byte:
		return x
	}
	return []byte(Stringify(v))
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func sleepDuration(v any) (time.Duration, error) {
	var d time.Duration
	switch x := v.(type) {
	case string:
		var err error
		d, err = time.ParseDuration(strings.TrimSpace(x))
		if err != nil {
			return 0, fmt.Errorf("sleep: %q is not a duration: use one such as \"200ms\" or \"1.5s\", or a number of seconds", x)
		}
	case int, int64, int32:
		// Variables set with --set and numbers read from data are int64,
		// literals are int: both are seconds.
		n, _ := toInt64(x)
		if n > int64(maxSleep/time.Second) {
			return 0, fmt.Errorf("sleep: %d seconds is longer than the limit of %s; use a stage timeout or deadline for long waits", n, maxSleep)
		}
		d = time.Duration(n) * time.Second
	case float64:
		if math.IsNaN(x) || x > maxSleep.Seconds() {
			return 0, fmt.Errorf("sleep: %v seconds is longer than the limit of %s; use a stage timeout or deadline for long waits", x, maxSleep)
		}
		d = time.Duration(x * float64(time.Second))
	default:
		return 0, fmt.Errorf("sleep() wants a duration string or a number of seconds, got %s", describe(v))
	}
	if d < 0 {
		return 0, fmt.Errorf("sleep: negative duration %s", d)
	}
	if d > maxSleep {
		return 0, fmt.Errorf("sleep: %s is longer than the limit of %s; use a stage timeout or deadline for long waits", d, maxSleep)
	}
	return d, nil
}

// RunError is an evaluation error. It keeps its cause so that callers can
// tell a fail() call (*FailError) or a cancelled context apart.
type RunError struct {
	msg string
	err error
}

func (e *RunError) Error() string { return e.msg }
func (e *RunError) Unwrap() error { return e.err }

func newRunError(src string, err error) error {
	msg := err.Error()
	var fe *file.Error
	if errors.As(err, &fe) {
		msg = fe.Message // without expr's "(line:col)" and source snippet
	}
	if i := strings.Index(msg, "\n"); i >= 0 {
		msg = msg[:i]
	}
	if msg == "memory budget exceeded" {
		msg = "the expression builds too large a value (a huge range, list or string) and was stopped; work on smaller ranges"
	}
	var w *worded
	var fail *FailError
	if !errors.As(err, &w) && !errors.As(err, &fail) {
		msg = goWords(msg) // expr-lang's own: "cannot fetch x from []interface {}"
	}
	return &RunError{msg: fmt.Sprintf("expression %q: %s", src, msg), err: err}
}

// thousands writes a number with a comma between groups of three digits,
// like Python's f"{n:,}".
func thousands(v any) (string, error) {
	var digits, frac string
	switch x := v.(type) {
	case int, int64, int32:
		digits = fmt.Sprint(x)
	case float64:
		if math.IsInf(x, 0) || math.IsNaN(x) {
			return fmt.Sprint(x), nil
		}
		digits = strconv.FormatFloat(x, 'f', -1, 64)
		if i := strings.IndexByte(digits, '.'); i >= 0 {
			digits, frac = digits[:i], digits[i:]
		}
	default:
		return "", fmt.Errorf("thousands() wants a number, got %s", describe(v))
	}
	sign := ""
	if strings.HasPrefix(digits, "-") {
		sign, digits = "-", digits[1:]
	}
	var b strings.Builder
	for i, c := range digits {
		if i > 0 && (len(digits)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return sign + b.String() + frac, nil
}

// Sleep waits for d on the clock of ctx (clock.From: the run's, which is
// virtual under `flow test`) or until ctx is done, whichever comes first.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	if err := clock.Sleep(ctx, d); err != nil {
		return fmt.Errorf("sleep interrupted: %w", err)
	}
	return nil
}

// segmentBits is how many odd numbers one sieve segment covers: 256 Ki bits,
// a 32 KiB segment, which stays in a typical L1/L2 cache.
const segmentBits = 1 << 18

// CountPrimes returns the number of primes below limit, like the guide's
// count_primes. It runs a segmented sieve over odd numbers only, so memory
// stays small (a 32 KiB segment plus the base primes up to sqrt(limit))
// whatever the limit, and checks ctx between segments.
func CountPrimes(ctx context.Context, limit int64) (int, error) {
	if limit > MaxPrimeLimit {
		return 0, fmt.Errorf("count_primes: %d is above the limit of %d; count in smaller ranges", limit, int64(MaxPrimeLimit))
	}
	if limit <= 2 {
		return 0, nil
	}
	// Numbers below limit: 2, then odd n = 2i+1 for i in [1, half).
	half := limit / 2 // odd numbers below limit, counting 1
	root := int64(math.Sqrt(float64(limit)))
	for root*root >= limit {
		root--
	}
	for (root+1)*(root+1) < limit {
		root++
	}
	// Base primes up to root, by a plain sieve (root <= 44722).
	small := make([]bool, root+1)
	var base []int64
	for i := int64(3); i <= root; i += 2 {
		if small[i] {
			continue
		}
		base = append(base, i)
		for j := i * i; j <= root; j += 2 * i {
			small[j] = true
		}
	}
	count := 1 // the prime 2
	seg := make([]uint64, segmentBits/64)
	// next[k] is the index (i such that n = 2i+1) of the next odd multiple
	// of base[k] still to strike, starting at base[k] squared.
	next := make([]int64, len(base))
	for k, p := range base {
		next[k] = p * p / 2
	}
	for lo := int64(0); lo < half; lo += segmentBits {
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("count_primes interrupted: %w", context.Cause(ctx))
		}
		hi := min(lo+segmentBits, half)
		clear(seg)
		for k, p := range base {
			j := next[k]
			for ; j < hi; j += p {
				o := j - lo
				seg[o>>6] |= 1 << (o & 63)
			}
			next[k] = j
		}
		n := hi - lo
		full := n / 64
		composite := 0
		for _, w := range seg[:full] {
			composite += bits.OnesCount64(w)
		}
		if rem := n % 64; rem != 0 {
			composite += bits.OnesCount64(seg[full] & (1<<rem - 1))
		}
		count += int(n) - composite
		if lo == 0 {
			count-- // index 0 is the number 1, which is not prime
		}
	}
	return count, nil
}

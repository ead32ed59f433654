package tmpl

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/expr-lang/expr/builtin"
	"github.com/expr-lang/expr/conf"
	"strings"
	"testing"
	"time"
)

// A CPU-bound expression stops at the next element once its context is
// done, whatever builtins its loops call.
func TestEvalStopsWhenCancelled(t *testing.T) {
	list := make([]any, 3000)
	for i := range list {
		list[i] = int64(i + 1)
	}
	item := map[string]any{"s": strings.Repeat("x", 100_000), "list": list}
	for _, src := range []string{
		`${ reduce(1..500000, #acc + len(sha256(item.s + string(#))), 0) }`,
		`${ sum(map(item.list, sum(map(item.list, reduce(item.list, #acc + 1, 0))))) }`,
		`${ count(item.list, all(item.list, any(item.list, # < 0) || # > 0)) }`,
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		done := make(chan error, 1)
		go func() {
			_, err := eval(t, src, &Scope{Item: item, Ctx: ctx})
			done <- err
		}()
		select {
		case err := <-done:
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("%s: want a deadline error, got %v", src, err)
			} else if !strings.Contains(err.Error(), "interrupted") {
				t.Errorf("%s: message does not say it was interrupted: %v", src, err)
			}
		case <-time.After(60 * time.Second): // a guard against a hang, not a timing
			t.Fatalf("%s: still running a minute after its deadline", src)
		}
		cancel()
	}
}

// Every way of growing a value is counted before the value is built.
func TestEvalBudget(t *testing.T) {
	// A smaller budget keeps the test quick; the sizes below are past it.
	defer func(b int64) { maxEvalBytes = b }(maxEvalBytes)
	maxEvalBytes = 16 << 20
	item := map[string]any{
		"s": strings.Repeat("x", 20_000), "n": int64(1_000_000), "big": int64(1) << 40,
		"list": []any{"a", "b"},
	}
	for _, src := range []string{
		`${ repeat(item.s, item.n) }`,               // 20 GB asked at once
		`${ repeat("x", item.big) }`,                // past expr-lang's own check
		`${ reduce(1..100000, #acc + item.s, "") }`, // + in a loop
		`${ map(1..100000, repeat(item.s, 10)) }`,   // many values, each small
		`${ replace(repeat("ab", 100000), "a", item.s) }`,
		`${ join(map(1..10000, item.s), item.s) }`,
		`${ toJSON(map(1..1000, item.s)) }`,
		`${ sprintf("%0*d", item.big, 1) }`,
		`${ sprintf("%.2000000000f", 1.5) }`,
		`${ hex(repeat(item.s, 500)) }`,
		`${ item.s + item.s + repeat(item.s, 1000) }`,
		`${ map(item.list, repeat(#, item.big)) }`,
	} {
		_, err := eval(t, src, &Scope{Item: item, Ctx: context.Background()})
		var be *BudgetError
		if !errors.As(err, &be) || !strings.Contains(err.Error(), "too large") {
			t.Errorf("%s: want a budget error, got %v", src, err)
		}
	}
	// What fits is untouched.
	for src, want := range map[string]any{
		`${ repeat("ab", 3) }`:                     "ababab",
		`${ "a" + "b" }`:                           "ab",
		`${ item.list[0] + item.list[1] }`:         "ab",
		`${ reduce(1..1000, #acc + "x", "") }`:     strings.Repeat("x", 1000),
		`${ join(map(1..3, string(#)), ",") }`:     "1,2,3",
		`${ len(toJSON(map(1..10, item.s))) > 0 }`: true,
	} {
		v, err := eval(t, src, &Scope{Item: item, Ctx: context.Background()})
		if err != nil || v != want {
			t.Errorf("%s = %v, %v; want %v", src, v, err, want)
		}
	}
}

// Division and modulo by zero fail like Python's ZeroDivisionError rather
// than give +Inf or a Go runtime error.
func TestDivisionByZero(t *testing.T) {
	item := map[string]any{"a": int64(7), "b": int64(0), "f": 0.0, "x": 2.5}
	for _, src := range []string{`${ item.a / item.b }`, `${ item.a / item.f }`, `${ 1 / 0 }`,
		`${ 1.5 / 0.0 }`, `${ item.a % item.b }`, `${ 7 % 0 }`, `${ map([1, 0], 1 / #) }`, `${ 0 / 0 }`} {
		_, err := eval(t, src, &Scope{Item: item, Ctx: context.Background()})
		var ze *ZeroDivisionError
		if !errors.As(err, &ze) || !strings.Contains(err.Error(), "by zero") {
			t.Errorf("%s: want a division by zero error, got %v", src, err)
		}
	}
	for src, want := range map[string]any{`${ item.a / 2 }`: 3.5, `${ item.a % 4 }`: 3, `${ item.x / 2 }`: 1.25, `${ 6 / 4 }`: 1.5} {
		v, err := eval(t, src, &Scope{Item: item, Ctx: context.Background()})
		if err != nil || v != want {
			t.Errorf("%s = %#v, %v; want %#v", src, v, err, want)
		}
	}
	// Types the checker refuses are still refused when compiling.
	for _, src := range []string{`${ "a" / 2 }`, `${ 1 % "b" }`, `${ "a" + 1 }`} {
		if _, err := Compile(src); err == nil {
			t.Errorf("Compile(%s): want a type error", src)
		}
	}
}

// Runtime type errors name the function and the types as the format does,
// for every function of the library, never with Go's type names.
func TestRuntimeTypeErrorsInWords(t *testing.T) {
	item := map[string]any{"n": int64(3), "s": "abc", "l": []any{int64(1), "x"}, "m": map[string]any{"k": 1}, "b": true}
	cases := map[string]string{
		`${ upper(item.n) }`:          `upper() wants a string, got the number 3`,
		`${ lower(item.l) }`:          `lower() wants a string, got a list`,
		`${ trim(item.b) }`:           `trim() wants a string, got the boolean true`,
		`${ split(item.n, ",") }`:     `split() wants a string, got the number 3`,
		`${ repeat(item.s, item.s) }`: `repeat() wants an integer, got the string "abc"`,
		`${ join(item.l, ",") }`:      `join() wants a string, got the number 1`,
		`${ abs(item.s) }`:            `abs() wants a number, got the string "abc"`,
		`${ len(item.n) }`:            `len() wants a string, list or mapping, got the number 3`,
		`${ hasPrefix(item.m, "a") }`: `hasPrefix() wants a string, got a mapping`,
		`${ toBase64(item.n) }`:       `toBase64() wants a string, got the number 3`,
		`${ item.s + item.n }`:        `+ cannot combine the string "abc" and the number 3`,
		`${ item.s / 2 }`:             `/ cannot combine the string "abc" and the number 2`,
		`${ basename(item.n) }`:       `basename() wants a string, got the number 3`,
		`${ count_primes(item.s) }`:   `count_primes() wants an integer, got the string "abc"`,
		`${ thousands(item.s) }`:      `thousands() wants a number, got the string "abc"`,
		`${ sleep(item.b) }`:          `sleep() wants a duration string or a number of seconds, got the boolean true`,
		`${ base64_decode(item.l) }`:  `base64_decode() wants a string, got a list`,
		`${ sprintf(item.n) }`:        `sprintf() wants a string, got the number 3`,
		`${ max(item.s, 1) }`:         `max() wants numbers`,
	}
	for src, want := range cases {
		_, err := eval(t, src, &Scope{Item: item, Ctx: context.Background()})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", src, err, want)
			continue
		}
		for _, goish := range []string{"interface conversion", "float64", "int64", "interface {}", "(type"} {
			if strings.Contains(err.Error(), goish) {
				t.Errorf("%s: Go type words in %q", src, err)
			}
		}
	}
}

// Numbers from --set and from data are int64: sleep takes them as seconds.
func TestSleepIntegerFromData(t *testing.T) {
	s := &Scope{Vars: map[string]any{"delay": int64(0)}, Item: map[string]any{"d": int64(0)}, Ctx: context.Background()}
	for _, src := range []string{`${ sleep(vars.delay) }`, `${ sleep(item.d) }`} {
		if _, err := eval(t, src, s); err != nil {
			t.Errorf("%s: %v", src, err)
		}
	}
}

func BenchmarkGuardedLoop(b *testing.B) {
	tt, err := Compile(`${ sum(map(1..100000, # * 2 + len(string(#)))) }`)
	if err != nil {
		b.Fatal(err)
	}
	s := &Scope{Ctx: context.Background()}
	for b.Loop() {
		if _, err := tt.Eval(s); err != nil {
			b.Fatal(err)
		}
	}
}

// Every function of the library and every expr-lang builtin, called with
// arguments of every type an item may hold: whatever fails at run time says
// so in the format's words.
func TestRuntimeTypeErrorsOverTheLibrary(t *testing.T) {
	values := map[string]any{"n": int64(3), "f": 2.5, "s": "abc", "b": true, "l": []any{int64(1), "x"},
		"m": map[string]any{"k": int64(1)}, "z": nil}
	var names []string
	for _, b := range builtin.Builtins {
		if !b.Predicate {
			names = append(names, b.Name)
		}
	}
	for _, o := range funcOptions() {
		c := conf.CreateNew()
		o(c)
		for name := range c.Functions {
			names = append(names, name)
		}
	}
	goish := []string{"interface conversion", "int64", "float64", "interface {}", "map[string]", "[]interface", "(type "}
	seen := 0
	for _, name := range names {
		if name == "sleep" || name == "now" {
			continue // sleep would wait; now takes nothing from items
		}
		for a := range values {
			for _, args := range []string{"item." + a, "item." + a + ", item." + a, "item." + a + ", item." + a + ", item." + a} {
				src := "${ " + name + "(" + args + ") }"
				tt, err := Compile(src)
				if err != nil {
					continue // refused when the file is checked: not a runtime error
				}
				_, err = tt.Eval(&Scope{Item: values, Ctx: context.Background()})
				if err == nil {
					continue
				}
				seen++
				for _, g := range goish {
					if strings.Contains(err.Error(), g) {
						t.Errorf("%s: %q has Go's words (%s)", src, err, g)
						break
					}
				}
			}
		}
	}
	if seen < 100 {
		t.Errorf("only %d runtime errors seen: the test does not reach the library", seen)
	}
}

// Integers beyond 64 bits (json.Number) are named as numbers, not Go types.
func TestBigNumberErrorsInWords(t *testing.T) {
	item := map[string]any{"id": json.Number("123456789012345678901234567890")}
	for _, src := range []string{`${ item.id + 1 }`, `${ upper(item.id) }`, `${ item.id + "x" }`} {
		_, err := eval(t, src, &Scope{Item: item, Ctx: context.Background()})
		if err == nil || strings.Contains(err.Error(), "json.Number") || !strings.Contains(err.Error(), "beyond 64 bits") {
			t.Errorf("%s: %v", src, err)
		}
	}
}

// Type errors found when the file is checked are worded the same way.
func TestCheckErrorsInWords(t *testing.T) {
	for src, want := range map[string]string{
		`${ upper(1) }`:    "upper() wants a string, got an integer",
		`${ join(1) }`:     "join() wants a list, got an integer",
		`${ "a" + 1 }`:     "+ cannot combine a string and an integer",
		`${ abs("x") }`:    "abs() wants a number, got a string",
		`${ repeat(1) }`:   "not enough arguments to call repeat",
		`${ len(true) }`:   "len() wants a string, list or mapping, got a boolean",
		`${ 1 / "a" }`:     "/ cannot combine an integer and a string",
		`${ sleep(true) }`: "sleep() wants a duration string or a number of seconds, got a boolean",
	} {
		_, err := Compile(src)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", src, err, want)
		}
	}
}

// A list spliced into a string as JSON is counted too: escapes can make it
// six times the size of the list's strings.
func TestSplicedValuesCounted(t *testing.T) {
	defer func(b int64) { maxEvalBytes = b }(maxEvalBytes)
	maxEvalBytes = 16 << 20
	_, err := eval(t, `list: ${ map(1..1000, repeat("<", 5000)) }`, nil)
	var be *BudgetError
	if !errors.As(err, &be) {
		t.Errorf("want a budget error, got %v", err)
	}
}

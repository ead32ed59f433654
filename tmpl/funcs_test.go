package tmpl

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func eval(t *testing.T, src string, s *Scope) (any, error) {
	t.Helper()
	tt, err := Compile(src)
	if err != nil {
		t.Fatalf("Compile(%q): %v", src, err)
	}
	if s == nil {
		s = &Scope{Ctx: context.Background()}
	}
	return tt.Eval(s)
}

func mustEval(t *testing.T, src string) any {
	t.Helper()
	v, err := eval(t, src, nil)
	if err != nil {
		t.Fatalf("Eval(%q): %v", src, err)
	}
	return v
}

func TestFuncValues(t *testing.T) {
	cases := []struct {
		src  string
		want any
	}{
		{`${ sha256("abc") }`, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{`${ sha1("abc") }`, "a9993e364706816aba3e25717850c26c9cd0d89d"},
		{`${ md5("abc") }`, "900150983cd24fb0d6963f7d28e17f72"},
		{`${ sha256(item) }`, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{`${ base64_encode("hello, world") }`, "aGVsbG8sIHdvcmxk"},
		{`${ base64_decode("aGVsbG8sIHdvcmxk") }`, "hello, world"},
		{`${ base64_decode("aGVsbG8sIHdvcmxk") == "hello, world" }`, true},
		{`${ base64_decode("aGk") }`, "hi"},       // unpadded
		{`${ base64_decode("-_8") }`, "\xfb\xff"}, // URL-safe alphabet
		{`${ hex("hi") }`, "6869"},
		{`${ hex(255) }`, "ff"},
		{`${ hex_decode("6869") }`, "hi"},
		{`${ basename("logs/app/server.log") }`, "server.log"},
		{`${ basename("C:\\logs\\a.log") }`, "a.log"},
		{`${ dirname("logs/app/server.log") }`, "logs/app"},
		{`${ dirname("server.log") }`, "."},
		{`${ ext("photos/cat.tar.gz") }`, ".gz"},
		{`${ ext("README") }`, ""},
		{`${ stem("photos/cat.jpg") }`, "cat"},
		{`${ stem("photos/archive.tar.gz") }`, "archive.tar"},
		{`${ count_primes(10) }`, 4},
		{`${ count_primes(2) }`, 0},
		{`${ count_primes(3) }`, 1},
		{`${ count_primes(-5) }`, 0},
		{`${ count_primes(100) }`, 25},
		{`${ upper(stem(item)) }`, "ABC"},
		{`${ thousands(1000000) }`, "1,000,000"},
		{`${ thousands(-1234) }`, "-1,234"},
		{`${ thousands(999) }`, "999"},
		{`${ thousands(1234567.25) }`, "1,234,567.25"},
		{`${ sprintf("%05d|%s|%.1f", 42, "x", 2.25) }`, "00042|x|2.2"},
		{`${ count_primes(1e2) }`, 25},
	}
	for _, c := range cases {
		v, err := eval(t, c.src, &Scope{Item: "abc", Ctx: context.Background()})
		if err != nil {
			t.Errorf("%s: %v", c.src, err)
			continue
		}
		if v != c.want {
			t.Errorf("%s = %#v, want %#v", c.src, v, c.want)
		}
	}
}

// The guide's CPU-bound example counts primes below each limit.
func TestCountPrimesGuide(t *testing.T) {
	want := map[int64]int{1_000_000: 78498, 2_000_000: 148933, 3_000_000: 216816, 4_000_000: 283146}
	for n, w := range want {
		got, err := CountPrimes(context.Background(), n)
		if err != nil || got != w {
			t.Errorf("CountPrimes(%d) = %d, %v; want %d", n, got, err, w)
		}
	}
	if v := mustEval(t, `${ count_primes(1000000) }`); v != 78498 {
		t.Errorf("count_primes(1000000) = %v", v)
	}
}

// Small limits against a naive count, around segment and word boundaries.
func TestCountPrimesAgainstNaive(t *testing.T) {
	isPrime := func(n int64) bool {
		if n < 2 {
			return false
		}
		for d := int64(2); d*d <= n; d++ {
			if n%d == 0 {
				return false
			}
		}
		return true
	}
	limits := []int64{0, 1, 2, 3, 4, 5, 9, 10, 11, 25, 26, 49, 50, 127, 128, 129, 130, 1000, 4097}
	for _, extra := range []int64{-3, -2, -1, 0, 1, 2, 3} {
		limits = append(limits, 2*segmentBits+extra, segmentBits+extra)
	}
	for _, n := range limits {
		want := 0
		for i := int64(0); i < n; i++ {
			if isPrime(i) {
				want++
			}
		}
		if got, err := CountPrimes(context.Background(), n); err != nil || got != want {
			t.Errorf("CountPrimes(%d) = %d, %v; want %d", n, got, err, want)
		}
	}
}

func TestCountPrimesLimits(t *testing.T) {
	_, err := eval(t, `${ count_primes(3000000000) }`, nil)
	if err == nil || !strings.Contains(err.Error(), "above the limit") {
		t.Fatalf("want a limit error, got %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = CountPrimes(ctx, MaxPrimeLimit)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled count: got %v, want context.Canceled", err)
	}
}

func TestSleep(t *testing.T) {
	for _, src := range []string{`${ sleep("1ms") }`, `${ sleep(0.001) }`, `${ sleep(0) }`} {
		if v, err := eval(t, src, nil); err != nil || v != nil {
			t.Errorf("%s = %v, %v; want nil, nil", src, v, err)
		}
	}
	// sleep returns nil, so ?? chains a value after it.
	if v := mustEval(t, `${ sleep("1ms") ?? "done" }`); v != "done" {
		t.Errorf("sleep ?? value = %v", v)
	}
	for _, src := range []string{`${ sleep("soon") }`, `${ sleep(-1) }`, `${ sleep(100000000) }`, `${ sleep("100000h") }`} {
		if _, err := eval(t, src, nil); err == nil || !strings.Contains(err.Error(), "sleep") {
			t.Errorf("%s: want a sleep error, got %v", src, err)
		}
	}
}

// sleep honours the scope's context: a cancelled run does not wait out an
// hour. No timing assertion: the context is cancelled before the call, and a
// sleep that ignored it would make the test time out.
func TestSleepCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := eval(t, `${ sleep("1h") }`, &Scope{Ctx: ctx})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want an error wrapping context.Canceled", err)
	}
	// And while already sleeping.
	ctx, cancel = context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := eval(t, `${ sleep(3600) }`, &Scope{Ctx: ctx})
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want an error wrapping context.Canceled", err)
	}
}

func TestFail(t *testing.T) {
	_, err := eval(t, `${ item.b == 0 ? fail("cannot divide by zero") : item.a / item.b }`,
		&Scope{Item: map[string]any{"a": 5, "b": 0}, Ctx: context.Background()})
	var fe *FailError
	if !errors.As(err, &fe) || fe.Msg != "cannot divide by zero" {
		t.Fatalf("got %v, want a *FailError with the message", err)
	}
	if !strings.Contains(err.Error(), "cannot divide by zero") {
		t.Fatalf("message lost: %v", err)
	}
}

// Arguments whose type is only known per item are checked when called,
// with an error that says what was expected.
func TestFuncRuntimeTypes(t *testing.T) {
	item := map[string]any{"n": "many", "p": int64(3), "f": 2.5}
	for src, want := range map[string]string{
		`${ count_primes(item.n) }`:  "count_primes() wants an integer, got the string \"many\"",
		`${ count_primes(item.f) }`:  "count_primes() wants an integer, got the number 2.5",
		`${ basename(item.p) }`:      "basename() wants a string, got the number 3",
		`${ base64_decode(item.p) }`: "base64_decode() wants a string",
		`${ thousands(item.n) }`:     "thousands() wants a number",
		`${ sleep(item) }`:           "sleep() wants a duration string or a number of seconds, got a mapping",
	} {
		_, err := eval(t, src, &Scope{Item: item, Ctx: context.Background()})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", src, err, want)
		}
	}
	if v, err := eval(t, `${ count_primes(item.p * 10) }`, &Scope{Item: item, Ctx: context.Background()}); err != nil || v != 10 {
		t.Errorf("count_primes(int64) = %v, %v", v, err)
	}
}

func TestFuncTypeChecks(t *testing.T) {
	for _, src := range []string{
		`${ sleep(true) }`,
		`${ count_primes("many") }`,
		`${ basename(42) }`,
		`${ base64_decode(1) }`,
		`${ sha256() }`,
	} {
		if _, err := Compile(src); err == nil {
			t.Errorf("Compile(%s): want a type error", src)
		}
	}
}

// Expressions cannot be made to hang or eat memory.
func TestEvalGuards(t *testing.T) {
	for _, src := range []string{
		`${ 1..1000000000000 }`,
		`${ len(1..1000000000000) }`,
		`${ map(1..900000, map(1..900000, #)) }`,
		`${ repeat("x", 1000000000) }`,
	} {
		_, err := eval(t, src, nil)
		if err == nil || !strings.Contains(err.Error(), "too large") {
			t.Errorf("%s: want a too-large error, got %v", src, err)
		}
	}
	// Deep nesting is refused when compiling.
	deep := "${ " + strings.Repeat("[", 20000) + "1" + strings.Repeat("]", 20000) + " }"
	if _, err := Compile(deep); err == nil {
		t.Errorf("deeply nested expression compiled")
	}
	long := "${ " + strings.Repeat("1 + ", 20000) + "1 }"
	if _, err := Compile(long); err == nil {
		t.Errorf("expression with 40000 nodes compiled")
	}
}

func BenchmarkCountPrimes4M(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if n, _ := CountPrimes(context.Background(), 4_000_000); n != 283146 {
			b.Fatal(n)
		}
	}
}

func BenchmarkSleepZero(b *testing.B) {
	tt, _ := Compile(`${ sleep(0) }`)
	s := &Scope{Ctx: context.Background()}
	for b.Loop() {
		_, _ = tt.Eval(s)
	}
}

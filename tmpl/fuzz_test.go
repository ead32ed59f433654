package tmpl

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/flowrun/flow/internal/fuzzguard"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
)

// fuzzSeeds are templates in the shapes pipelines use, plus the guard cases;
// the committed corpus under testdata/fuzz adds the inputs that once broke
// something.
var fuzzSeeds = []string{
	"plain text",
	"${ item }",
	"${ item * 2 }",
	"${ item.name }: $${ item.price }",
	"${ vars.base_url }/posts/${ item }",
	"${ {\"a\": item, \"b\": [1, 2, index]} }",
	"${ len(split(item.path, \"/\")) > 2 ? \"deep\" : \"flat\" }",
	"${ sha256(item) } ${ base64_encode(\"x\") } ${ hex(255) }",
	"${ basename(item.path) } ${ stem(\"a/b.c\") } ${ ext(\"x.tar.gz\") }",
	"${ count_primes(1000) }",
	"${ sleep(0) }",
	"${ fail(\"boom\") }",
	"${ thousands(1234567.5) } ${ sprintf(\"%05d\", 3) }",
	"${ 1..1000000000000 }",
	"${ map(1..900000, map(1..900000, #)) }",
	"${ repeat(\"x\", 1000000000) }",
	"${ \"}\" + '{' + `}` }",
	"${",
	"${ }",
	"${ item[\"a\"]?.b ?? \"none\" }",
	"${ env.HOME }${ index }",
	"${ filter(item.list, # > 1) | map(# * 2) }",
	"${ 1 / 0 } ${ 1 % 0 }",
}

// FuzzTemplate: any template string compiles or is refused with an error
// that carries an offset inside the string; a compiled one evaluates against
// assorted items without panicking, and within a bound (sleep and
// count_primes honour the context; huge values hit the memory budget).
func FuzzTemplate(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	items := []any{
		nil, "text", int64(42), 3.5, true,
		[]any{int64(1), "two", nil},
		map[string]any{"name": "n", "price": 1.5, "path": "a/b/c.jpg", "list": []any{int64(1), int64(2), int64(3)}, "a": map[string]any{"b": "x"}},
	}
	f.Fuzz(func(t *testing.T, src string) {
		fuzzguard.Run(t, func(fatalf func(format string, args ...any)) {
			tt, err := Compile(src)
			if err != nil {
				oe, ok := err.(*OffsetError)
				if !ok {
					fatalf("Compile(%q): error %T is not an *OffsetError: %v", src, err, err)
				}
				if oe.Offset < 0 || oe.Offset > len(src) {
					fatalf("Compile(%q): offset %d outside the %d-byte source", src, oe.Offset, len(src))
				}
				if oe.Msg == "" {
					fatalf("Compile(%q): empty message", src)
				}
				return
			}
			_ = tt.IsConst()
			_ = tt.CheckVars(map[string]any{"base_url": "http://x"})
			for i, item := range items {
				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				start := time.Now()
				v, err := tt.Eval(&Scope{Item: item, Index: int64(i), Vars: map[string]any{"base_url": "http://x"}, Env: map[string]string{"HOME": "/root"}, Ctx: ctx})
				cancel()
				if err != nil && err.Error() == "" {
					fatalf("Eval(%q): empty error", src)
				}
				if err == nil {
					_ = Stringify(v)
				}
				// A generous bound: the context stops sleep and count_primes at
				// 200ms; anything far beyond it is evaluation that ignores it.
				if d := time.Since(start); d > 20*time.Second {
					fatalf("Eval(%q) took %v", src, d)
				}
			}
		})
	})
}

// FuzzFromNode: any YAML document compiles leaf by leaf or fails with a
// positioned error, never a panic.
func FuzzFromNode(f *testing.F) {
	for _, s := range []string{
		"value: {symbol: \"${ item }\", price: \"${ prices[item] }\"}",
		"[1, \"${ item }\", {a: b}]",
		"&a [*a]",
		"\"${ item\"",
		"!!binary aGVsbG8=",
		"{? [a]: b}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		fuzzguard.Run(t, func(fatalf func(format string, args ...any)) {
			var doc yaml.Node
			if yaml.Unmarshal([]byte(src), &doc) != nil || len(doc.Content) == 0 {
				return
			}
			// spec.Parse refuses such documents before anything walks them.
			if conf.CheckAliases(doc.Content[0]) != nil {
				return
			}
			tt, err := FromNode(doc.Content[0])
			if err != nil {
				if strings.TrimSpace(err.Error()) == "" {
					fatalf("FromNode(%q): empty error", src)
				}
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			_, _ = tt.Eval(&Scope{Item: "x", Ctx: ctx})
		})
	})
}

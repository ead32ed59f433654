// Package redact hides the values of secrets in text flow prints or
// records: the engine's failures and events, and the command line's own
// messages.
//
// A secret rarely travels as written: a JSON encoder turns "&" into
// "\u0026", a query string turns " " into "+" and "&" into "%26", an
// Authorization header carries it in base64, and a message cut to a preview
// keeps only its start. A Redactor hides the secret in each of those forms,
// and the part of a secret left next to a cut ("...", "…").
package redact

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// Mark replaces every secret.
const Mark = "***"

// MinFragment is the shortest start or end of a secret hidden next to a
// cut. Shorter fragments say too little to be worth mangling the text
// around every "...".
const MinFragment = 4

// minEncoded is the shortest encoded form looked for: a base64 core of a
// very short secret would match ordinary text.
const minEncoded = 6

// Redactor hides a fixed set of secrets. The zero value and nil hide nothing.
type Redactor struct {
	r     *strings.Replacer
	forms []string // every form of every secret, longest first
}

// New returns a Redactor for secrets; empty strings are ignored.
func New(secrets []string) *Redactor {
	seen := map[string]bool{}
	var forms []string
	for _, s := range secrets {
		if s == "" {
			continue
		}
		for _, f := range Forms(s) {
			if !seen[f] {
				seen[f] = true
				forms = append(forms, f)
			}
		}
	}
	if len(forms) == 0 {
		return &Redactor{}
	}
	// Longest first: strings.Replacer tries its pairs in order at each
	// position, so a secret containing another is hidden whole.
	sort.SliceStable(forms, func(i, j int) bool { return len(forms[i]) > len(forms[j]) })
	pairs := make([]string, 0, 2*len(forms))
	for _, f := range forms {
		pairs = append(pairs, f, Mark)
	}
	return &Redactor{r: strings.NewReplacer(pairs...), forms: forms}
}

// Forms lists the texts a secret is hidden under: itself, its JSON string
// escapes (Go's, with and without HTML escaping, ASCII-only as Python
// writes it, and with "\/"), its percent-encodings (query and path, upper-
// and lower-case hex) and its base64 (both alphabets, at each of the three
// alignments it can have inside a longer encoded text).
func Forms(s string) []string {
	out := []string{s}
	add := func(f string) {
		if f != s && len(f) >= minEncoded {
			out = append(out, f)
		}
	}
	for _, f := range jsonForms(s) {
		add(f)
	}
	for _, f := range []string{url.QueryEscape(s), url.PathEscape(s), strings.ReplaceAll(url.QueryEscape(s), "+", "%20")} {
		add(f)
		add(lowerHex(f))
	}
	for _, f := range base64Cores(s) {
		add(f)
	}
	return out
}

func jsonForms(s string) []string {
	var html, plain strings.Builder
	_ = json.NewEncoder(&html).Encode(s)
	enc := json.NewEncoder(&plain)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	h := unquote(html.String())
	p := unquote(plain.String())
	return []string{h, p, asciiJSON(s), strings.ReplaceAll(h, "/", `\/`), strings.ReplaceAll(p, "/", `\/`)}
}

func unquote(enc string) string {
	enc = strings.TrimSuffix(enc, "\n")
	return strings.TrimSuffix(strings.TrimPrefix(enc, `"`), `"`)
}

// asciiJSON escapes s as json.dumps does with ensure_ascii (Python's
// default): short escapes for the usual controls, \uXXXX (lower-case hex,
// surrogate pairs above the BMP) for every other control and non-ASCII rune.
func asciiJSON(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r < 0x20 || (r > 0x7e && r < 0x10000):
			fmt.Fprintf(&b, `\u%04x`, r)
		case r >= 0x10000:
			r -= 0x10000
			fmt.Fprintf(&b, `\u%04x\u%04x`, 0xd800+(r>>10), 0xdc00+(r&0x3ff))
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// lowerHex rewrites the %XX escapes of f in lower case, as some encoders
// and servers echo them.
func lowerHex(f string) string {
	b := []byte(f)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			for j := i + 1; j <= i+2; j++ {
				if b[j] >= 'A' && b[j] <= 'F' {
					b[j] += 'a' - 'A'
				}
			}
		}
	}
	return string(b)
}

// base64Cores returns, for each alphabet and each offset (0, 1 or 2 bytes)
// at which s may start inside encoded data, the characters of the encoding
// that depend on s alone. "Basic dXNlcjpzZWNyZXQ=" holds user:secret; the
// core of "secret" at offset 2 (5 bytes of "user:" before it) is found in it.
func base64Cores(s string) []string {
	var out []string
	for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
		for pad := 0; pad < 3; pad++ {
			full := enc.EncodeToString(append(make([]byte, pad), s...))
			from := (8*pad + 5) / 6
			to := 8 * (pad + len(s)) / 6
			if to-from >= minEncoded {
				out = append(out, full[from:to])
			}
		}
	}
	return out
}

// String returns s with every secret, in every form, replaced by Mark, and
// any start or end of one left next to a cut.
func (r *Redactor) String(s string) string {
	if r == nil || r.r == nil {
		return s
	}
	s = r.r.Replace(s)
	if strings.Contains(s, "...") || strings.Contains(s, "…") {
		s = r.cuts(s)
	}
	return s
}

// cuts hides the part of a secret that a shortened text left right before
// or right after its cut mark: "Bearer s3cr..." keeps the start of
// "s3cr3t-token", "...oken" its end.
func (r *Redactor) cuts(s string) string {
	var b strings.Builder
	last := 0
	for i := 0; i < len(s); {
		m := cutMark(s[i:])
		if m == 0 {
			i++
			continue
		}
		if k := r.fragmentBefore(s[last:i]); k > 0 {
			b.WriteString(s[last : i-k])
			b.WriteString(Mark)
		} else {
			b.WriteString(s[last:i])
		}
		b.WriteString(s[i : i+m])
		i += m
		if k := r.fragmentAfter(s[i:]); k > 0 {
			b.WriteString(Mark)
			i += k
		}
		last = i
	}
	b.WriteString(s[last:])
	return b.String()
}

func cutMark(s string) int {
	switch {
	case strings.HasPrefix(s, "..."):
		return 3
	case strings.HasPrefix(s, "…"):
		return len("…")
	}
	return 0
}

// fragmentBefore is the length of the longest start of a secret (at least
// MinFragment bytes, shorter than the secret) that text ends with.
func (r *Redactor) fragmentBefore(text string) int {
	best := 0
	for _, f := range r.forms {
		// The leftmost j where text[j:] starts f is the longest start.
		for j := max(0, len(text)-(len(f)-1)); j <= len(text)-max(MinFragment, best+1); j++ {
			if text[j] == f[0] && strings.HasPrefix(f, text[j:]) {
				best = len(text) - j
				break
			}
		}
	}
	return best
}

// fragmentAfter is the length of the longest end of a secret that text
// starts with.
func (r *Redactor) fragmentAfter(text string) int {
	best := 0
	if text == "" {
		return 0
	}
	for _, f := range r.forms {
		// The leftmost i where f[i:] starts text is the longest end.
		for i := max(1, len(f)-len(text)); i <= len(f)-max(MinFragment, best+1); i++ {
			if f[i] == text[0] && strings.HasPrefix(text, f[i:]) {
				best = len(f) - i
				break
			}
		}
	}
	return best
}

// Value returns v with every string inside it redacted, map keys included;
// v is not modified.
func (r *Redactor) Value(v any) any {
	if r == nil || r.r == nil {
		return v
	}
	switch x := v.(type) {
	case string:
		return r.String(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = r.Value(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[r.String(k)] = r.Value(e)
		}
		return out
	case int64:
		return r.number(v, strconv.FormatInt(x, 10))
	case int:
		return r.number(v, strconv.Itoa(x))
	case float64:
		return r.number(v, strconv.FormatFloat(x, 'g', -1, 64))
	}
	return v
}

// number hides a number whose digits hold a secret: an expression such as
// int(vars.pin) turns a secret into one.
func (r *Redactor) number(v any, text string) any {
	if red := r.String(text); red != text {
		return red
	}
	return v
}

// Active reports whether there is anything to hide.
func (r *Redactor) Active() bool { return r != nil && r.r != nil }

package engine

import (
	"sort"
	"strings"
)

// redactor hides the values of secret variables in what the engine writes
// itself: failure messages, failed items and the run's reason.
type redactor struct {
	r *strings.Replacer
}

const redacted = "***"

func newRedactor(secrets []string) *redactor {
	if len(secrets) == 0 {
		return &redactor{}
	}
	s := append([]string(nil), secrets...)
	// Longest first, so that a secret containing another is hidden whole.
	sort.Slice(s, func(i, j int) bool { return len(s[i]) > len(s[j]) })
	var pairs []string
	for _, x := range s {
		pairs = append(pairs, x, redacted)
	}
	return &redactor{r: strings.NewReplacer(pairs...)}
}

func (r *redactor) String(s string) string {
	if r.r == nil {
		return s
	}
	return r.r.Replace(s)
}

// Value returns v with every string inside it redacted; v is not modified.
func (r *redactor) Value(v any) any {
	if r.r == nil {
		return v
	}
	switch x := v.(type) {
	case string:
		return r.r.Replace(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = r.Value(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[r.r.Replace(k)] = r.Value(e)
		}
		return out
	}
	return v
}

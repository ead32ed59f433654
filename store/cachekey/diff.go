package cachekey

import (
	"fmt"
	"sort"
	"strings"
)

// Change is one difference between two keys' parts.
type Change struct {
	// Part is "format", "kind", "option", "item", "file", "env" or "salt".
	Part string `json:"part"`
	// Name is the option's dotted path, the file's path or the variable's
	// name; empty for the other parts.
	Name string `json:"name,omitempty"`
	// Was and Now render the stored and the current value ("" when absent;
	// digests for files, environment values and large items).
	Was string `json:"was"`
	Now string `json:"now"`
}

func (c Change) String() string {
	what := c.Part
	if c.Name != "" {
		what += " " + c.Name
	}
	switch {
	case c.Was == "" && c.Part != "salt":
		return fmt.Sprintf("%s added: %s", what, c.Now)
	case c.Now == "" && c.Part != "salt":
		return fmt.Sprintf("%s removed (was %s)", what, c.Was)
	}
	return fmt.Sprintf("%s changed: %s -> %s", what, quoteEmpty(c.Was), quoteEmpty(c.Now))
}

func quoteEmpty(s string) string {
	if s == "" {
		return `""`
	}
	return s
}

// Diff lists what differs from was (a stored entry's parts) to now, in a
// stable order: format, kind, salt, options key by key, item, files,
// environment variables.
func Diff(was, now Parts) []Change {
	var out []Change
	if was.Format != now.Format {
		out = append(out, Change{Part: "format", Was: fmt.Sprint(was.Format), Now: fmt.Sprint(now.Format)})
	}
	if was.Kind != now.Kind {
		out = append(out, Change{Part: "kind", Was: was.Kind, Now: now.Kind})
	}
	if was.Salt != now.Salt {
		out = append(out, Change{Part: "salt", Was: was.Salt, Now: now.Salt})
	}
	out = diffValues(out, "", was.Options, now.Options)
	if was.ItemDigest != now.ItemDigest {
		out = append(out, Change{Part: "item", Was: itemText(was), Now: itemText(now)})
	}
	out = diffMaps(out, "file", was.Files, now.Files)
	out = diffMaps(out, "env", was.Env, now.Env)
	return out
}

func itemText(p Parts) string {
	if len(p.Item) > 0 {
		return string(p.Item)
	}
	return "sha256:" + p.ItemDigest
}

func diffMaps(out []Change, part string, was, now map[string]string) []Change {
	for _, k := range unionKeys(was, now) {
		w, wok := was[k]
		n, nok := now[k]
		if wok && nok && w == n {
			continue
		}
		out = append(out, Change{Part: part, Name: k, Was: digestText(w, wok), Now: digestText(n, nok)})
	}
	return out
}

func digestText(d string, ok bool) string {
	if !ok {
		return ""
	}
	return "sha256:" + shortDigest(d)
}

func shortDigest(d string) string {
	if len(d) > 12 {
		return d[:12]
	}
	return d
}

// diffValues compares two option values, descending into mappings so that
// a change deep in headers names its header.
func diffValues(out []Change, path string, was, now any) []Change {
	wm, wok := was.(map[string]any)
	nm, nok := now.(map[string]any)
	if wok && nok {
		for _, k := range unionKeys(wm, nm) {
			p := k
			if path != "" {
				p = path + "." + k
			}
			w, inW := wm[k]
			n, inN := nm[k]
			switch {
			case inW && inN:
				out = diffValues(out, p, w, n)
			case inW:
				out = append(out, Change{Part: "option", Name: p, Was: valueText(w)})
			default:
				out = append(out, Change{Part: "option", Name: p, Now: valueText(n)})
			}
		}
		return out
	}
	if w, n := valueText(was), valueText(now); w != n {
		out = append(out, Change{Part: "option", Name: path, Was: w, Now: n})
	}
	return out
}

func valueText(v any) string {
	s := string(Canonical(v))
	if len(s) > 200 {
		s = s[:197] + "..."
	}
	return s
}

func unionKeys[V any](a, b map[string]V) []string {
	seen := make(map[string]bool, len(a)+len(b))
	var keys []string
	for _, m := range []map[string]V{a, b} {
		for k := range m {
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}
	sort.Strings(keys)
	return keys
}

// Describe renders changes one per line, for `flow cache explain`.
func Describe(changes []Change) string {
	var b strings.Builder
	for _, c := range changes {
		b.WriteString(c.String())
		b.WriteByte('\n')
	}
	return b.String()
}

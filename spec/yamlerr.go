package spec

import (
	"fmt"
	"reflect"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
)

// yamlError turns a yaml.v3 syntax error into one diagnostic. yaml.v3 gives
// only a line, often the line where the enclosing block started rather than
// the one at fault, and says what its grammar expected rather than what the
// person should do; the common mistakes are recognised in the text itself
// and said in a person's words at their own line and column.
func yamlError(file string, data []byte, err error) conf.Diag {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line, rest := 0, msg
	if n, _ := fmt.Sscanf(msg, "line %d:", &line); n == 1 {
		_, rest, _ = strings.Cut(msg, ": ")
		if parserProblem(rest) {
			line++
		}
	}
	lines := strings.Split(string(data), "\n")
	for _, explain := range []func([]string, int, string) (conf.Pos, string, bool){
		tabIndent, unquotedExpr, unclosed, colonInValue, overIndented, underIndented,
	} {
		if pos, what, ok := explain(lines, line, rest); ok {
			return conf.Diag{File: file, Pos: pos, Msg: what}
		}
	}
	if line == 0 {
		line = 1
	}
	return conf.Diag{File: file, Pos: conf.Pos{Line: line, Col: 1}, Msg: "invalid YAML: " + rest}
}

// parserProblem reports whether a yaml.v3 message comes from its parser
// rather than its scanner: yaml.v3 prints the parser's 0-based line as is (and
// the scanner's plus one), so parser errors would point one line too early.
func parserProblem(msg string) bool {
	for _, p := range []string{
		"did not find expected <", "did not find expected key", "did not find expected node content",
		"did not find expected ',' or", "did not find expected '-' indicator",
	} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// col is the 1-based column of byte offset i in s, counted in characters as
// yaml.v3 counts them.
func col(s string, i int) int { return utf8.RuneCountInString(s[:i]) + 1 }

// indentOf returns the leading blanks of a line and whether the line holds
// anything but blanks and a comment.
func indentOf(s string) (indent string, content bool) {
	rest := strings.TrimLeft(s, " \t")
	indent = s[:len(s)-len(rest)]
	rest = strings.TrimRight(rest, " \t\r")
	return indent, rest != "" && !strings.HasPrefix(rest, "#")
}

// tabIndent finds a tab in the indentation of a line at or before the error
// (YAML forbids tabs there; yaml.v3 reports them as "cannot start any token"
// or at the line of the enclosing block).
func tabIndent(lines []string, line int, _ string) (conf.Pos, string, bool) {
	for i, l := range lines {
		if line > 0 && i+1 > line+1 {
			break
		}
		indent, content := indentOf(l)
		if t := strings.IndexByte(indent, '\t'); t >= 0 && content {
			return conf.Pos{Line: i + 1, Col: col(l, t)}, "tabs cannot indent YAML; use spaces (set your editor to insert spaces for .yaml files)", true
		}
	}
	return conf.Pos{}, "", false
}

// unquotedExpr finds a "${ expr }" that starts a value inside a flow
// mapping or list ({value: ${ item }}): there YAML reads "{" as the start of
// another mapping, and the expression has to be quoted.
func unquotedExpr(lines []string, line int, msg string) (conf.Pos, string, bool) {
	if !strings.HasPrefix(msg, "did not find expected") && !strings.Contains(msg, "flow") {
		return conf.Pos{}, "", false
	}
	for i := min(line, len(lines)) - 1; i >= 0 && i >= line-3; i-- {
		if at, expr, ok := findUnquotedExpr(lines[i]); ok {
			return conf.Pos{Line: i + 1, Col: col(lines[i], at)},
				fmt.Sprintf("quote an expression that starts a value: %q; unquoted, YAML reads its \"{\" as the start of a mapping", expr), true
		}
	}
	return conf.Pos{}, "", false
}

// findUnquotedExpr returns the offset and text of the first "${ ... }" on a
// line that starts a value (after ':', '{', '[', ',' or '-') outside quotes
// and comments.
func findUnquotedExpr(l string) (int, string, bool) {
	var quote byte
	prev := byte(' ') // last non-blank byte outside quotes
	for i := 0; i < len(l); i++ {
		c := l[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
			continue
		case (c == '"' || c == '\'') && startsValue(l[:i]):
			quote = c
		case c == '#' && (i == 0 || l[i-1] == ' '):
			return 0, "", false
		case c == '$' && i+1 < len(l) && l[i+1] == '{' && strings.ContainsRune(":{[,- ", rune(prev)):
			end := closingBrace(l[i+2:])
			if end < 0 {
				return i, l[i:], true
			}
			return i, l[i : i+2+end+1], true
		}
		if c != ' ' && c != '\t' {
			prev = c
		}
	}
	return 0, "", false
}

// startsValue reports whether a character after before would start a YAML
// value, where a quote opens a quoted string (an apostrophe inside plain
// text, as in "it's", does not).
func startsValue(before string) bool {
	b := strings.TrimRight(before, " \t")
	return b == "" || strings.ContainsRune(":{[,-?", rune(b[len(b)-1]))
}

func closingBrace(s string) int {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '{':
			depth++
		case '}':
			if depth == 0 {
				return i
			}
			depth--
		}
	}
	return -1
}

// key returns the key of a "key: value" or "key:" line (after a "- " list
// marker), or "".
func key(l string) string {
	s := strings.TrimLeft(l, " ")
	s = strings.TrimPrefix(s, "- ")
	k, _, ok := strings.Cut(s, ":")
	if !ok || k == "" || strings.ContainsAny(k, " {[\"'#") {
		return ""
	}
	return k
}

// previous returns the index of the last line before i that holds content.
func previous(lines []string, i int) int {
	for j := i - 1; j >= 0; j-- {
		if _, content := indentOf(lines[j]); content {
			return j
		}
	}
	return -1
}

// keyCol is the column where the key of a line starts (after "- ").
func keyCol(l string) int {
	indent, _ := indentOf(l)
	n := len(indent)
	if strings.HasPrefix(l[n:], "- ") {
		n += 2
		for n < len(l) && l[n] == ' ' {
			n++
		}
	}
	return n + 1
}

// overIndented explains "mapping values are not allowed in this context" on
// a key indented more than the key before it, which already has its value
// (step: compute followed by "     with:").
func overIndented(lines []string, line int, msg string) (conf.Pos, string, bool) {
	if !strings.HasPrefix(msg, "mapping values are not allowed") || line < 1 || line > len(lines) {
		return conf.Pos{}, "", false
	}
	l := lines[line-1]
	k := key(l)
	p := previous(lines, line-1)
	if k == "" || p < 0 || key(lines[p]) == "" || !hasValue(lines[p]) {
		return conf.Pos{}, "", false
	}
	indent, _ := indentOf(l)
	return conf.Pos{Line: line, Col: len(indent) + 1},
		fmt.Sprintf("%s: is indented more than %s: on line %d; keys of one mapping must start in the same column: move %s: to column %d",
			k, key(lines[p]), p+1, k, keyCol(lines[p])), true
}

// hasValue reports whether a "key: value" line has a value after its key
// (a line that ends at "key:" opens a block: the next line may be indented).
func hasValue(l string) bool {
	_, v, ok := strings.Cut(l, ":")
	v = strings.TrimSpace(v)
	return ok && v != "" && !strings.HasPrefix(v, "#")
}

// colonInValue explains "mapping values are not allowed in this context" on
// a plain value that holds ": " (value: ${ item }: x, or a URL written
// "host: port"): YAML reads it as a second key on the same line.
func colonInValue(lines []string, line int, msg string) (conf.Pos, string, bool) {
	if !strings.HasPrefix(msg, "mapping values are not allowed") || line < 1 || line > len(lines) {
		return conf.Pos{}, "", false
	}
	l := lines[line-1]
	k := key(l)
	if k == "" {
		return conf.Pos{}, "", false
	}
	start := strings.Index(l, k+":") + len(k) + 1
	rest := l[start:]
	v := strings.TrimSpace(rest)
	if v == "" || strings.ContainsAny(v[:1], "\"'{[|>&*!") {
		return conf.Pos{}, "", false
	}
	i := strings.Index(rest, ": ")
	if i < 0 && strings.HasSuffix(strings.TrimRight(rest, " \r"), ":") {
		i = len(strings.TrimRight(rest, " \r")) - 1
	}
	if i < 0 {
		return conf.Pos{}, "", false
	}
	return conf.Pos{Line: line, Col: col(l, start+i)},
		fmt.Sprintf("the value of %s: holds \": \", which YAML reads as the start of another key; quote the whole value: %s: %q", k, k, v), true
}

// unclosed explains a quoted string or a { or [ that is never closed, which
// yaml.v3 reports at the end of the file or where the next entry starts.
func unclosed(lines []string, line int, msg string) (conf.Pos, string, bool) {
	quoteErr := strings.HasPrefix(msg, "found unexpected end of stream")
	flowErr := strings.HasPrefix(msg, "did not find expected ',' or")
	if !quoteErr && !flowErr {
		return conf.Pos{}, "", false
	}
	for i := min(line, len(lines)) - 1; i >= 0 && i >= line-3; i-- {
		l := lines[i]
		var quote byte
		qat := -1
		var open []int
		for j := 0; j < len(l); j++ {
			c := l[j]
			switch {
			case quote != 0:
				if c == quote {
					quote, qat = 0, -1
				}
			case (c == '"' || c == '\'') && startsValue(l[:j]):
				quote, qat = c, j
			case c == '#' && (j == 0 || l[j-1] == ' '):
				j = len(l)
			case c == '{' || c == '[':
				open = append(open, j)
			case (c == '}' || c == ']') && len(open) > 0:
				if l[open[len(open)-1]] != map[byte]byte{'}': '{', ']': '['}[c] {
					j = len(l) // closes the wrong one: the last opened is unclosed
					continue
				}
				open = open[:len(open)-1]
			}
		}
		if quoteErr && qat >= 0 {
			return conf.Pos{Line: i + 1, Col: col(l, qat)},
				fmt.Sprintf("this %c-quoted string is never closed: add the closing %c on this line", quote, quote), true
		}
		if flowErr && len(open) > 0 {
			j := open[len(open)-1]
			closer := map[byte]byte{'{': '}', '[': ']'}[l[j]]
			return conf.Pos{Line: i + 1, Col: col(l, j)},
				fmt.Sprintf("this %c is never closed: close it with %c", l[j], closer), true
		}
	}
	return conf.Pos{}, "", false
}

// underIndented explains "did not find expected '-' indicator", which
// yaml.v3 reports at the start of the list: a key of a list entry indented
// less than the entry's other keys (with: under "  - name: b").
func underIndented(lines []string, line int, msg string) (conf.Pos, string, bool) {
	if !strings.HasPrefix(msg, "did not find expected '-' indicator") || line < 1 || line > len(lines) {
		return conf.Pos{}, "", false
	}
	// yaml.v3 names the line of the list's first entry, one before or at it.
	start := line - 1
	for start < len(lines) && !strings.HasPrefix(strings.TrimLeft(lines[start], " "), "- ") {
		start++
	}
	if start >= len(lines) {
		return conf.Pos{}, "", false
	}
	dash, _ := indentOf(lines[start])
	for i := start + 1; i < len(lines); i++ {
		indent, content := indentOf(lines[i])
		if !content || len(indent) > len(dash) {
			continue
		}
		if len(indent) < len(dash) {
			return conf.Pos{}, "", false
		}
		if strings.HasPrefix(lines[i][len(indent):], "- ") {
			continue // the next entry
		}
		k := key(lines[i])
		p := previous(lines, i)
		if k == "" || p < 0 || key(lines[p]) == "" {
			return conf.Pos{}, "", false
		}
		return conf.Pos{Line: i + 1, Col: len(indent) + 1},
			fmt.Sprintf("%s: is indented less than %s: on line %d, so it is neither in that mapping nor a new list entry: move %s: to column %d",
				k, key(lines[p]), p+1, k, keyCol(lines[p])), true
	}
	return conf.Pos{}, "", false
}

// stageKeys are the keys a stage mapping may hold.
var stageKeys = func() map[string]bool {
	m := map[string]bool{}
	t := reflect.TypeFor[Stage]()
	for i := range t.NumField() {
		if k, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); k != "" && k != "-" {
			m[k] = true
		}
	}
	return m
}()

var stageKeyList = func() []string {
	var out []string
	for k := range stageKeys {
		out = append(out, k)
	}
	return out
}()

// explainFlatWith recognises a step's options written at the indentation of
// "with:" instead of under it: with: is then empty, and each option is an
// unknown stage key. The decoder's messages for that ("unknown key value",
// "missing required key value") are replaced by one that says what to do.
func explainFlatWith(root *yaml.Node, ds conf.Diags) conf.Diags {
	stages := conf.Lookup(root, "stages")
	if stages == nil || stages.Kind != yaml.SequenceNode {
		return ds
	}
	drop := map[conf.Pos]bool{}
	var add conf.Diags
	for _, s := range stages.Content {
		if s.Kind != yaml.MappingNode {
			continue
		}
		var with, empty *yaml.Node
		var stray []*yaml.Node
		for i := 0; i+1 < len(s.Content); i += 2 {
			k, v := s.Content[i], s.Content[i+1]
			switch {
			case k.Value == "with" && v.Kind == yaml.ScalarNode && v.Tag == "!!null":
				with, empty = k, v
			case with != nil && !stageKeys[k.Value] && conf.Suggest(k.Value, stageKeyList) == "":
				// A near miss of a stage key (timout:) is a typo, which the
				// decoder's suggestion names better.
				stray = append(stray, k)
			}
		}
		if with == nil || len(stray) == 0 {
			continue
		}
		drop[conf.NodePos(empty)] = true
		for _, k := range stray {
			drop[conf.NodePos(k)] = true
		}
		names := make([]string, len(stray))
		for i, k := range stray {
			names[i] = k.Value + ":"
		}
		add.Add(conf.NodePos(stray[0]), "%s is not a stage key: options of the step go under with: (line %d), indented more than it, e.g. in column %d",
			strings.Join(names, ", "), with.Line, with.Column+2)
	}
	if len(add) == 0 {
		return ds
	}
	out := add
	for _, d := range ds {
		if !drop[d.Pos] {
			out = append(out, d)
		}
	}
	return out
}

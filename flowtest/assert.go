package flowtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/tmpl"
)

// asserter checks one case's expectations against its run.
type asserter struct {
	s        *Suite
	c        *Case
	o        *outcome
	update   bool
	failures []Failure
	updated  string
}

func (a *asserter) failAt(p conf.Pos, format string, args ...any) *Failure {
	if p.IsZero() {
		p = conf.NodePos(a.c.Node)
	}
	a.failures = append(a.failures, Failure{File: a.s.File, Pos: p, Msg: fmt.Sprintf(format, args...)})
	return &a.failures[len(a.failures)-1]
}

// key is the position of an expectation's value, or of expect: itself.
func (a *asserter) key(k string) conf.Pos {
	if p := conf.ValuePos(a.c.Expect.Node, k); !p.IsZero() {
		return p
	}
	return conf.KeyPos(a.c.Node, "expect")
}

func (a *asserter) check() {
	e := &a.c.Expect
	want := 0
	if e.Errors != nil {
		want = 2
	}
	if e.Exit != nil {
		want = *e.Exit
	}
	if e.Errors != nil {
		a.checkErrors()
	}
	if a.o.invalid != nil {
		if e.Errors == nil && want != 2 {
			var lines []string
			for _, d := range a.o.invalid.WithFile(a.s.Pipeline) {
				lines = append(lines, d.String())
			}
			f := a.failAt(conf.Pos{}, "the pipeline is not valid, so nothing ran (expect errors: to test a broken file)")
			f.Got = strings.Join(lines, "\n")
			return
		}
		if want != 2 {
			a.failAt(a.key("exit"), "exit status: want %d, got 2 (the pipeline is not valid)", want)
		}
		return
	}
	if e.Errors != nil {
		return // checkErrors said the pipeline turned out valid
	}
	for _, u := range a.o.unmocked {
		a.failAt(conf.KeyPos(a.c.Node, "mocks"), "%s", u.Error())
	}
	if a.o.exit != want {
		f := a.failAt(a.key("exit"), "exit status: want %d, got %d", want, a.o.exit)
		if a.o.reason != "" {
			f.Msg += " (" + a.o.reason + ")"
		}
	}
	if e.Error != "" && !strings.Contains(a.o.reason, e.Error) {
		f := a.failAt(a.key("error"), "error: the reason the run did not succeed does not contain this text")
		f.Want, f.Got = e.Error, a.o.reason
		if a.o.reason == "" {
			f.Got = "(none: the run succeeded)"
		}
	}
	if e.Duration != nil && a.o.rep != nil && time.Duration(a.o.rep.Duration) != *e.Duration {
		a.failAt(a.key("duration"), "duration: want %s, got %s on the virtual clock", fmtDur(*e.Duration), fmtDur(time.Duration(a.o.rep.Duration)))
	}
	a.checkOutput()
	a.checkFiles()
	a.checkRequests()
	a.checkStages()
	a.checkAttempts()
}

// checkErrors compares the pipeline's validation errors with errors:.
func (a *asserter) checkErrors() {
	e := &a.c.Expect
	if a.o.invalid == nil {
		a.failAt(a.key("errors"), "errors: the pipeline is valid; want %d validation errors", len(e.Errors))
		return
	}
	got := a.o.invalid
	var gotLines []string
	for _, d := range got {
		gotLines = append(gotLines, fmt.Sprintf("%d:%d: %s", d.Line, d.Col, d.Msg))
	}
	used := make([]bool, len(got))
	ok := len(got) == len(e.Errors)
	for _, w := range e.Errors {
		line, col, text, _ := parseWantError(w)
		found := false
		for i, d := range got {
			if !used[i] && d.Line == line && d.Col == col && strings.Contains(d.Msg, text) {
				used[i], found = true, true
				break
			}
		}
		ok = ok && found
	}
	if !ok {
		f := a.failAt(a.key("errors"), "errors: the validation errors differ")
		f.Want, f.Got = strings.Join(e.Errors, "\n"), strings.Join(gotLines, "\n")
	}
}

func (a *asserter) checkOutput() {
	e := &a.c.Expect
	got := a.o.output
	if e.Count != nil && len(got) != *e.Count {
		a.failAt(a.key("count"), "count: want %d output items, got %d", *e.Count, len(got))
	}
	if e.Output != nil {
		want, err := nodeItems(e.Output)
		if err != nil {
			a.failAt(conf.NodePos(e.Output), "output: %v", err)
		} else if e.Order == "any" {
			a.unordered(e.Output, want, got)
		} else {
			a.ordered(conf.NodePos(e.Output), "output", want, got)
		}
	}
	if e.Contains != nil {
		want, err := nodeItems(e.Contains)
		if err != nil {
			a.failAt(conf.NodePos(e.Contains), "contains: %v", err)
		} else {
			_, missing := match(want, got)
			for _, i := range missing {
				f := a.failAt(conf.NodePos(e.Contains.Content[i]), "contains: no output item is equal to this one (%d items in the output)", len(got))
				f.Want = canon(want[i])
			}
		}
	}
	if e.Each != nil {
		for i, it := range got {
			if ok, err := truth(e.Each, it, int64(i)); err != nil || !ok {
				f := a.failAt(conf.NodePos(e.Each.Node()), "each: false for output item %d", i)
				if err != nil {
					f.Msg = fmt.Sprintf("each: output item %d: %v", i, err)
				}
				f.Got = canon(it)
				break
			}
		}
	}
	if e.All != nil {
		list := append([]any{}, got...)
		if ok, err := truth(e.All, list, 0); err != nil || !ok {
			f := a.failAt(conf.NodePos(e.All.Node()), "all: false over the %d output items", len(got))
			if err != nil {
				f.Msg = fmt.Sprintf("all: %v", err)
			}
		}
	}
	if e.Stdout != nil && string(a.o.stdout) != *e.Stdout {
		f := a.failAt(a.key("stdout"), "stdout: the printed text differs")
		f.Want, f.Got = *e.Stdout, string(a.o.stdout)
	}
	if e.Snapshot != nil && (e.Snapshot.On || e.Snapshot.Path != "") {
		a.snapshot(got)
	}
}

// ordered compares want and got item by item.
func (a *asserter) ordered(p conf.Pos, what string, want, got []any) {
	w, g := canonAll(want), canonAll(got)
	if strings.Join(w, "\n") == strings.Join(g, "\n") {
		return
	}
	at := p
	for i := range w {
		if i >= len(g) || w[i] != g[i] {
			if a.c.Expect.Output != nil && what == "output" && i < len(a.c.Expect.Output.Content) {
				at = conf.NodePos(a.c.Expect.Output.Content[i])
			}
			break
		}
	}
	f := a.failAt(at, "%s: want %d items, got %d; they differ", what, len(w), len(g))
	if len(w) == len(g) {
		f.Msg = fmt.Sprintf("%s: %d items as wanted, but they differ", what, len(w))
	}
	f.Want, f.Got = strings.Join(w, "\n"), strings.Join(g, "\n")
}

// unordered compares want and got as multisets.
func (a *asserter) unordered(n *yaml.Node, want, got []any) {
	extra, missing := match(want, got)
	if len(extra) == 0 && len(missing) == 0 {
		return
	}
	var w, g []string
	for _, i := range missing {
		w = append(w, canon(want[i]))
	}
	for _, i := range extra {
		g = append(g, canon(got[i]))
	}
	at := conf.NodePos(n)
	if len(missing) > 0 {
		at = conf.NodePos(n.Content[missing[0]])
	}
	f := a.failAt(at, "output (any order): %d wanted items are not in the output, %d output items were not wanted", len(missing), len(extra))
	f.Want, f.Got = strings.Join(w, "\n"), strings.Join(g, "\n")
}

// match pairs every wanted item with an equal output item: it returns the
// output items left over and the wanted items not found.
func match(want, got []any) (extra, missing []int) {
	free := map[string][]int{}
	for i, g := range got {
		k := canon(g)
		free[k] = append(free[k], i)
	}
	for i, w := range want {
		k := canon(w)
		if l := free[k]; len(l) > 0 {
			free[k] = l[1:]
			continue
		}
		missing = append(missing, i)
	}
	for _, l := range free {
		extra = append(extra, l...)
	}
	sortInts(extra)
	return extra, missing
}

func sortInts(s []int) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

func (a *asserter) checkStages() {
	for name, w := range a.c.Expect.Stages {
		if w == nil {
			continue
		}
		var st *report.Stage
		if a.o.rep != nil {
			for _, s := range a.o.rep.Stages {
				if s.Name == name {
					st = s
				}
			}
		}
		if st == nil {
			a.failAt(conf.KeyPos(conf.Lookup(a.c.Expect.Node, "stages"), name), "stages: no stage %q ran", name)
			continue
		}
		for _, c := range []struct {
			key  string
			want *int64
			got  int64
		}{
			{"in", w.In, st.In}, {"succeeded", w.Succeeded, st.Succeeded}, {"failed", w.Failed, st.Failed},
			{"skipped", w.Skipped, st.Skipped}, {"cancelled", w.Cancelled, st.Cancelled}, {"filtered", w.Filtered, st.Filtered},
			{"timed_out", w.TimedOut, st.TimedOut}, {"retries", w.Retries, st.Retries}, {"out", w.Out, st.Out},
		} {
			if c.want != nil && *c.want != c.got {
				a.failAt(conf.ValuePos(w.Node, c.key), "stage %q: %s: want %d, got %d", name, c.key, *c.want, c.got)
			}
		}
	}
}

func (a *asserter) checkAttempts() {
	for _, w := range a.c.Expect.Attempts {
		if w == nil {
			continue
		}
		l := a.o.attempts[attemptKey{w.Stage, w.Item}]
		if l == nil {
			a.failAt(conf.NodePos(w.Node), "attempts: item %d never left stage %q", w.Item, w.Stage)
			continue
		}
		if w.Outcome != "" && string(l.outcome) != w.Outcome {
			a.failAt(conf.ValuePos(w.Node, "outcome"), "attempts: item %d in stage %q: outcome: want %s, got %s", w.Item, w.Stage, w.Outcome, l.outcome)
		}
		if w.Count != nil && len(l.attempts) != *w.Count {
			a.failAt(conf.ValuePos(w.Node, "count"), "attempts: item %d in stage %q: want %d attempts, got %d", w.Item, w.Stage, *w.Count, len(l.attempts))
		}
		var starts, ends, classes []string
		for _, at := range l.attempts {
			starts = append(starts, fmtDur(at.Start.Sub(a.o.start)))
			ends = append(ends, fmtDur(at.End.Sub(a.o.start)))
			classes = append(classes, fmt.Sprintf("%q", at.Class))
		}
		cmp := func(key string, want, got []string) {
			if strings.Join(want, ", ") != strings.Join(got, ", ") {
				f := a.failAt(conf.ValuePos(w.Node, key), "attempts: item %d in stage %q: %s differ", w.Item, w.Stage, key)
				f.Want, f.Got = "["+strings.Join(want, ", ")+"]", "["+strings.Join(got, ", ")+"]"
			}
		}
		if w.Start != nil {
			cmp("start", durs(w.Start), starts)
		}
		if w.End != nil {
			cmp("end", durs(w.End), ends)
		}
		if w.Classes != nil {
			var wc []string
			for _, c := range w.Classes {
				wc = append(wc, fmt.Sprintf("%q", c))
			}
			cmp("classes", wc, classes)
		}
	}
}

func durs(ds []time.Duration) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = fmtDur(d)
	}
	return out
}

// fmtDur writes a duration as the test file would: "0s", "100ms", "1.5s".
func fmtDur(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	if d%time.Millisecond == 0 && d < time.Second {
		return fmt.Sprintf("%dms", d/time.Millisecond)
	}
	return d.String()
}

// snapshot compares the output with its stored file, or writes it.
func (a *asserter) snapshot(got []any) {
	sn := a.c.Expect.Snapshot
	name := sn.Path
	if name == "" {
		base := strings.TrimSuffix(filepath.Base(a.s.File), filepath.Ext(a.s.File))
		name = filepath.Join("testdata", base, slug(a.c.Name)+".jsonl")
	}
	name, err := confined(name)
	if err != nil {
		a.failAt(conf.NodePos(sn.Node), "snapshot: %v", err)
		return
	}
	var buf bytes.Buffer
	for _, it := range got {
		buf.WriteString(canon(it))
		buf.WriteByte('\n')
	}
	if a.update {
		if err := a.s.root.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			a.failAt(conf.NodePos(sn.Node), "snapshot: %v", err)
			return
		}
		if err := a.s.root.WriteFile(name, buf.Bytes(), 0o644); err != nil {
			a.failAt(conf.NodePos(sn.Node), "snapshot: %v", err)
			return
		}
		a.updated = filepath.Join(a.s.Dir, name)
		return
	}
	data, err := readBounded(a.s.root, name)
	if err != nil {
		a.failAt(conf.NodePos(sn.Node), "snapshot: %v; run flow test --update to write it", err)
		return
	}
	want, err := readJSONL(data)
	if err != nil {
		a.failAt(conf.NodePos(sn.Node), "snapshot %s:%v; run flow test --update to write it again", name, err)
		return
	}
	before := len(a.failures)
	a.ordered(conf.NodePos(sn.Node), "snapshot "+name, want, got)
	if len(a.failures) > before {
		a.failures[len(a.failures)-1].Msg += "; if the new output is right, run flow test --update"
	}
}

var unslug = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// slug makes a case name a file name.
func slug(name string) string {
	s := strings.Trim(unslug.ReplaceAllString(name, "-"), "-.")
	if s == "" {
		s = "case"
	}
	return s
}

// nodeItems reads a YAML list as items.
func nodeItems(n *yaml.Node) ([]any, error) {
	var v []any
	if err := n.Decode(&v); err != nil {
		return nil, err
	}
	for i := range v {
		v[i] = conf.Normalize(v[i])
	}
	return v, nil
}

// canon is an item's comparable text: JSON with sorted keys, so that 10 and
// 10.0 compare equal and mappings compare by keys.
func canon(v any) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Sprintf("%#v", v)
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

func canonAll(vs []any) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = canon(v)
	}
	return out
}

// truth evaluates an assertion's expression; anything but true fails it.
func truth(t *tmpl.T, item any, index int64) (bool, error) {
	v, err := t.Eval(&tmpl.Scope{Item: item, Index: index, Ctx: context.Background()})
	if err != nil {
		return false, err
	}
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("the expression gave %s, not true or false", canon(v))
	}
	return b, nil
}

func (a *asserter) checkFiles() {
	e := &a.c.Expect
	if e.Written != nil {
		var want []any
		for _, w := range e.Written {
			want = append(want, filepath.ToSlash(filepath.Clean(w)))
		}
		var got []any
		for _, g := range a.o.written {
			got = append(got, g)
		}
		if extra, missing := match(want, got); len(extra)+len(missing) > 0 {
			f := a.failAt(a.key("written"), "written: the files the run wrote differ (in any order)")
			f.Want, f.Got = strings.Join(sortedStrings(want), "\n"), strings.Join(sortedStrings(got), "\n")
		}
	}
	files := conf.Lookup(e.Node, "files")
	for p, w := range e.Files {
		if msg, bad := a.o.filesErr[p]; bad {
			a.failAt(conf.ValuePos(files, p), "files: %s", msg)
			continue
		}
		if got := a.o.files[p]; got != w {
			f := a.failAt(conf.ValuePos(files, p), "files: %s: the text differs", p)
			f.Want, f.Got = w, got
		}
	}
}

func sortedStrings(vs []any) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = fmt.Sprint(v)
	}
	sort.Strings(out)
	return out
}

func (a *asserter) checkRequests() {
	for _, w := range a.c.Expect.Requests {
		if w == nil {
			continue
		}
		var at []string
		for _, r := range a.o.requests {
			if wildcard(w.URL, r.URL) && (w.Method == "" || strings.EqualFold(w.Method, r.Method)) {
				at = append(at, fmtDur(r.Time.Sub(a.o.start)))
			}
		}
		if w.Count != nil && len(at) != *w.Count {
			a.failAt(conf.ValuePos(w.Node, "count"), "requests: %s: want %d requests, got %d", w.URL, *w.Count, len(at))
		}
		if w.At != nil && strings.Join(durs(w.At), ", ") != strings.Join(at, ", ") {
			f := a.failAt(conf.ValuePos(w.Node, "at"), "requests: %s: the times they arrived differ", w.URL)
			f.Want, f.Got = "["+strings.Join(durs(w.At), ", ")+"]", "["+strings.Join(at, ", ")+"]"
		}
	}
	for _, w := range a.c.Expect.Calls {
		if w == nil {
			continue
		}
		n := 0
		for _, c := range a.o.calls {
			if len(c.Argv) != len(w.Argv) {
				continue
			}
			ok := true
			for i := range c.Argv {
				ok = ok && wildcard(w.Argv[i], c.Argv[i])
			}
			if ok {
				n++
			}
		}
		if n != w.Count {
			a.failAt(conf.ValuePos(w.Node, "count"), "calls: %s: want %d runs, got %d", strings.Join(w.Argv, " "), w.Count, n)
		}
	}
}

// wildcard reports whether s matches pattern, where '*' matches any run of
// characters and everything else is literal (as in the mocks' url).
func wildcard(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return strings.HasSuffix(s, parts[len(parts)-1])
}

package flowtest

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flowrun/flow/conf"
)

// write lays files out in a new folder and returns it.
func write(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func diagLines(t *testing.T, err error) []string {
	t.Helper()
	var ds conf.Diags
	if !errors.As(err, &ds) {
		t.Fatalf("want conf.Diags, got %v", err)
	}
	var out []string
	for _, d := range ds {
		out = append(out, d.String())
	}
	return out
}

// TestParseProblems: what the fields cannot say alone is placed where it
// is written, with the file.
func TestParseProblems(t *testing.T) {
	text := `tests:
  - name: a
    stage: x
    stages: [x, y]
    input: {a: 1}
    input_file: ../out.jsonl
  - name: a
    clock: real
    expect:
      errors: ["no position"]
      duration: 1s
      attempts:
        - {stage: s, item: 0, count: 2, start: [0s]}
      snapshot: /etc/passwd
`
	_, err := Parse("t_test.yaml", []byte(text))
	got := strings.Join(diagLines(t, err), "\n")
	for _, want := range []string{
		"t_test.yaml:4:5: give 'stage' or 'stages', not both",
		"t_test.yaml:5:12: input must be a list of items",
		"t_test.yaml:6:5: give 'input' or 'input_file', not both",
		`t_test.yaml:6:17: input_file: "../out.jsonl" leaves the test file's folder`,
		`t_test.yaml:7:11: name: another case is named "a"`,
		`t_test.yaml:10:15: errors: write each as "LINE:COL: text", got "no position"`,
		"t_test.yaml:11:7: duration needs the virtual clock",
		"t_test.yaml:13:11: attempt times need the virtual clock",
		"t_test.yaml:13:48: start lists 1 attempts but count says 2",
		`t_test.yaml:14:17: snapshot: "/etc/passwd" is absolute`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
}

func TestParseYAMLError(t *testing.T) {
	_, err := Parse("t_test.yaml", []byte("tests:\n  - name: a\n   bad: [\n"))
	got := diagLines(t, err)
	if len(got) != 1 || !strings.HasPrefix(got[0], "t_test.yaml:") || !strings.Contains(got[0], "not valid YAML") {
		t.Errorf("got %q", got)
	}
}

// TestFind: a folder's test files and the pipelines with tests:, and with
// /... the folders below, never testdata or hidden ones.
func TestFind(t *testing.T) {
	dir := write(t, map[string]string{
		"a_test.yaml":          "tests: []",
		"a.yaml":               "version: 1",
		"b.yaml":               "version: 1\ntests: []",
		"sub/c_test.yaml":      "tests: []",
		"testdata/d_test.yaml": "tests: []",
		".hidden/e_test.yaml":  "tests: []",
	})
	rel := func(ps []string) string {
		var out []string
		for _, p := range ps {
			r, _ := filepath.Rel(dir, p)
			out = append(out, r)
		}
		return strings.Join(out, " ")
	}
	got, err := Find(dir)
	if err != nil || rel(got) != "a_test.yaml b.yaml" {
		t.Errorf("Find(dir) = %q, %v", rel(got), err)
	}
	got, err = Find(dir + "/...")
	if err != nil || rel(got) != "a_test.yaml b.yaml sub/c_test.yaml" {
		t.Errorf("Find(dir/...) = %q, %v", rel(got), err)
	}
}

const double = `version: 1
stages:
  - name: numbers
    source: {items: [1, 2, 3]}
  - name: double
    step: compute
    with: {value: "${ item * 2 }"}
`

func runAll(t *testing.T, dir, file string, update bool) []*Result {
	t.Helper()
	s, err := Load(filepath.Join(dir, file))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := &Runner{Registry: NewRegistry(), Update: update}
	var out []*Result
	for _, c := range s.Cases {
		out = append(out, r.Run(s, c))
	}
	return out
}

// TestAssertions: each kind of expectation passes on the right output and
// fails, at its own position, on a wrong one.
func TestAssertions(t *testing.T) {
	dir := write(t, map[string]string{
		"d.yaml": double,
		"d_test.yaml": `tests:
  - name: right
    expect:
      output: [2, 4, 6]
      contains: [6, 2]
      count: 3
      each: "${ item % 2 == 0 }"
      all: "${ len(item) == 3 }"
      stdout: "2\n4\n6\n"
      stages:
        double: {in: 3, succeeded: 3, out: 3}
  - name: any order
    input: [3, 1]
    expect:
      output: [2, 6]
      order: any
  - name: wrong
    expect:
      output: [2, 4, 7]
      contains: [8]
      count: 2
      each: "${ item < 5 }"
      stages:
        double: {failed: 1}
      exit: 1
`,
	})
	res := runAll(t, dir, "d_test.yaml", false)
	for _, r := range res[:2] {
		if !r.Passed() {
			t.Errorf("%s: %v", r.Case.Name, r.Failures)
		}
	}
	var got []string
	for _, f := range res[2].Failures {
		got = append(got, conf.Diag{Pos: f.Pos, Msg: f.Msg}.String())
	}
	want := []string{
		"25:13: exit status: want 1, got 0",
		"19:22: output: 3 items as wanted, but they differ",
		"20:18: contains: no output item is equal to this one (3 items in the output)",
		"21:14: count: want 2 output items, got 3",
		"22:13: each: false for output item 2",
		`24:26: stage "double": failed: want 1, got 0`,
	}
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || strings.HasPrefix(g, w)
		}
		if !found {
			t.Errorf("missing failure %q in\n%s", w, strings.Join(got, "\n"))
		}
	}
}

// TestSnapshotUpdate: --update writes the snapshot inside the test's
// folder; the next run compares with it.
func TestSnapshotUpdate(t *testing.T) {
	dir := write(t, map[string]string{
		"d.yaml":      double,
		"d_test.yaml": "tests:\n  - name: all of it\n    expect: {snapshot: true}\n",
	})
	if r := runAll(t, dir, "d_test.yaml", false)[0]; r.Passed() || !strings.Contains(r.Failures[0].Msg, "--update") {
		t.Fatalf("a missing snapshot must fail and say --update: %v", r.Failures)
	}
	if r := runAll(t, dir, "d_test.yaml", true)[0]; !r.Passed() || r.Updated == "" {
		t.Fatalf("--update: %v", r.Failures)
	}
	b, err := os.ReadFile(filepath.Join(dir, "testdata", "d_test", "all-of-it.jsonl"))
	if err != nil || string(b) != "2\n4\n6\n" {
		t.Fatalf("snapshot = %q, %v", b, err)
	}
	if r := runAll(t, dir, "d_test.yaml", false)[0]; !r.Passed() {
		t.Fatalf("after --update: %v", r.Failures)
	}
}

// TestInputFileConfined: an input file reached through a link that leaves
// the test's folder is refused; one inside is read as JSON Lines, its
// strings as data.
func TestInputFileConfined(t *testing.T) {
	outside := write(t, map[string]string{"secret.jsonl": "1\n"})
	dir := write(t, map[string]string{
		"d.yaml":      double,
		"in.jsonl":    "5\n\n7\n",
		"s.jsonl":     "\"${ 1 + 1 }\"\n",
		"d_test.yaml": "tests:\n  - name: in\n    stage: double\n    input_file: in.jsonl\n    expect: {output: [10, 14]}\n  - name: link\n    stage: double\n    input_file: link.jsonl\n  - name: data\n    stages: [numbers, numbers]\n    input_file: s.jsonl\n    expect: {output: [\"${ 1 + 1 }\"]}\n",
	})
	if err := os.Symlink(filepath.Join(outside, "secret.jsonl"), filepath.Join(dir, "link.jsonl")); err != nil {
		t.Fatal(err)
	}
	res := runAll(t, dir, "d_test.yaml", false)
	if !res[0].Passed() {
		t.Errorf("in: %v", res[0].Failures)
	}
	if res[1].Passed() || !strings.Contains(res[1].Failures[0].Msg, "input_file") {
		t.Errorf("a link out of the folder must be refused: %v", res[1].Failures)
	}
	if !res[2].Passed() {
		t.Errorf("data: %v", res[2].Failures)
	}
}

func TestDiffLines(t *testing.T) {
	got := strings.Join(diffLines([]string{"a", "b", "c"}, []string{"a", "x", "c", "d"}), "|")
	if got != "  a|- b|+ x|  c|+ d" {
		t.Errorf("diff = %q", got)
	}
}

func TestRelative(t *testing.T) {
	v := relative(map[string]any{"p": "/w/x/logs/a.log", "l": []any{"/w/x", "/w/xy/z"}}, "/w/x")
	if got := canon(v); got != `{"l":[".","/w/xy/z"],"p":"./logs/a.log"}` {
		t.Errorf("relative = %s", got)
	}
}

// TestSetAndEnv: a case's set: overrides variables as --set does, and its
// env: is the run's environment, for that case only.
func TestSetAndEnv(t *testing.T) {
	dir := write(t, map[string]string{
		"g.yaml": `version: 1
vars:
  n: 1
stages:
  - name: s
    source: {items: ["${ vars.n + 1 }"]}
  - name: greet
    step: compute
    with: {value: "${ string(item) + ' ' + env.FLOWTEST_GREETING }"}
`,
		"g_test.yaml": `tests:
  - name: with
    set: {n: 41}
    env: {FLOWTEST_GREETING: hi}
    expect: {output: ["42 hi"]}
  - name: without
    expect: {output: ["2 "]}
`,
	})
	for _, r := range runAll(t, dir, "g_test.yaml", false) {
		if !r.Passed() {
			t.Errorf("%s: %v", r.Case.Name, r.Failures)
		}
	}
	if _, ok := os.LookupEnv("FLOWTEST_GREETING"); ok {
		t.Error("a case's env: outlived the case")
	}
}

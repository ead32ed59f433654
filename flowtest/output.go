package flowtest

import (
	"encoding/xml"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/internal/textsafe"
)

// WriteFailure writes one failed assertion: FILE:LINE:COL: message, then
// what was wanted and what came, as a diff when they span lines. Item text
// is made safe for a terminal line by line.
func WriteFailure(w io.Writer, f Failure, indent string) {
	fmt.Fprintf(w, "%s%s\n", indent, textsafe.Line(f.String()))
	if f.Want == "" && f.Got == "" {
		return
	}
	in := indent + "    "
	if !strings.Contains(f.Want, "\n") && !strings.Contains(f.Got, "\n") {
		if f.Want != "" {
			fmt.Fprintf(w, "%swant: %s\n", in, clipLine(f.Want))
		}
		fmt.Fprintf(w, "%sgot:  %s\n", in, clipLine(f.Got))
		return
	}
	fmt.Fprintf(w, "%s--- want\n%s+++ got\n", in, in)
	for _, l := range diffLines(splitLines(f.Want), splitLines(f.Got)) {
		fmt.Fprintf(w, "%s%s\n", in, clipLine(l))
	}
}

func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

// clipLine makes a line safe and short enough to read.
func clipLine(s string) string {
	s = textsafe.Line(s)
	if len(s) > 400 {
		s = s[:400] + "... (" + fmt.Sprint(len(s)-400) + " more bytes)"
	}
	return s
}

// maxDiff bounds the lines a diff compares (LCS is quadratic) and shows.
const maxDiff = 2000

// diffLines is a line diff: " " common, "-" only wanted, "+" only got.
// Long runs of common lines are cut to three around each change.
func diffLines(want, got []string) []string {
	if len(want) > maxDiff || len(got) > maxDiff {
		// Too long to align: the first difference and the counts.
		i := 0
		for i < len(want) && i < len(got) && want[i] == got[i] {
			i++
		}
		out := []string{fmt.Sprintf("  (%d lines wanted, %d got; the first difference is at line %d)", len(want), len(got), i+1)}
		if i < len(want) {
			out = append(out, "- "+want[i])
		}
		if i < len(got) {
			out = append(out, "+ "+got[i])
		}
		return out
	}
	n, m := len(want), len(got)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if want[i] == got[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var all []string
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && want[i] == got[j]:
			all = append(all, "  "+want[i])
			i, j = i+1, j+1
		case i < n && (j == m || lcs[i+1][j] >= lcs[i][j+1]):
			all = append(all, "- "+want[i])
			i++
		default:
			all = append(all, "+ "+got[j])
			j++
		}
	}
	// Keep three common lines of context around changes.
	keep := make([]bool, len(all))
	for k, l := range all {
		if l[0] != ' ' {
			for d := max(0, k-3); d <= min(len(all)-1, k+3); d++ {
				keep[d] = true
			}
		}
	}
	var out []string
	skipped := 0
	for k, l := range all {
		if !keep[k] {
			skipped++
			continue
		}
		if skipped > 0 {
			out = append(out, fmt.Sprintf("  ... (%d equal lines)", skipped))
			skipped = 0
		}
		out = append(out, l)
	}
	if skipped > 0 {
		out = append(out, fmt.Sprintf("  ... (%d equal lines)", skipped))
	}
	return out
}

// Broken is a test file that could not be read: its problems.
type Broken struct {
	File     string
	Problems []string
}

// WriteJUnit writes results as JUnit XML, one testsuite per test file, the
// format CI systems (GitLab, Jenkins, GitHub's test reporters) read.
func WriteJUnit(w io.Writer, results []*Result, broken []Broken, total time.Duration) error {
	type failure struct {
		Message string `xml:"message,attr"`
		Text    string `xml:",chardata"`
	}
	type testcase struct {
		Name      string   `xml:"name,attr"`
		Classname string   `xml:"classname,attr"`
		File      string   `xml:"file,attr,omitempty"`
		Line      int      `xml:"line,attr,omitempty"`
		Time      string   `xml:"time,attr"`
		Failure   *failure `xml:"failure,omitempty"`
		Error     *failure `xml:"error,omitempty"`
		SystemErr string   `xml:"system-err,omitempty"`
	}
	type testsuite struct {
		Name     string     `xml:"name,attr"`
		Tests    int        `xml:"tests,attr"`
		Failures int        `xml:"failures,attr"`
		Errors   int        `xml:"errors,attr"`
		Time     string     `xml:"time,attr"`
		Cases    []testcase `xml:"testcase"`
	}
	type testsuites struct {
		XMLName  xml.Name    `xml:"testsuites"`
		Name     string      `xml:"name,attr"`
		Tests    int         `xml:"tests,attr"`
		Failures int         `xml:"failures,attr"`
		Errors   int         `xml:"errors,attr"`
		Time     string      `xml:"time,attr"`
		Suites   []testsuite `xml:"testsuite"`
	}
	secs := func(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) }
	root := testsuites{Name: "flow test", Time: secs(total)}
	index := map[string]int{}
	suite := func(file string) *testsuite {
		i, ok := index[file]
		if !ok {
			i = len(root.Suites)
			index[file] = i
			root.Suites = append(root.Suites, testsuite{Name: file})
		}
		return &root.Suites[i]
	}
	for _, b := range broken {
		s := suite(b.File)
		s.Tests++
		s.Errors++
		s.Cases = append(s.Cases, testcase{Name: "(the test file)", Classname: b.File, File: b.File, Time: "0.000",
			Error: &failure{Message: "the test file is not valid", Text: strings.Join(b.Problems, "\n")}})
	}
	for _, r := range results {
		s := suite(r.Suite.File)
		s.Tests++
		tc := testcase{Name: r.Case.Name, Classname: r.Suite.File, File: r.Suite.File, Line: conf.NodePos(r.Case.Node).Line, Time: secs(r.Duration)}
		if !r.Passed() {
			s.Failures++
			var b strings.Builder
			for _, f := range r.Failures {
				WriteFailure(&b, f, "")
			}
			tc.Failure = &failure{Message: r.Failures[0].String(), Text: b.String()}
			tc.SystemErr = r.Log
		}
		s.Cases = append(s.Cases, tc)
	}
	for i := range root.Suites {
		s := &root.Suites[i]
		var t time.Duration
		for _, r := range results {
			if r.Suite.File == s.Name {
				t += r.Duration
			}
		}
		s.Time = secs(t)
		root.Tests += s.Tests
		root.Failures += s.Failures
		root.Errors += s.Errors
	}
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(root); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

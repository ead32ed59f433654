package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/flowrun/flow/internal/vt"
)

// These tests run the real CLI on a pseudo-terminal, with stdin, stdout and
// stderr on the same terminal as in an interactive shell, and read what a
// person would see: the bytes go through a terminal emulator (internal/vt)
// and the tests look at its screen. Progress bars redraw by moving the
// cursor up, so the byte stream holds results that a later redraw may have
// overwritten; only the screen tells.
//
// Nothing here is timed: each test waits for the process to exit (with
// relGuard against a broken build), then for the terminal to be drained,
// then reads the screen.

const (
	ptyCols = 200
	ptyRows = 60
)

// ptyRun is a flow process on a pseudo-terminal and everything it wrote.
type ptyRun struct {
	cmd     *exec.Cmd
	term    *os.File // the terminal's master side
	mu      sync.Mutex
	out     bytes.Buffer
	seen    string        // ptyStart: text whose first appearance closes appeared
	appear  chan struct{} // closed once seen was written
	drained chan struct{}
}

// ptyStart starts flow with args in dir on a new terminal of ptyCols x
// ptyRows. appeared, if not empty, is text whose first appearance in the
// output closes r.appear.
func ptyStart(t *testing.T, dir, appeared string, args ...string) *ptyRun {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), cliEnv+"=1", "TERM=xterm", "COLUMNS=", "LINES=")
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Cols: ptyCols, Rows: ptyRows})
	if err != nil {
		t.Fatalf("cannot start flow on a pseudo-terminal: %v", err)
	}
	r := &ptyRun{cmd: cmd, term: f, seen: appeared, appear: make(chan struct{}), drained: make(chan struct{})}
	if appeared == "" {
		close(r.appear)
	}
	go r.read()
	t.Cleanup(func() { f.Close() })
	return r
}

// read copies the terminal's output until every process holding the
// terminal has closed it (read then fails with EIO on Linux).
func (r *ptyRun) read() {
	defer close(r.drained)
	buf := make([]byte, 32<<10)
	for {
		n, err := r.term.Read(buf)
		r.mu.Lock()
		r.out.Write(buf[:n])
		if r.seen != "" && bytes.Contains(r.out.Bytes(), []byte(r.seen)) {
			close(r.appear)
			r.seen = ""
		}
		r.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// wait waits for flow to exit and for its output to be drained, then
// returns the exit code and the screen.
func (r *ptyRun) wait(t *testing.T) (int, *vt.Screen) {
	t.Helper()
	code := relWait(t, r.cmd)
	select {
	case <-r.drained:
	case <-time.After(relGuard):
		t.Fatalf("the terminal was not closed within %v of flow exiting: a process still holds it", relGuard)
	}
	s := vt.New(ptyCols, ptyRows)
	r.mu.Lock()
	s.Write(r.out.Bytes())
	r.mu.Unlock()
	if len(s.Unknown) > 0 {
		t.Errorf("flow wrote escape sequences the test terminal does not know: %v", s.Unknown)
	}
	return code, s
}

// ptyFlow runs flow to its end on a terminal.
func ptyFlow(t *testing.T, dir string, args ...string) (int, *vt.Screen) {
	t.Helper()
	return ptyStart(t, dir, "", args...).wait(t)
}

// plainStdout runs flow without a terminal and returns its stdout lines:
// the results a person must find on the screen.
func plainStdout(t *testing.T, dir string, args ...string) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), cliEnv+"=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if code := relWait(t, cmd); code != 0 {
		t.Fatalf("flow %s: exit %d\n%s", strings.Join(args, " "), code, stderr.String())
	}
	lines := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
	if len(lines) < 3 {
		t.Fatalf("flow %s printed %d lines; the test needs results to look for", strings.Join(args, " "), len(lines))
	}
	return lines
}

// screenHasInOrder checks that want appears on the screen (history
// included), line after line, as a block: nothing overwrote a result and
// nothing was drawn in the middle of them.
func screenHasInOrder(t *testing.T, s *vt.Screen, want []string) {
	t.Helper()
	all := s.All()
	for i := range all {
		if len(all)-i < len(want) {
			break
		}
		ok := true
		for j, w := range want {
			if strings.TrimRight(w, " ") != all[i+j] {
				ok = false
				break
			}
		}
		if ok {
			return
		}
	}
	t.Errorf("the results are not all on the screen, in order:\nwant\n%s\nscreen:\n%s", strings.Join(want, "\n"), s)
}

// linesStarting returns the lines of the screen that start with prefix.
func linesStarting(s *vt.Screen, prefix string) []string {
	var out []string
	for _, l := range s.All() {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}

func TestTerminalResultsStayOnScreen(t *testing.T) {
	root := repoRoot(t)
	for _, tc := range []struct {
		name     string
		pipeline string // written to p.yaml; empty: run file
		file     string
	}{
		{
			// Results printed one by one while the bars keep redrawing.
			name: "jsonl-as-they-come",
			pipeline: `version: 1
name: twenty
stages:
  - name: numbers
    source: {range: {from: 1, to: 20}}
  - name: slow
    step: compute
    workers: 1
    with:
      value: "${ sleep('30ms') == nil ? {'n': item, 'square': item * item} : item }"
  - name: out
    sink: {print: jsonl}
`,
		},
		{
			// A table is printed at the end, after frames were drawn
			// while the items ran, just before the last frame.
			name: "table",
			pipeline: `version: 1
name: table
stages:
  - name: numbers
    source: {range: {from: 1, to: 8}}
  - name: square
    step: compute
    workers: 1
    with:
      value: "${ sleep('40ms') == nil ? {'n': item, 'square': item * item} : item }"
  - name: out
    sink: {print: {format: table, columns: [n, square]}}
`,
		},
		{name: "readme-log-analyzer", file: filepath.Join(root, "examples", "log_analyzer.yaml")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			file := tc.file
			if file == "" {
				file = writeFile(t, dir, "p.yaml", tc.pipeline)
			}
			want := plainStdout(t, dir, "run", file, "--progress", "none")
			code, screen := ptyFlow(t, dir, "run", file)
			if code != 0 {
				t.Fatalf("exit %d\n%s", code, screen)
			}
			screenHasInOrder(t, screen, want)
			// The bars stay, under the results, and the summary closes.
			all := screen.All()
			if last := all[len(all)-1]; !strings.HasPrefix(last, "flow: ") || !strings.Contains(last, " succeeded in ") {
				t.Errorf("the last line is %q, want the summary\n%s", last, screen)
			}
			if n := len(linesStarting(screen, "out ")); n != 1 {
				t.Errorf("%d bar lines of the sink 'out' on the screen, want 1\n%s", n, screen)
			}
		})
	}
}

// The bar of each stage says what the summary says, in the same words: a
// barrier that drops items says "filtered", not "done"; items skipped under
// on_error: skip are "skipped", not "failed".
func TestTerminalBarsAgreeWithSummary(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, dir, "p.yaml", `version: 1
name: agree
stages:
  - name: numbers
    source: {range: {from: 1, to: 8}}
  - name: check
    step: compute
    on_error: skip
    with:
      value: "${ item == 4 ? fail('four is not allowed') : item }"
  - name: best
    step: top
    with: {n: 5, by: "${ item }"}
  - name: out
    sink: {print: jsonl}
`)
	code, screen := ptyFlow(t, dir, "run", file)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, screen)
	}
	summary := screen.All()[len(screen.All())-1]
	for stage, want := range map[string][]string{
		"check": {"7 ok", "1 skipped"},
		"best":  {"5 ok", "2 filtered"},
	} {
		bars := linesStarting(screen, stage+" ")
		if len(bars) != 1 {
			t.Fatalf("%d bar lines for %s, want 1\n%s", len(bars), stage, screen)
		}
		for _, w := range want {
			if !strings.Contains(bars[0], w) {
				t.Errorf("bar %q does not say %q", bars[0], w)
			}
			if !strings.Contains(summary, stage+" "+strings.Join(want, ", ")) {
				t.Errorf("summary %q does not say %s %s", summary, stage, strings.Join(want, ", "))
			}
		}
		if bad := regexp.MustCompile(`failed|\d+ done`).FindString(bars[0]); bad != "" {
			t.Errorf("bar %q says %q; the summary says %q", bars[0], bad, summary)
		}
	}
}

// Ctrl-C on the terminal: the message that the run is stopping goes between
// the results and the bars, and each bar is on the screen once.
func TestTerminalInterrupt(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, dir, "long.yaml", longPipeline)
	r := ptyStart(t, dir, "slow ", "run", file)
	select {
	case <-r.appear:
	case <-time.After(relGuard):
		t.Fatalf("no progress bar within %v", relGuard)
	}
	// ^C typed on the terminal: the line discipline sends SIGINT to the
	// foreground process group, flow's.
	if _, err := r.term.Write([]byte{3}); err != nil {
		t.Fatal(err)
	}
	code, screen := r.wait(t)
	if code != 130 {
		t.Fatalf("exit %d, want 130\n%s", code, screen)
	}
	for _, stage := range []string{"numbers ", "slow ", "out "} {
		if n := len(linesStarting(screen, stage)); n != 1 {
			t.Errorf("%d bar lines for %q, want 1\n%s", n, stage, screen)
		}
	}
	if n := len(linesStarting(screen, "flow: SIGINT: stopping")); n != 1 {
		t.Errorf("the stopping message is on the screen %d times, want 1\n%s", n, screen)
	}
	all := screen.All()
	if last := all[len(all)-1]; !strings.Contains(last, "long interrupted") {
		t.Errorf("the last line is %q, want the summary\n%s", last, screen)
	}
}

package progress

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/internal/vt"
	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func pipeline() *spec.Pipeline {
	return &spec.Pipeline{Stages: []*spec.Stage{
		{Name: "photos", Role: steps.RoleSource},
		{Name: "resize", Role: steps.RoleStep},
		{Name: "thumbs", Role: steps.RoleStep},
		{Name: "out", Role: steps.RoleSink},
	}}
}

func TestPlainFollowsTheLastStep(t *testing.T) {
	var buf bytes.Buffer
	p := NewPlain(&buf, pipeline(), nil)
	p.StageStarted("photos", 1, 3)
	p.StageStarted("resize", 4, 3)
	p.StageStarted("thumbs", 4, 3)
	p.ItemDone(itemEvent("photos", "succeeded", steps.Input{Index: 0, Item: "a.jpg"}, "a.jpg", nil))
	p.ItemDone(itemEvent("resize", "failed", steps.Input{Index: 1, Item: "b.jpg"}, nil, errors.New("not an image:\nbad header")))
	p.ItemDone(itemEvent("thumbs", "succeeded", steps.Input{Index: 0, Item: "a.jpg"}, "resized/a.jpg", nil))
	p.ItemDone(itemEvent("thumbs", "cancelled", steps.Input{Index: 2, Item: "c.jpg"}, nil, nil))
	p.ItemDone(itemEvent("thumbs", "skipped", steps.Input{Index: 2, Item: "c.jpg"}, nil, errors.New("timeout")))
	p.Close()
	want := "resize: b.jpg -> error: not an image:\\nbad header\n" +
		"[1/3] a.jpg -> resized/a.jpg\n" +
		"[2/3] c.jpg -> error: timeout\n"
	if buf.String() != want {
		t.Errorf("got\n%s\nwant\n%s", buf.String(), want)
	}
}

func TestPlainUnknownTotalAndLongValues(t *testing.T) {
	var buf bytes.Buffer
	p := NewPlain(&buf, &spec.Pipeline{Stages: []*spec.Stage{{Name: "lines", Role: steps.RoleSource}}}, nil)
	p.StageStarted("lines", 1, -1)
	p.ItemDone(itemEvent("lines", "succeeded", steps.Input{Item: "/data/" + strings.Repeat("x", 200) + "/name.log"}, map[string]any{"n": 1}, nil))
	got := buf.String()
	// Long inputs are cut in the middle so that the file name stays.
	want := "[1] /data/" + strings.Repeat("x", 14) + "…" + strings.Repeat("x", 30) + "/name.log -> {\"n\":1}\n"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

func TestBarDraws(t *testing.T) {
	var buf bytes.Buffer
	b := NewBar(&buf)
	now := time.Unix(1000, 0)
	b.mu.Lock()
	b.now = func() time.Time { return now }
	b.width = func() int { return 100 }
	b.mu.Unlock()
	b.StageStarted("ids", 1, 100)
	b.StageStarted("fetch-posts", 20, -1)
	for i := range 50 {
		b.ItemDone(itemEvent("ids", "succeeded", steps.Input{Index: int64(i)}, nil, nil))
	}
	b.ItemDone(itemEvent("fetch-posts", "failed", steps.Input{}, nil, errors.New("x")))
	now = now.Add(5 * time.Second)
	buf.Reset()
	b.draw()
	first := buf.String()
	for _, want := range []string{"ids         [", "50/100  50%", "10/s", "ETA 5s", "fetch-posts 1 failed"} {
		if !strings.Contains(first, want) {
			t.Errorf("frame %q lacks %q", first, want)
		}
	}
	for _, line := range strings.Split(strings.TrimSuffix(first, "\n"), "\n") {
		if n := len([]rune(strings.TrimPrefix(line, "\r\x1b[2K"))); n >= 100 {
			t.Errorf("line of %d columns would wrap: %q", n, line)
		}
	}
	buf.Reset()
	b.StageDone("ids")
	b.draw()
	if !strings.HasPrefix(buf.String(), "\x1b[2A") || !strings.Contains(buf.String(), "done in 5s") {
		t.Errorf("redraw %q does not move up over the 2 lines or show the end", buf.String())
	}
	b.Close()
	b.Close()
}

func TestNew(t *testing.T) {
	var buf bytes.Buffer
	for _, m := range Modes {
		s, err := New(m, &buf, pipeline(), nil)
		if err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		s.Close()
	}
	if s, _ := New("auto", &buf, pipeline(), nil); s != (None{}) {
		t.Errorf("auto on a buffer gave %T, want None", s)
	}
	if _, err := New("fancy", &buf, pipeline(), nil); err == nil || !strings.Contains(err.Error(), "auto, bar, plain, none") {
		t.Errorf("err %v", err)
	}
}

func itemEvent(stage, outcome string, in steps.Input, res any, err error) *engine.ItemEvent {
	return &engine.ItemEvent{Stage: stage, Outcome: report.Outcome(outcome), Index: in.Index, Item: in.Item, Result: res, Err: err}
}

// screenBar is a Bar drawing on a terminal screen of cols x rows, with a
// clock that does not move.
func screenBar(t *testing.T, cols, rows int) (*Bar, *vt.Screen) {
	t.Helper()
	screen := vt.New(cols, rows)
	screen.ONLCR = true
	b := NewBar(screen)
	now := time.Unix(1000, 0)
	b.mu.Lock()
	b.now = func() time.Time { return now }
	b.width = func() int { return cols }
	b.height = func() int { return rows }
	b.mu.Unlock()
	t.Cleanup(func() {
		if len(screen.Unknown) > 0 {
			t.Errorf("the bars wrote sequences the test terminal does not know: %v", screen.Unknown)
		}
	})
	return b, screen
}

func linesWith(lines []string, prefix string) int {
	n := 0
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}

// Results written between frames stay on the screen, in order, above the
// bars; nothing of a frame is left between them. Stdout and stderr are the
// same terminal here, as in an interactive shell.
func TestBarWriterKeepsResults(t *testing.T) {
	b, screen := screenBar(t, 80, 100)
	stdout, stderr := b.Writer(screen), b.Writer(screen)
	b.StageStarted("numbers", 1, 20)
	b.StageStarted("out", 1, 20)
	var want []string
	for i := range 20 {
		b.ItemDone(itemEvent("numbers", "succeeded", steps.Input{Index: int64(i)}, nil, nil))
		b.draw()
		line := fmt.Sprintf(`{"n":%d}`, i)
		want = append(want, line)
		// A buffered sink hands over lines split anywhere.
		half := len(line) / 2
		io.WriteString(stdout, line[:half])
		b.draw()
		io.WriteString(stdout, line[half:]+"\n")
		b.ItemDone(itemEvent("out", "succeeded", steps.Input{Index: int64(i)}, nil, nil))
		if i == 10 {
			io.WriteString(stderr, "flow: a message on stderr\n")
			want = append(want, "flow: a message on stderr")
		}
	}
	io.WriteString(stdout, "no newline at the end")
	b.Close()
	got := screen.All()
	wantAll := append(want, "numbers [", "out     [", "no newline at the end")
	if len(got) != len(wantAll) {
		t.Fatalf("screen:\n%s\nwant %d lines", screen, len(wantAll))
	}
	for i, w := range wantAll {
		if !strings.HasPrefix(got[i], w) {
			t.Errorf("line %d is %q, want %q\n%s", i+1, got[i], w, screen)
		}
	}
	// After Close, writes go straight through (the closing summary).
	io.WriteString(stderr, "\nsummary\n")
	if got := screen.All(); got[len(got)-1] != "summary" {
		t.Errorf("after Close: %q", got)
	}
}

// A line longer than the writer holds back is written as it comes; frames
// wait until it ends instead of starting in its middle.
func TestBarWriterLongLine(t *testing.T) {
	b, screen := screenBar(t, 80, 50)
	w := b.Writer(screen)
	b.StageStarted("s", 1, -1)
	b.draw()
	long := strings.Repeat("x", maxHeld+1)
	io.WriteString(w, long)
	b.draw()
	if got := screen.All(); linesWith(got, "s ") != 0 {
		t.Errorf("a frame was drawn inside an unfinished line:\n%s", screen)
	}
	io.WriteString(w, "y\nnext\n")
	b.Close()
	got := screen.All()
	if tail := got[len(got)-3:]; !strings.HasSuffix(tail[0], "xy") || tail[1] != "next" || tail[2] != "s 0 items" {
		t.Errorf("the screen ends %q, want the long line, next, then the bar", tail)
	}
}

// The bar breaks items down as the closing summary does: skipped items are
// skipped (not failed), a barrier's dropped items are filtered, and an
// unknown total shows the outcomes, never "n done".
func TestBarCountsInTheSummaryWords(t *testing.T) {
	b, screen := screenBar(t, 120, 20)
	b.StageStarted("check", 2, 4)
	b.StageStarted("top", 1, -1)
	b.StageStarted("out", 1, -1)
	for i, o := range []string{"succeeded", "skipped", "succeeded", "succeeded"} {
		ev := itemEvent("check", o, steps.Input{Index: int64(i)}, nil, nil)
		if i >= 2 {
			// Answered by the result cache.
			ev.Attempts = []engine.Attempt{{Worker: "cache", Cached: true}}
		}
		b.ItemDone(ev)
	}
	for i, o := range []string{"filtered", "succeeded", "succeeded", "filtered", "cancelled"} {
		b.ItemDone(itemEvent("top", o, steps.Input{Index: int64(i)}, nil, nil))
	}
	b.ItemDone(itemEvent("out", "failed", steps.Input{}, nil, errors.New("disk full")))
	for _, s := range []string{"check", "top", "out"} {
		b.StageDone(s)
	}
	b.Close()
	got := screen.All()
	for i, want := range []string{
		"4/4 100%  3 ok, 2 cached, 1 skipped  done in 0s",
		"top   2 ok, 1 cancelled, 2 filtered  done in 0s",
		"out   1 failed  done in 0s",
	} {
		if !strings.HasSuffix(got[i], want) {
			t.Errorf("bar %q, want it to end %q", got[i], want)
		}
	}
}

// More stages than the terminal has rows: the cursor cannot go up past the
// top, so the bars are cut to fit rather than left behind at every frame.
func TestBarFitsTheTerminal(t *testing.T) {
	b, screen := screenBar(t, 80, 5)
	for i := range 8 {
		b.StageStarted(fmt.Sprintf("stage%d", i), 1, 1)
	}
	for range 3 {
		b.draw()
	}
	b.Close()
	got := screen.All()
	want := []string{"stage0", "stage1", "stage2", "(5 more stages"}
	if len(got) != len(want) {
		t.Fatalf("screen:\n%s", screen)
	}
	for i, w := range want {
		if !strings.HasPrefix(got[i], w) {
			t.Errorf("screen:\n%s", screen)
		}
	}
}

func TestOutputs(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	other, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	b := NewBar(w)
	defer b.Close()
	// Standard output on the bars' own file (2>&1) is coordinated with
	// them; a file elsewhere is left alone: bars cannot overwrite it.
	if out, errw := Outputs(b, w, w); !isBarWriter(out) || !isBarWriter(errw) {
		t.Errorf("same file: got %T, %T", out, errw)
	}
	if out, errw := Outputs(b, other, w); out != io.Writer(other) || !isBarWriter(errw) {
		t.Errorf("stdout to a file: got %T, %T", out, errw)
	}
	if out, errw := Outputs(None{}, w, w); out != io.Writer(w) || errw != io.Writer(w) {
		t.Errorf("no bars: got %T, %T", out, errw)
	}
}

func isBarWriter(w io.Writer) bool {
	_, ok := w.(*barWriter)
	return ok
}

// stalledTerminal stops reading, as a terminal does after Ctrl-S or over a
// stalled ssh connection, until release is closed.
type stalledTerminal struct {
	entered chan struct{}
	release chan struct{}
}

func (s *stalledTerminal) Write(p []byte) (int, error) {
	select {
	case s.entered <- struct{}{}:
	default:
	}
	<-s.release
	return len(p), nil
}

// A terminal that stops reading holds up the frames, never the workers
// reporting their items.
func TestBarStalledTerminalDoesNotStallItems(t *testing.T) {
	term := &stalledTerminal{entered: make(chan struct{}, 1), release: make(chan struct{})}
	b := NewBar(term)
	b.StageStarted("s", 1, -1)
	go b.draw()
	<-term.entered // a frame is being written, under the lock
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 1000 {
			b.ItemDone(itemEvent("s", "succeeded", steps.Input{Index: int64(i)}, nil, nil))
		}
		b.StageDone("s")
	}()
	select {
	case <-done:
	case <-time.After(time.Minute): // a guard against a hang, not a speed check
		t.Error("ItemDone waited for the terminal")
	}
	close(term.release)
	<-done
	b.Close()
	if n := b.stage("s").ok.Load(); n != 1000 {
		t.Errorf("%d items counted, want 1000", n)
	}
}

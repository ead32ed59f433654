package progress

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/flowrun/flow/engine"
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
	want := "resize: b.jpg -> error: not an image: bad header\n" +
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
	for _, want := range []string{"ids         [", "50/100  50%", "10/s", "ETA 5s", "fetch-posts 1 done", "1 failed"} {
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
	if !strings.HasPrefix(buf.String(), "\x1b[2A") || !strings.Contains(buf.String(), "done 5s") {
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

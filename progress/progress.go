// Package progress shows a run's progress on standard error, from the
// engine's events. Three renderings:
//
//   - bar: one live line per stage, redrawn at most 10 times a second:
//     done/total with a bar when the total is known (the source's count,
//     carried down while stages pass every item on), the rate and the time
//     left; the outcomes in the closing summary's words ("5 ok, 3
//     filtered") when not every item succeeded. It needs a terminal: it
//     moves the cursor up to redraw, so whatever else the run writes to that
//     terminal must go through Outputs' writers, which keep it above the
//     bars instead of under the next frame.
//   - plain: the guide's "[n/total] item -> result" lines, one per item
//     finished by the last step stage that is not a barrier such as sort or
//     top (the source's items when there is no such step), so a log file
//     shows what was done; items that fail in any
//     stage get a line "stage: item -> error: message". Nothing is redrawn.
//   - none: nothing.
//
// Auto picks bar when standard error is a terminal and none otherwise, so
// that cron mail and CI logs stay clean.
package progress

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/term"

	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/internal/textsafe"
	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/tmpl"
)

// Sink receives a run's events; Close ends its output (call it after
// engine.Run returns).
type Sink interface {
	engine.EventSink
	Close()
}

// Modes lists the accepted modes, for flags and their help.
var Modes = []string{"auto", "bar", "plain", "none"}

// New returns the sink for a mode: auto, bar, plain or none. reg, when not
// nil, tells which stages are barriers (see NewPlain).
func New(mode string, w io.Writer, p *spec.Pipeline, reg *steps.Registry) (Sink, error) {
	switch mode {
	case "auto", "":
		return Auto(w, p), nil
	case "bar":
		return NewBar(w), nil
	case "plain":
		return NewPlain(w, p, reg), nil
	case "none":
		return None{}, nil
	}
	return nil, fmt.Errorf("unknown progress mode %q: use one of %s", mode, strings.Join(Modes, ", "))
}

// Auto returns bars when w is a terminal, and None otherwise.
func Auto(w io.Writer, p *spec.Pipeline) Sink {
	if IsTerminal(w) {
		return NewBar(w)
	}
	return None{}
}

// Outputs returns the writers a run must use for its results (stdout) and
// its messages (stderr) while s shows progress. Bars are redrawn over the
// lines above the cursor, so with bars every write to their terminal goes
// through Bar.Writer, which erases them first and draws them again below:
// stderr always, stdout when it is the same file or a terminal too (the
// interactive case, where results would otherwise be overwritten). Other
// sinks never move the cursor; their writers are returned as they are.
func Outputs(s Sink, stdout, stderr io.Writer) (io.Writer, io.Writer) {
	b, ok := s.(*Bar)
	if !ok {
		return stdout, stderr
	}
	if sameFile(stdout, stderr) || (IsTerminal(stdout) && IsTerminal(stderr)) {
		stdout = b.Writer(stdout)
	}
	return stdout, b.Writer(stderr)
}

func sameFile(a, b io.Writer) bool {
	fa, ok1 := a.(*os.File)
	fb, ok2 := b.(*os.File)
	if !ok1 || !ok2 {
		return false
	}
	sa, err1 := fa.Stat()
	sb, err2 := fb.Stat()
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// None shows nothing.
type None struct{}

func (None) StageStarted(string, int, int64) {}
func (None) ItemDone(*engine.ItemEvent)      {}
func (None) StageDone(string)                {}
func (None) Close()                          {}

// Plain prints one line per finished item of one stage.
type Plain struct {
	w      io.Writer
	follow string
	mu     sync.Mutex
	total  int64
	n      int64
}

// NewPlain follows the last step stage of p that is not a barrier (its
// source when it has none): a sort or top only reorders what the stage
// before it did. reg may be nil; then every step counts.
func NewPlain(w io.Writer, p *spec.Pipeline, reg *steps.Registry) *Plain {
	pl := &Plain{w: w, total: -1}
	if p != nil && len(p.Stages) > 0 {
		pl.follow = p.Stages[0].Name
		for _, s := range p.Stages {
			if s.Role == steps.RoleStep && !isBarrier(reg, s.Kind) {
				pl.follow = s.Name
			}
		}
	}
	return pl
}

func isBarrier(reg *steps.Registry, kind string) bool {
	if reg == nil {
		return false
	}
	k, ok := reg.Lookup(kind)
	return ok && k.Barrier
}

func (p *Plain) StageStarted(stage string, workers int, total int64) {
	if stage == p.follow {
		p.mu.Lock()
		p.total = total
		p.mu.Unlock()
	}
}

func (p *Plain) ItemDone(ev *engine.ItemEvent) {
	p.itemDone(ev.Stage, string(ev.Outcome), steps.Input{Index: ev.Index, Item: ev.Item}, ev.Result, ev.Err)
}

func (p *Plain) itemDone(stage, outcome string, in steps.Input, res any, err error) {
	switch outcome {
	case "succeeded", "failed", "skipped":
	default:
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if stage != p.follow {
		if err != nil {
			fmt.Fprintf(p.w, "%s: %s -> error: %s\n", stage, shortItem(in.Item), oneLine(err.Error()))
		}
		return
	}
	p.n++
	count := fmt.Sprintf("[%d/%d]", p.n, p.total)
	if p.total < 0 {
		count = fmt.Sprintf("[%d]", p.n)
	}
	if err != nil {
		fmt.Fprintf(p.w, "%s %s -> error: %s\n", count, shortItem(in.Item), oneLine(err.Error()))
		return
	}
	fmt.Fprintf(p.w, "%s %s -> %s\n", count, shortItem(in.Item), Short(res, 100))
}

func (p *Plain) StageDone(string) {}
func (p *Plain) Close()           {}

// Short renders a value on one line of at most n characters.
func Short(v any, n int) string {
	return shorten(oneLine(tmpl.Stringify(v)), n)
}

// shortItem renders an input on one line, cutting from the middle: the end
// of a path or URL (the file name) says most about which item it was.
func shortItem(v any) string {
	const n = 60
	r := []rune(oneLine(tmpl.Stringify(v)))
	if len(r) <= n {
		return string(r)
	}
	head := n / 3
	return string(r[:head]) + "…" + string(r[len(r)-(n-head-1):])
}

// oneLine makes text from items, results and errors safe on a terminal:
// on one line, with escape sequences and other controls shown escaped, so
// that an item cannot colour, clear or forge a line of flow's own.
func oneLine(s string) string { return textsafe.Line(s) }

func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// Bar draws one live line per stage.
//
// The bars are redrawn by moving the cursor up over them, so anything else
// written to the terminal between two frames would be overwritten. Writes
// to the terminal therefore go through Writer: under the lock the renderer
// holds, a write erases the bars, puts its complete lines where they were,
// and draws the bars again below them. Results are never overwritten.
type Bar struct {
	w      io.Writer
	width  func() int
	height func() int
	now    func() time.Time

	mu     sync.Mutex
	stages []*stageBar
	// byName is replaced, never changed, so that ItemDone finds its stage
	// without the lock: a terminal that stops reading (Ctrl-S, a stalled
	// ssh) holds up the frames and the writers, never the workers.
	byName  atomic.Pointer[map[string]*stageBar]
	lines   int  // bar lines on the screen, just above the cursor
	midLine bool // a writer left the cursor inside a line: no frame until it ends
	writers []*barWriter
	stop    chan struct{}
	done    chan struct{}
	closing bool // Close was called
	closed  bool // the final frame is drawn: writers pass through
}

type stageBar struct {
	name      string
	workers   int
	total     int64
	start     time.Time
	first     atomic.Int64 // unix nanos of the first finished item
	n         atomic.Int64 // items finished, any outcome
	ok        atomic.Int64
	cached    atomic.Int64 // of ok: answered by the result cache
	failed    atomic.Int64
	skipped   atomic.Int64
	cancelled atomic.Int64
	filtered  atomic.Int64
	ended     atomic.Bool
	endAt     atomic.Int64
}

// redrawEvery bounds redraws to 10 a second: cheap, and readable.
const redrawEvery = 100 * time.Millisecond

// NewBar draws on w, which should be a terminal.
func NewBar(w io.Writer) *Bar {
	b := &Bar{w: w, stop: make(chan struct{}), done: make(chan struct{}), now: time.Now}
	size := func() (int, int) {
		if f, ok := w.(*os.File); ok {
			if c, r, err := term.GetSize(int(f.Fd())); err == nil {
				return c, r
			}
		}
		return 0, 0
	}
	b.width = func() int {
		if c, _ := size(); c > 20 {
			return c
		}
		return 80
	}
	b.height = func() int {
		if _, r := size(); r > 0 {
			return r
		}
		return 1 << 20
	}
	go b.loop()
	return b
}

func (b *Bar) loop() {
	defer close(b.done)
	t := time.NewTicker(redrawEvery)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			b.draw()
		}
	}
}

func (b *Bar) StageStarted(stage string, workers int, total int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := &stageBar{name: stage, workers: workers, total: total, start: b.now()}
	b.stages = append(b.stages, s)
	m := map[string]*stageBar{stage: s}
	if old := b.byName.Load(); old != nil {
		for k, v := range *old {
			m[k] = v
		}
	}
	b.byName.Store(&m)
}

func (b *Bar) stage(name string) *stageBar {
	if m := b.byName.Load(); m != nil {
		return (*m)[name]
	}
	return nil
}

func (b *Bar) ItemDone(ev *engine.ItemEvent) {
	s := b.stage(ev.Stage)
	if s == nil {
		return
	}
	// The outcome's counter first, so that a frame never shows more items
	// finished than it can break down.
	switch ev.Outcome {
	case report.Succeeded:
		if n := len(ev.Attempts); n > 0 && ev.Attempts[n-1].Cached {
			s.cached.Add(1)
		}
		s.ok.Add(1)
	case report.Failed:
		s.failed.Add(1)
	case report.Skipped:
		s.skipped.Add(1)
	case report.Cancelled:
		s.cancelled.Add(1)
	case report.Filtered:
		s.filtered.Add(1)
	}
	if s.n.Add(1) == 1 {
		s.first.Store(b.now().UnixNano())
	}
}

func (b *Bar) StageDone(stage string) {
	if s := b.stage(stage); s != nil {
		s.endAt.Store(b.now().UnixNano())
		s.ended.Store(true)
	}
}

// Close stops redrawing and leaves the final state on screen, below what
// was written through Writer; lines those writes left unfinished follow.
// Writers pass everything straight through from then on.
func (b *Bar) Close() {
	b.mu.Lock()
	if b.closing {
		b.mu.Unlock()
		return
	}
	b.closing = true
	b.mu.Unlock()
	close(b.stop)
	<-b.done
	b.mu.Lock()
	defer b.mu.Unlock()
	b.drawLocked()
	b.closed = true
	for _, w := range b.writers {
		if len(w.tail) > 0 {
			w.out.Write(w.tail)
			w.tail = nil
		}
	}
}

// Writer returns a writer to out, a file on the bars' terminal (standard
// output, or standard error itself), that keeps the bars from overwriting
// what it writes: each write erases the bars, writes its complete lines in
// their place and draws the bars again below. The unfinished end of a line
// is held until its newline (or Close) comes, so that a frame never starts
// in the middle of a result; past maxHeld bytes without a newline it is
// written out and frames wait for the line to end.
func (b *Bar) Writer(out io.Writer) io.Writer {
	w := &barWriter{b: b, out: out}
	b.mu.Lock()
	b.writers = append(b.writers, w)
	b.mu.Unlock()
	return w
}

// maxHeld bounds the unfinished line a Writer holds back.
const maxHeld = 64 << 10

type barWriter struct {
	b    *Bar
	out  io.Writer
	tail []byte // the unfinished last line, not written yet
}

func (w *barWriter) Write(p []byte) (int, error) {
	b := w.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return w.out.Write(p)
	}
	end := bytes.LastIndexByte(p, '\n') + 1
	if end == 0 && len(w.tail)+len(p) <= maxHeld {
		w.tail = append(w.tail, p...)
		return len(p), nil
	}
	if end == 0 {
		end = len(p) // too long to hold: written, unfinished
	}
	b.clearLocked()
	if len(w.tail) > 0 {
		if _, err := w.out.Write(w.tail); err != nil {
			return 0, err
		}
		w.tail = w.tail[:0]
	}
	n, err := w.out.Write(p[:end])
	if err != nil {
		return n, err
	}
	w.tail = append(w.tail, p[end:]...)
	b.midLine = end > 0 && p[end-1] != '\n'
	b.drawLocked()
	return len(p), nil
}

// clearLocked erases the bars and leaves the cursor where the first was.
func (b *Bar) clearLocked() {
	if b.lines > 0 {
		fmt.Fprintf(b.w, "\x1b[%dA\r\x1b[J", b.lines)
		b.lines = 0
	}
}

func (b *Bar) draw() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.drawLocked()
}

func (b *Bar) drawLocked() {
	if len(b.stages) == 0 || b.closed || b.midLine {
		return
	}
	width := b.width() - 1 // never reach the last column: a wrap breaks the redraw
	nameW := 0
	for _, s := range b.stages {
		nameW = max(nameW, len([]rune(s.name)))
	}
	// The cursor cannot move up past the top of the screen: more bars than
	// rows would leave a copy of the first ones behind at every frame.
	shown := b.stages
	more := 0
	if h := b.height() - 1; len(shown) > h {
		shown, more = shown[:max(0, h-1)], len(shown)-max(0, h-1)
	}
	var out strings.Builder
	if b.lines > 0 {
		fmt.Fprintf(&out, "\x1b[%dA", b.lines)
	}
	now := b.now()
	for _, s := range shown {
		out.WriteString("\r\x1b[2K")
		out.WriteString(shorten(s.line(now, nameW, width), width))
		out.WriteString("\n")
	}
	if more > 0 {
		out.WriteString("\r\x1b[2K")
		out.WriteString(shorten(fmt.Sprintf("(%d more stages: make the terminal taller to see them)", more), width))
		out.WriteString("\n")
	}
	b.lines = len(shown)
	if more > 0 {
		b.lines++
	}
	io.WriteString(b.w, out.String())
}

// counts breaks the finished items down in the words of the run's closing
// summary ("5 ok, 3 filtered"), so that the bar and the summary never
// disagree.
func (s *stageBar) counts() string {
	var parts []string
	add := func(n int64, what string) {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(s.ok.Load(), "ok")
	add(s.cached.Load(), "cached")
	add(s.failed.Load(), "failed")
	add(s.skipped.Load(), "skipped")
	add(s.cancelled.Load(), "cancelled")
	add(s.filtered.Load(), "filtered")
	if len(parts) == 0 {
		return "0 items"
	}
	return strings.Join(parts, ", ")
}

// line renders one stage: name, bar, done/total, percent, the outcomes
// when not all succeeded, rate, ETA.
func (s *stageBar) line(now time.Time, nameW, width int) string {
	n := s.n.Load()
	end := now
	if s.ended.Load() {
		end = time.Unix(0, s.endAt.Load())
	}
	var rate float64
	if f := s.first.Load(); f > 0 {
		if el := end.Sub(time.Unix(0, f)).Seconds(); el > 0.2 {
			rate = float64(n) / el
		}
	}
	name := s.name + strings.Repeat(" ", nameW-len([]rune(s.name)))
	var tail []string
	if s.total < 0 || s.ok.Load() != n || s.cached.Load() > 0 {
		tail = append(tail, s.counts())
	}
	if rate > 0 {
		tail = append(tail, formatRate(rate))
	}
	state := ""
	if s.ended.Load() {
		state = "done in " + end.Sub(s.start).Round(10*time.Millisecond).String()
	}
	if s.total >= 0 {
		pct := 100.0
		if s.total > 0 {
			pct = 100 * float64(min(n, s.total)) / float64(s.total)
		}
		if state == "" && rate > 0 && n < s.total {
			eta := time.Duration(float64(s.total-n) / rate * float64(time.Second))
			state = "ETA " + roundETA(eta)
		}
		counts := fmt.Sprintf("%d/%d %3.0f%%", n, s.total, pct)
		rest := strings.Join(append(tail, state), "  ")
		barW := width - len(name) - len(counts) - len(rest) - 8
		if barW > 40 {
			barW = 40
		}
		if barW >= 10 {
			fill := int(float64(barW) * pct / 100)
			bar := "[" + strings.Repeat("=", fill) + strings.Repeat(" ", barW-fill) + "]"
			return strings.TrimRight(fmt.Sprintf("%s %s %s  %s", name, bar, counts, rest), " ")
		}
		return strings.TrimRight(fmt.Sprintf("%s %s  %s", name, counts, rest), " ")
	}
	return strings.TrimRight(fmt.Sprintf("%s %s", name, strings.Join(append(tail, state), "  ")), " ")
}

func formatRate(r float64) string {
	switch {
	case r >= 1e6:
		return fmt.Sprintf("%.1fM/s", r/1e6)
	case r >= 1e4:
		return fmt.Sprintf("%.0fk/s", r/1e3)
	case r >= 10:
		return fmt.Sprintf("%.0f/s", r)
	}
	return fmt.Sprintf("%.1f/s", r)
}

func roundETA(d time.Duration) string {
	switch {
	case d >= time.Hour:
		return d.Round(time.Minute).String()
	case d >= time.Minute:
		return d.Round(time.Second).String()
	}
	return d.Round(100 * time.Millisecond).String()
}

var (
	_ Sink = None{}
	_ Sink = (*Plain)(nil)
	_ Sink = (*Bar)(nil)
)

package events

import (
	"encoding/json"
	"math/bits"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/steps"
)

// DefaultLimits bound the recorder's memory and the events file: a run of
// any length and size gives a file of about a megabyte at most, plus the
// kept failures.
var DefaultLimits = Limits{
	Bins:          512,
	LanesPerStage: 32,
	ExactAttempts: 20000,
	ExactTotal:    60000,
	Failures:      5000,
	Sample:        300,
}

const (
	slowest         = 10  // slowest items kept per stage
	examplesPerErr  = 3   // example items per error class
	maxErrorClasses = 50  // classes per stage before "other"
	maxItemText     = 160 // bytes of an item's JSON kept
	maxErrorText    = 400 // bytes of an error message kept
	maxItemAttempts = 20  // attempts kept per kept item
	firstBinWidth   = 1e6 // ns; doubles as the run outgrows the bins
	maxOtherNames   = 1e5 // distinct workers counted in an "other" lane
	histBuckets     = 520 // latency histogram, 8 buckets per power of two
	outcomes        = 5   // succeeded, failed, skipped, cancelled, filtered
	noOffset        = -1  // FirstUS/LastUS of a stage that saw nothing
	defaultSeed     = 0x9e3779b97f4a7c15
)

var outcomeNames = [outcomes]report.Outcome{report.Succeeded, report.Failed, report.Skipped, report.Cancelled, report.Filtered}

func outcomeIndex(o report.Outcome) int {
	for i, n := range outcomeNames {
		if n == o {
			return i
		}
	}
	return 1 // an outcome this recorder does not know is not a success
}

// Recorder is an engine.EventSink that keeps what the HTML report shows.
// Its memory is bounded by its Limits, whatever the number of items.
type Recorder struct {
	start  time.Time
	limits Limits
	now    func() time.Time

	mu     sync.Mutex
	stages map[string]*stageRec
	order  []*stageRec
	// known is a copy of stages read without the lock: every event looks
	// its stage up, from as many goroutines as there are stages.
	known atomic.Pointer[map[string]*stageRec]

	failures atomic.Int64 // failed items kept, whole run
	exact    atomic.Int64 // attempts kept one by one, whole run
}

var _ engine.EventSink = (*Recorder)(nil)

// New returns a recorder whose time zero is start (the run's start).
func New(start time.Time, limits Limits) *Recorder {
	return &Recorder{start: start, limits: limits, now: time.Now, stages: map[string]*stageRec{}}
}

type stageRec struct {
	mu  sync.Mutex
	out Stage
	w   int64 // bin width, ns

	outcomes [outcomes]int64
	done     [outcomes][]int64
	busy     []int64 // ns
	wait     []int64 // ns
	waitNS   int64

	hist    [histBuckets]int64
	latN    int64
	latSum  int64
	latMax  int64
	first   int64 // ns offset, -1 none
	last    int64
	errors  map[string]*ErrorClass
	errList []*ErrorClass

	lanes     map[string]*laneRec
	laneList  []*laneRec
	other     *laneRec
	otherSeen map[string]bool
	exact     int

	failures []*Item
	sample   []*Item
	slow     []slowItem
	rng      uint64
}

type slowItem struct {
	lat  int64
	item *Item
}

type laneRec struct {
	Lane
	busy, starts, fails []int64 // per bin, busy in ns
}

func (r *Recorder) stage(name string) *stageRec {
	if m := r.known.Load(); m != nil {
		if s := (*m)[name]; s != nil {
			return s
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stages[name]
	if s == nil {
		n := r.limits.Bins
		s = &stageRec{out: Stage{Name: name, Total: -1}, w: firstBinWidth,
			busy: make([]int64, n), wait: make([]int64, n), first: noOffset, last: noOffset,
			errors: map[string]*ErrorClass{}, lanes: map[string]*laneRec{}, rng: defaultSeed}
		for i := range s.done {
			s.done[i] = make([]int64, n)
		}
		r.stages[name] = s
		r.order = append(r.order, s)
		m := make(map[string]*stageRec, len(r.stages))
		for k, v := range r.stages {
			m[k] = v
		}
		r.known.Store(&m)
	}
	return s
}

// StageStarted implements engine.EventSink.
func (r *Recorder) StageStarted(stage string, workers int, total int64) {
	s := r.stage(stage)
	s.mu.Lock()
	s.out.Workers, s.out.Total = workers, total
	s.mu.Unlock()
}

// StageDone implements engine.EventSink.
func (r *Recorder) StageDone(string) {}

// ItemDone implements engine.EventSink. Calls for one stage come one at a
// time, so the stage's lock is taken without contention but for Data.
func (r *Recorder) ItemDone(ev *engine.ItemEvent) {
	s := r.stage(ev.Stage)
	s.mu.Lock()
	defer s.mu.Unlock()
	r.record(s, ev)
}

func (r *Recorder) off(t time.Time) int64 {
	d := int64(t.Sub(r.start))
	if d < 0 {
		return 0
	}
	return d
}

func (r *Recorder) record(s *stageRec, ev *engine.ItemEvent) {
	att := ev.Attempts
	var first, end int64
	if len(att) > 0 {
		first, end = r.off(att[0].Start), r.off(att[len(att)-1].End)
	} else {
		end = r.off(r.now())
		first = end
	}
	s.cover(end)
	if s.first == noOffset || first < s.first {
		s.first = first
	}
	if end > s.last {
		s.last = end
	}
	o := outcomeIndex(ev.Outcome)
	s.outcomes[o]++
	s.done[o][end/s.w]++

	final := KindOK
	switch ev.Outcome {
	case report.Failed, report.Skipped:
		final = KindFailed
	case report.Cancelled:
		final = KindCancelled
	}
	for i, a := range att {
		kind := final
		if i < len(att)-1 {
			kind = KindRetried
		}
		if a.Redelivered > 0 && kind != KindOK {
			kind = KindRedelivered
		}
		r.attempt(s, &a, kind, ev.Index)
	}
	if n := len(att); n > 1 {
		s.out.Retries += int64(n - 1)
	}
	if ev.Wait > 0 {
		w := int64(ev.Wait)
		s.waitNS += w
		s.out.Waited++
		s.addOverlap(s.wait, first-w, first)
	}
	var lat int64
	if len(att) > 0 {
		lat = end - first
		s.latN++
		s.latSum += lat
		if lat > s.latMax {
			s.latMax = lat
		}
		s.hist[bucket(lat)]++
	}

	if final == KindFailed {
		class := ""
		if len(att) > 0 {
			class = att[len(att)-1].Class
		}
		if class == "" && ev.Err != nil {
			class = steps.ClassOf(ev.Err)
		}
		if class == "" {
			class = "error"
		}
		s.errorClass(class, ev)
		if r.failures.Add(1) <= int64(r.limits.Failures) {
			s.failures = append(s.failures, r.item(ev, "failure", class))
		} else {
			s.out.FailuresOmitted++
		}
		return
	}
	s.out.SampleCandidates++
	if lat > 0 && (len(s.slow) < slowest || lat > s.slow[len(s.slow)-1].lat) {
		it := r.item(ev, "slow", "")
		if len(s.slow) == slowest {
			s.slow = s.slow[:slowest-1]
		}
		i := sort.Search(len(s.slow), func(i int) bool { return s.slow[i].lat < lat })
		s.slow = append(s.slow, slowItem{})
		copy(s.slow[i+1:], s.slow[i:])
		s.slow[i] = slowItem{lat, it}
		return
	}
	// Reservoir sampling (Algorithm R): every item has the same chance.
	if len(s.sample) < r.limits.Sample {
		s.sample = append(s.sample, r.item(ev, "sample", ""))
	} else if j := s.rand() % uint64(s.out.SampleCandidates); j < uint64(r.limits.Sample) {
		s.sample[j] = r.item(ev, "sample", "")
	}
}

func (r *Recorder) attempt(s *stageRec, a *engine.Attempt, kind int, index int64) {
	start, end := r.off(a.Start), r.off(a.End)
	if end < start {
		end = start
	}
	s.cover(end)
	s.out.Attempts++
	s.out.Redeliv += int64(a.Redelivered)
	l := r.lane(s, a.Worker)
	l.Attempts++
	l.BusyUS += end - start // ns until Data converts
	l.starts[start/s.w]++
	if kind != KindOK {
		l.Failed++
		l.fails[start/s.w]++
	}
	s.addOverlap(l.busy, start, end)
	s.addOverlap(s.busy, start, end)
	if s.exact < r.limits.ExactAttempts && r.exact.Add(1) <= int64(r.limits.ExactTotal) {
		s.exact++
		l.Exact = append(l.Exact, [4]int64{start / 1e3, (end - start) / 1e3, int64(kind), index})
	} else {
		s.out.ExactOmitted++
	}
}

func (r *Recorder) lane(s *stageRec, worker string) *laneRec {
	if l := s.lanes[worker]; l != nil {
		return l
	}
	if len(s.lanes) < r.limits.LanesPerStage {
		l := s.newLane(worker)
		s.lanes[worker] = l
		s.laneList = append(s.laneList, l)
		return l
	}
	if s.other == nil {
		s.other = s.newLane("other workers")
		s.other.Other = true
		s.otherSeen = map[string]bool{}
	}
	if !s.otherSeen[worker] && len(s.otherSeen) < maxOtherNames {
		s.otherSeen[worker] = true
		s.other.Workers++
	}
	return s.other
}

func (s *stageRec) newLane(worker string) *laneRec {
	n := len(s.busy)
	return &laneRec{Lane: Lane{Worker: worker}, busy: make([]int64, n), starts: make([]int64, n), fails: make([]int64, n)}
}

func (s *stageRec) errorClass(class string, ev *engine.ItemEvent) {
	e := s.errors[class]
	if e == nil {
		if len(s.errors) >= maxErrorClasses {
			s.out.ErrorsOther++
			return
		}
		e = &ErrorClass{Class: class}
		s.errors[class] = e
		s.errList = append(s.errList, e)
	}
	e.Count++
	if len(e.Examples) < examplesPerErr {
		e.Examples = append(e.Examples, &Example{Index: ev.Index, Item: shortJSON(ev.Item), Error: errText(ev.Err)})
	}
}

func (r *Recorder) item(ev *engine.ItemEvent, kept, class string) *Item {
	it := &Item{Stage: ev.Stage, Index: ev.Index, Outcome: string(ev.Outcome), Item: shortJSON(ev.Item),
		Error: errText(ev.Err), Class: class, WaitUS: int64(ev.Wait / time.Microsecond), Kept: kept}
	att := ev.Attempts
	if len(att) > maxItemAttempts {
		it.AttemptsOmitted = len(att) - maxItemAttempts
		att = att[:maxItemAttempts]
	}
	for _, a := range att {
		it.Attempts = append(it.Attempts, ItemAttempt{Worker: a.Worker, StartUS: r.off(a.Start) / 1e3,
			DurUS: int64(a.End.Sub(a.Start) / time.Microsecond), Class: a.Class, Redelivered: a.Redelivered})
	}
	return it
}

// cover doubles the bin width until offset t (ns) falls in the bins.
func (s *stageRec) cover(t int64) {
	for t >= int64(len(s.busy))*s.w {
		s.w *= 2
		halve(s.busy)
		halve(s.wait)
		for _, d := range s.done {
			halve(d)
		}
		for _, l := range s.laneList {
			halve(l.busy)
			halve(l.starts)
			halve(l.fails)
		}
		if s.other != nil {
			halve(s.other.busy)
			halve(s.other.starts)
			halve(s.other.fails)
		}
	}
}

// halve merges bins pairwise into the first half.
func halve(b []int64) {
	n := len(b) / 2
	for i := 0; i < n; i++ {
		b[i] = b[2*i] + b[2*i+1]
	}
	clear(b[n:])
}

// addOverlap adds to each bin the part of [a, b) (ns) that falls in it.
func (s *stageRec) addOverlap(bins []int64, a, b int64) {
	if a < 0 {
		a = 0
	}
	if b <= a {
		return
	}
	s.cover(b)
	for i := a / s.w; i*s.w < b; i++ {
		lo, hi := max(a, i*s.w), min(b, (i+1)*s.w)
		bins[i] += hi - lo
	}
}

func (s *stageRec) rand() uint64 {
	s.rng ^= s.rng << 13
	s.rng ^= s.rng >> 7
	s.rng ^= s.rng << 17
	return s.rng
}

// bucket is the histogram bucket of a latency in ns: exact below 16, then
// 8 buckets per power of two (within 12.5%).
func bucket(v int64) int {
	if v < 16 {
		return int(max(v, 0))
	}
	e := bits.Len64(uint64(v))
	return e*8 + int((uint64(v)>>(e-4))&7)
}

// bucketValue is the middle of a bucket.
func bucketValue(i int) int64 {
	if i < 16 {
		return int64(i)
	}
	e, m := i/8, int64(i%8)
	lo := (8 + m) << (e - 4)
	return lo + (int64(1)<<(e-4))/2
}

func (s *stageRec) percentile(q float64) int64 {
	target := int64(q*float64(s.latN) + 0.999999)
	var n int64
	for i, c := range s.hist {
		n += c
		if n >= target && c > 0 {
			return min(bucketValue(i), s.latMax)
		}
	}
	return s.latMax
}

// Data returns what was recorded, ready to write or render. The recorder
// may go on recording after it.
func (r *Recorder) Data() *Data {
	r.mu.Lock()
	order := append([]*stageRec(nil), r.order...)
	r.mu.Unlock()
	d := &Data{Format: Format, Start: r.start, End: r.now(), Limits: r.limits}
	for _, s := range order {
		s.mu.Lock()
		st, items := s.export()
		s.mu.Unlock()
		d.Stages = append(d.Stages, st)
		d.Items = append(d.Items, items...)
	}
	// Failures first, in the order they happened; then the rest by stage.
	sort.SliceStable(d.Items, func(i, j int) bool {
		return (d.Items[i].Kept == "failure") && (d.Items[j].Kept != "failure")
	})
	return d
}

func (s *stageRec) export() (*Stage, []*Item) {
	st := s.out
	st.Outcomes = map[string]int64{}
	st.Series = Series{Done: map[string][]int64{}}
	for i, n := range outcomeNames {
		st.Outcomes[string(n)] = s.outcomes[i]
		if s.outcomes[i] > 0 {
			st.Series.Done[string(n)] = trim(s.done[i], 1)
		}
	}
	st.BinUS = s.w / 1e3
	st.Series.Busy = trim(s.busy, 1e3)
	st.Series.Wait = trim(s.wait, 1e3)
	st.WaitUS = s.waitNS / 1e3
	st.FirstUS, st.LastUS = s.first, s.last
	if s.first != noOffset {
		st.FirstUS, st.LastUS = s.first/1e3, s.last/1e3
	}
	if s.latN > 0 {
		st.Latency = Percentiles{Count: s.latN, P50: s.percentile(.5) / 1e3, P90: s.percentile(.9) / 1e3,
			P99: s.percentile(.99) / 1e3, Max: s.latMax / 1e3, Mean: s.latSum / s.latN / 1e3}
	}
	st.Errors = make([]*ErrorClass, 0, len(s.errList))
	for _, e := range s.errList {
		c := *e
		c.Examples = append([]*Example(nil), e.Examples...)
		st.Errors = append(st.Errors, &c)
	}
	sort.SliceStable(st.Errors, func(i, j int) bool { return st.Errors[i].Count > st.Errors[j].Count })
	lanes := append([]*laneRec(nil), s.laneList...)
	sort.SliceStable(lanes, func(i, j int) bool { return workerLess(lanes[i].Worker, lanes[j].Worker) })
	if s.other != nil {
		lanes = append(lanes, s.other)
	}
	st.Lanes = nil
	for _, l := range lanes {
		c := l.Lane
		c.BusyUS /= 1e3
		c.Busy, c.Starts, c.Fails = trim(l.busy, 1e3), trim(l.starts, 1), trim(l.fails, 1)
		c.Exact = append([][4]int64(nil), l.Exact...)
		st.Lanes = append(st.Lanes, &c)
	}
	items := append([]*Item(nil), s.failures...)
	for _, x := range s.slow {
		items = append(items, x.item)
	}
	sample := append([]*Item(nil), s.sample...)
	sort.Slice(sample, func(i, j int) bool { return sample[i].Index < sample[j].Index })
	items = append(items, sample...)
	return &st, items
}

// trim copies bins divided by unit, without the trailing zeros.
func trim(b []int64, unit int64) []int64 {
	n := len(b)
	for n > 0 && b[n-1] == 0 {
		n--
	}
	out := make([]int64, n)
	for i := range out {
		out[i] = b[i] / unit
	}
	return out
}

// workerLess orders "thread 2" before "thread 10".
func workerLess(a, b string) bool {
	pa, na, oka := splitNum(a)
	pb, nb, okb := splitNum(b)
	if oka && okb && pa == pb {
		return na < nb
	}
	return a < b
}

func splitNum(s string) (string, int, bool) {
	i := strings.LastIndexByte(s, ' ')
	if i < 0 {
		return s, 0, false
	}
	n, err := strconv.Atoi(s[i+1:])
	return s[:i], n, err == nil
}

func shortJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return truncate(strings.TrimSpace(strings.ReplaceAll(strconv.Quote(err.Error()), "\n", " ")), maxItemText)
	}
	return truncate(string(b), maxItemText)
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return truncate(err.Error(), maxErrorText)
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

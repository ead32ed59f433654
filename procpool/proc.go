package procpool

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/protocol"
	"github.com/flowrun/flow/stagehost"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/taskq"
)

// proc is one worker process as the parent sees it.
type proc struct {
	pool *Pool
	slot int
	cmd  *exec.Cmd
	pid  int
	name string   // "pid N", in attempts and timelines
	in   *os.File // our end of the worker's input pipe
	out  *os.File // our end of the worker's output pipe
	w    *protocol.Writer
	r    *protocol.Reader

	mu          sync.Mutex
	outstanding []*task // sent and not answered, in the order sent
	outBase     []*task // the array outstanding was last allocated as
	sent        int
	stopping    bool   // takes no more items
	killing     bool   // being stopped by signals
	killReason  error  // why, when it is the running item's failure
	killFor     uint64 // the item running when the kill was decided
	snapshot    []procInfo
	cancels     []uint64
	cancelling  bool
	inClosed    bool
	page        runningPage // guarded by mu: unmapped once the worker is gone

	// The feeding goroutine's own (Pool.feed): the tasks popped for a
	// frame and the frame, reused from frame to frame.
	popped   []*task
	frame    protocol.Items
	frameBuf []byte
	frameErr error
	// The reading goroutine's own (readLoop): a frame's answers, and the
	// run of them that belongs to one DoBatch call.
	answers []answer
	run     []engine.BatchAnswer

	wake     chan struct{} // one token: outstanding shrank or stopping
	exited   chan struct{} // closed once reaped and its items settled
	lastSeen atomic.Int64

	timer      *time.Timer // checkAbandoned, guarded by mu
	timerArmed bool
	tail       tailBuffer
	stderr     *os.File
	stderrDone chan struct{}
}

// buildError is a worker's refusal to build the step: the same everywhere,
// so the pool stops trying.
type buildError struct{ msg string }

func (e *buildError) Error() string { return e.msg }

// start launches a worker for slot and completes the hello/ready exchange.
func (p *Pool) start(slot int) (*proc, error) {
	toChildR, toChildW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	fromChildR, fromChildW, err := os.Pipe()
	if err != nil {
		toChildR.Close()
		toChildW.Close()
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		for _, f := range []*os.File{toChildR, toChildW, fromChildR, fromChildW} {
			f.Close()
		}
		return nil, err
	}
	page, pageFile, err := newRunningPage()
	if err != nil {
		for _, f := range []*os.File{toChildR, toChildW, fromChildR, fromChildW, errR, errW} {
			f.Close()
		}
		return nil, fmt.Errorf("cannot share a page with a worker process: %w", err)
	}
	cmd := exec.Command(p.cfg.Command[0], p.cfg.Command[1:]...)
	cmd.Env = append(append(append(os.Environ(), p.cfg.Env...), p.procsEnv...), RoleEnv+"=worker")
	cmd.ExtraFiles = []*os.File{toChildR, fromChildW, pageFile} // descriptors 3, 4 and 5
	cmd.Stdout, cmd.Stderr = errW, errW
	cmd.SysProcAttr = sysProcAttr()
	err = cmd.Start()
	toChildR.Close()
	fromChildW.Close()
	errW.Close()
	pageFile.Close()
	if err != nil {
		toChildW.Close()
		fromChildR.Close()
		errR.Close()
		page.unmap()
		return nil, fmt.Errorf("cannot start a worker process: %w", err)
	}
	w := &proc{
		pool: p, slot: slot, cmd: cmd, pid: cmd.Process.Pid, name: "pid " + strconv.Itoa(cmd.Process.Pid),
		in: toChildW, out: fromChildR, w: protocol.NewWriter(toChildW), r: protocol.NewReader(fromChildR),
		wake: make(chan struct{}, 1), exited: make(chan struct{}), stderrDone: make(chan struct{}),
		page: page, stderr: errR,
	}
	// readLoop handles each message before reading the next.
	w.r.Reuse()
	w.lastSeen.Store(time.Now().UnixNano())
	p.wg.Add(1)
	go w.copyStderr()

	hello := p.hello
	hello.Worker = slot
	res := make(chan error, 1)
	go func() { res <- w.handshake(&hello) }()
	timer := time.NewTimer(p.cfg.StartTimeout)
	defer timer.Stop()
	answered := false
	select {
	case err = <-res:
		answered = true
	case <-timer.C:
		err = fmt.Errorf("it did not answer within %v", p.cfg.StartTimeout)
	case <-p.closing:
		err = errClosed
	}
	if err == nil {
		// Register under p.mu, where Close takes its list of workers after
		// closing p.closing: a worker that misses the list must not live on.
		p.mu.Lock()
		select {
		case <-p.closing:
			err = errClosed
		default:
			p.procs[w] = struct{}{}
			p.startFailures = 0
			p.started++
		}
		p.mu.Unlock()
	}
	if err != nil {
		w.killNow()
		w.in.Close()
		w.out.Close()
		if !answered {
			<-res
		}
		state := w.reap()
		page.unmap()
		var be *buildError
		if errors.As(err, &be) || errors.Is(err, errClosed) {
			return nil, err
		}
		return nil, fmt.Errorf("worker process %d failed to start (%v; it %s)%s; the program must call procpool.IsWorker first thing in main",
			w.pid, err, exitText(state, answered), w.tail.summary())
	}
	p.mu.Lock()
	startMonitor := !p.monitoring
	p.monitoring = true
	p.mu.Unlock()
	if startMonitor {
		p.wg.Add(1)
		go p.monitor()
	}
	p.wg.Add(1)
	go w.readLoop()
	return w, nil
}

func (w *proc) handshake(h *protocol.Hello) error {
	if err := w.w.Write(h); err != nil {
		return fmt.Errorf("sending hello: %w", err)
	}
	m, err := w.r.Read()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("it exited before answering hello")
		}
		return fmt.Errorf("reading its answer: %w", err)
	}
	ready, ok := m.(*protocol.Ready)
	if !ok {
		return fmt.Errorf("it answered hello with %s", m.Type())
	}
	if ready.Err != nil {
		return &buildError{msg: ready.Err.Message}
	}
	if ready.Version != protocol.Version {
		return &buildError{msg: fmt.Sprintf("worker process %d speaks protocol version %d, this flow %d: the flow binary changed during the run; run again", ready.PID, ready.Version, protocol.Version)}
	}
	// Both sides speak this version: items go in the compact form.
	w.w.Compact()
	return nil
}

// frameLocked encodes the frame of a batch, under w.mu: once the lock is
// released an answer may settle the tasks and their memory (the task and
// its encoded value) go to another batch (DoBatch reuses both), so nothing
// of theirs is read after.
func (w *proc) frameLocked(batch []*task) {
	w.frame = w.frame[:0] // cleared after the last frame
	for _, t := range batch {
		w.frame = append(w.frame, protocol.Item{ID: t.ID, Index: t.In.Index, Raw: t.Raw})
	}
	w.frameBuf, w.frameErr = w.w.AppendFrame(w.frameBuf[:0], &w.frame)
	clear(w.frame) // the values are in frameBuf
}

// pushOutstandingLocked appends a batch sent to the worker. Answers take
// tasks off the front, so the list creeps along its array: once it would
// outgrow what is left, it moves back to the start of the array (the slots
// answers left behind are nil) instead of growing a new array every few
// frames.
func (w *proc) pushOutstandingLocked(batch []*task) {
	n := len(w.outstanding)
	if n+len(batch) > cap(w.outstanding) && n+len(batch) <= cap(w.outBase) {
		copy(w.outBase[:n], w.outstanding)
		clear(w.outBase[n:cap(w.outBase)])
		w.outstanding = w.outBase[:n]
	}
	grow := n+len(batch) > cap(w.outstanding)
	w.outstanding = append(w.outstanding, batch...)
	if grow {
		w.outBase = w.outstanding[:0]
	}
}

// send writes the frame of a batch (frameLocked). If the worker is gone the
// items were never delivered: they go back to the queue for another worker.
func (w *proc) send(batch []*task) {
	err := w.frameErr
	if err == nil {
		err = w.w.WriteFrame(w.frameBuf)
	}
	if cap(w.frameBuf) > 1<<20 {
		w.frameBuf = nil // keep a modest buffer; drop one a huge batch grew
	}
	if err == nil {
		return
	}
	// Whoever takes an item out of outstanding settles it: if finish has
	// taken the list already, the items are its to requeue, and requeueing
	// them here too could hand one to two workers.
	w.mu.Lock()
	keep := w.outstanding[:0]
	var back []*task
	for _, t := range w.outstanding {
		if containsTask(batch, t) {
			back = append(back, t)
		} else {
			keep = append(keep, t)
		}
	}
	w.outstanding = keep
	w.stopping = true
	w.mu.Unlock()
	w.pool.queue.Requeue(back)
}

func containsTask(ts []*task, t *task) bool {
	for _, x := range ts {
		if x == t {
			return true
		}
	}
	return false
}

// readLoop takes results until the worker's output ends, then settles what
// the worker still held.
func (w *proc) readLoop() {
	defer w.pool.wg.Done()
	var protoErr error
	for {
		m, err := w.r.Read()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) {
				protoErr = err
			}
			break
		}
		w.lastSeen.Store(time.Now().UnixNano())
		switch m := m.(type) {
		case *protocol.Results:
			w.results(m)
		case *protocol.Heartbeat:
		default:
			protoErr = fmt.Errorf("unexpected %s message", m.Type())
		}
		if protoErr != nil {
			break
		}
	}
	if protoErr != nil {
		w.kill(&steps.Error{Err: fmt.Errorf("worker process %d broke the protocol (%v): did the step write to descriptor 4?", w.pid, protoErr), Class: "crash"})
	}
	w.finish()
}

func (w *proc) results(m *protocol.Results) {
	w.pool.noteBusy(m.Busy, len(m.Results))
	answers := w.answers[:0]
	w.mu.Lock()
	for i := range m.Results {
		res := &m.Results[i]
		// Answers come in the order sent, so the match is at the front
		// unless the worker skipped a withdrawn item.
		if len(w.outstanding) > 0 && w.outstanding[0].ID == res.ID {
			answers = append(answers, answer{w.outstanding[0], res})
			w.outstanding[0] = nil
			w.outstanding = w.outstanding[1:]
			continue
		}
		for j, t := range w.outstanding {
			if t.ID == res.ID {
				w.outstanding = slices.Delete(w.outstanding, j, j+1)
				answers = append(answers, answer{t, res})
				break
			}
		}
	}
	w.mu.Unlock()
	w.signal()
	// The answers of a batch (DoBatch) come in runs: they are handed over
	// together, and its count of tasks left drops once per run.
	var cur *batch
	run := w.run[:0]
	for _, a := range answers {
		v, err := a.res.Value, error(nil)
		if a.res.Err != nil {
			v, err = nil, stagehost.ErrorOf(a.res.Err)
		}
		b, ok := a.t.Group().(*batch)
		if !ok {
			a.t.Finish(taskq.Sent, v, err)
			continue
		}
		if !a.t.Take(taskq.Sent) {
			continue
		}
		if b != cur {
			run = cur.endRun(run)
			cur = b
		}
		b.attempt(a.t)
		run = append(run, engine.BatchAnswer{I: a.t.Slot, V: v, Err: err})
	}
	run = cur.endRun(run)
	w.run = run
	clear(answers)
	w.answers = answers[:0]
}

// endRun delivers a run of answers of b and counts them; it returns the
// run's slice emptied for the next.
func (b *batch) endRun(run []engine.BatchAnswer) []engine.BatchAnswer {
	if b == nil || len(run) == 0 {
		return run[:0]
	}
	b.deliverRun(run)
	n := len(run)
	// The values are the caller's now: the slice must not keep them alive.
	clear(run)
	b.answered(n)
	return run[:0]
}

// answer pairs a result with the task it answers (proc.results).
type answer struct {
	t   *task
	res *protocol.Result
}

func (w *proc) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// abandon is called once the caller of Do gave up on t (state already
// taskq.Abandoned). If the worker is running t, it is stopped; otherwise t is
// withdrawn with a Cancel, and should the worker start it all the same (the
// Cancel crossed it on the way), it is stopped KillGrace later.
func (w *proc) abandon(t *task) (pid int, stopped bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !slices.Contains(w.outstanding, t) {
		return w.pid, w.killing
	}
	if w.runningLocked() == t.ID {
		w.stopLocked(nil, true)
		return w.pid, true
	}
	w.cancels = append(w.cancels, t.ID)
	if !w.cancelling {
		w.cancelling = true
		go w.flushCancels()
	}
	t.MarkAbandoned()
	if !w.timerArmed {
		w.timerArmed = true
		if w.timer == nil {
			w.timer = time.AfterFunc(w.pool.cfg.KillGrace, w.checkAbandoned)
		} else {
			w.timer.Reset(w.pool.cfg.KillGrace)
		}
	}
	return w.pid, false
}

// checkAbandoned stops the worker if it has been running a withdrawn item
// for KillGrace, and looks again later while withdrawn items remain.
func (w *proc) checkAbandoned() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.timerArmed = false
	if w.killing || w.stopping && len(w.outstanding) == 0 {
		return
	}
	grace := w.pool.cfg.KillGrace
	running := w.runningLocked()
	next := time.Duration(-1)
	for _, t := range w.outstanding {
		if t.State.Load() != taskq.Abandoned {
			continue
		}
		age := t.SinceAbandoned()
		if t.ID == running && age >= grace {
			w.stopLocked(nil, true)
			return
		}
		wait := grace - age
		if wait <= 0 {
			wait = grace
		}
		if next < 0 || wait < next {
			next = wait
		}
	}
	if next >= 0 {
		w.timerArmed = true
		w.timer.Reset(next)
	}
}

// runningLocked is the ID of the item the worker runs now, 0 if none.
// Without the shared page, the best guess is the oldest item it holds.
func (w *proc) runningLocked() uint64 {
	if w.page.valid() {
		return w.page.load()
	}
	if len(w.outstanding) > 0 {
		return w.outstanding[0].ID
	}
	return 0
}

// kill stops the worker at once; reason becomes the error of the item it
// is running, if any.
func (w *proc) kill(reason error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopLocked(reason, false)
}

// flushCancels sends pending cancels off the caller's goroutine: Do must
// return at once even if the pipe is full.
func (w *proc) flushCancels() {
	for {
		w.mu.Lock()
		ids := w.cancels
		w.cancels = nil
		if len(ids) == 0 || w.inClosed {
			w.cancelling = false
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		c := protocol.Cancel(ids)
		if w.w.Write(&c) != nil {
			w.mu.Lock()
			w.cancelling = false
			w.mu.Unlock()
			return
		}
	}
}

// stopLocked kills the worker and every process it started. graceful sends
// SIGTERM first (the worker then cancels its running step, which lets exec
// stop its own children) and SIGKILL after KillGrace; otherwise SIGKILL at
// once. reason, if set, becomes the error of the item it was running.
func (w *proc) stopLocked(reason error, graceful bool) {
	if w.killing {
		return
	}
	w.killing, w.stopping = true, true
	// The item to blame is the one running now: the worker may start
	// another before the signal lands (or, given SIGTERM, end this one).
	w.killReason, w.killFor = reason, w.runningLocked()
	w.signal()
	select {
	case <-w.exited:
		return
	default:
	}
	w.pool.wg.Add(1)
	go func() {
		defer w.pool.wg.Done()
		snap := tree(readProcs(), w.pid)
		w.mu.Lock()
		w.snapshot = snap
		w.mu.Unlock()
		if graceful {
			signalProcs(snap, syscall.SIGTERM)
			w.signalGroup(syscall.SIGTERM)
			t := time.NewTimer(w.pool.cfg.KillGrace)
			select {
			case <-w.exited:
			case <-t.C:
			}
			t.Stop()
		}
		w.killTree(snap)
	}()
}

// killTree SIGKILLs the recorded processes and, while the worker lives,
// whatever it has started since; a few rounds catch children forked while
// the first round was under way.
func (w *proc) killTree(snap []procInfo) {
	signalProcs(snap, syscall.SIGKILL)
	w.signalGroup(syscall.SIGKILL)
	for range 3 {
		cur := tree(readProcs(), w.pid)
		if len(cur) == 0 {
			return
		}
		signalProcs(cur, syscall.SIGKILL)
		time.Sleep(10 * time.Millisecond)
	}
}

// signalGroup signals the worker's process group, which reaches its
// children even where /proc cannot be read. Once the worker is reaped its
// pid may be reused, so then it does nothing.
func (w *proc) signalGroup(sig syscall.Signal) {
	select {
	case <-w.exited:
	default:
		_ = syscall.Kill(-w.pid, sig)
	}
}

// killNow SIGKILLs the worker's process group (used before the worker is
// known to the pool, when nothing else can have started).
func (w *proc) killNow() { _ = syscall.Kill(-w.pid, syscall.SIGKILL) }

func (w *proc) closeInput() {
	w.mu.Lock()
	w.inClosed = true
	w.mu.Unlock()
	w.in.Close()
}

// reap waits for the process and its output, briefly for output: a
// grandchild may hold the stderr pipe open.
func (w *proc) reap() *os.ProcessState {
	_ = w.cmd.Wait()
	select {
	case <-w.stderrDone:
	case <-time.After(200 * time.Millisecond):
		w.stderr.Close() // ends the copy even if a grandchild holds the pipe
		<-w.stderrDone
	}
	return w.cmd.ProcessState
}

// finish runs once the worker's output has ended: reap it, fail the item
// it was running, and send every other item it held elsewhere, with no
// error: those after the running one never started, and those before it
// finished but their results were lost with the worker, so they run again.
// Only the running item may be retried by the stage policy; the others'
// second run shows in the log alone.
func (w *proc) finish() {
	p := w.pool
	w.closeInput()
	w.out.Close()
	state := w.reap()
	_ = syscall.Kill(-w.pid, syscall.SIGKILL) // leftovers in its group
	w.mu.Lock()
	killing := w.killing
	w.stopping = true
	held := w.outstanding
	w.outstanding = nil
	reason, culprit := w.killReason, w.runningLocked()
	if killing {
		// What it runs at its death is beside the point when flow killed
		// it: the item it was stopped for is the one to blame, if any.
		culprit = w.killFor
	}
	exact := w.page.valid()
	lastStarted := w.page.lastStarted()
	page := w.page
	w.page = runningPage{}
	snap := w.snapshot
	if w.timer != nil {
		w.timer.Stop()
	}
	w.mu.Unlock()
	page.unmap()
	signalProcs(snap, syscall.SIGKILL)
	close(w.exited)
	p.mu.Lock()
	delete(p.procs, w)
	p.mu.Unlock()

	how := exitText(state, killing)
	if reason == nil {
		reason = &steps.Error{Class: "crash", Err: fmt.Errorf("worker process %d %s while running this item%s",
			w.pid, how, w.tail.summary())}
	}
	n := taskq.Settle(p.queue, held, taskq.Lost{Culprit: culprit, LastStarted: lastStarted, Exact: exact, Reason: reason,
		Repeated: func(crashes int) error {
			return &steps.Error{Class: "crash", Err: fmt.Errorf("%d worker processes died, each between items, after running this item; the last %s%s",
				crashes, how, w.tail.summary())}
		}})
	if n > 0 {
		p.stderrMu.Lock()
		fmt.Fprintf(p.cfg.Stderr, "flow: stage %s: worker process %d %s; %d items it held (queued, or done but not yet reported) run again in another worker\n",
			p.cfg.Label, w.pid, how, n)
		p.stderrMu.Unlock()
	}
}

// exitText says how a process ended.
func exitText(state *os.ProcessState, killedByUs bool) string {
	if state == nil {
		return "ended"
	}
	ws, ok := state.Sys().(syscall.WaitStatus)
	if !ok {
		return state.String()
	}
	switch {
	case ws.Signaled():
		s := fmt.Sprintf("was killed by signal %d (%s)", int(ws.Signal()), strings.ToUpper(sigName(ws.Signal())))
		if ws.Signal() == syscall.SIGKILL && !killedByUs {
			s += ", not sent by flow (another process, or the kernel's out-of-memory killer),"
		}
		return s
	case ws.Exited():
		return fmt.Sprintf("exited with status %d", ws.ExitStatus())
	}
	return state.String()
}

func sigName(s syscall.Signal) string {
	switch s {
	case syscall.SIGKILL:
		return "sigkill"
	case syscall.SIGTERM:
		return "sigterm"
	case syscall.SIGSEGV:
		return "sigsegv"
	case syscall.SIGABRT:
		return "sigabrt"
	case syscall.SIGBUS:
		return "sigbus"
	}
	return s.String()
}

// monitor enforces the memory limit and kills workers that went silent.
func (p *Pool) monitor() {
	defer p.wg.Done()
	every := time.Second
	if p.cfg.Memory > 0 {
		every = p.cfg.MemoryPoll
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-p.closing:
			return
		case <-t.C:
		}
		p.mu.Lock()
		procs := make([]*proc, 0, len(p.procs))
		for w := range p.procs {
			procs = append(procs, w)
		}
		p.mu.Unlock()
		if len(procs) == 0 {
			continue
		}
		now := time.Now().UnixNano()
		for _, w := range procs {
			if silent := time.Duration(now - w.lastSeen.Load()); silent > p.cfg.HeartbeatTimeout {
				w.kill(&steps.Error{Class: "crash", Err: fmt.Errorf("worker process %d sent nothing for %v (stopped or hung) and was killed", w.pid, silent.Round(time.Second))})
			}
		}
		if p.cfg.Memory <= 0 {
			continue
		}
		table := readProcs()
		for _, w := range procs {
			var rss int64
			for _, pi := range tree(table, w.pid) {
				rss += pi.rss * pageSize
			}
			if rss > p.cfg.Memory {
				w.kill(&steps.Error{Class: "memory", Err: fmt.Errorf("worker process %d exceeded the memory limit of %s (it used %s) while running this item, and was killed; raise memory: on stage %q if the item needs more",
					w.pid, formatBytes(p.cfg.Memory), formatBytes(rss), p.cfg.Label)})
			}
		}
	}
}

func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	v := float64(n) / float64(div)
	s := fmt.Sprintf("%.1f", v)
	s = strings.TrimSuffix(s, ".0")
	return s + string("KMGTPE"[exp]) + "iB"
}

// copyStderr forwards the worker's output lines, prefixed, and keeps the
// last ones for crash messages.
func (w *proc) copyStderr() {
	defer w.pool.wg.Done()
	defer close(w.stderrDone)
	defer w.stderr.Close()
	br := bufio.NewReaderSize(w.stderr, 16<<10)
	prefix := fmt.Sprintf("flow: stage %s: worker %d: ", w.pool.cfg.Label, w.pid)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			text := strings.TrimRight(string(line), "\r\n")
			w.tail.add(text)
			w.pool.stderrMu.Lock()
			fmt.Fprintf(w.pool.cfg.Stderr, "%s%s\n", prefix, text)
			w.pool.stderrMu.Unlock()
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// tailBuffer keeps a worker's last output lines, and the last line that
// announced a Go panic or fatal error, which the stack trace that follows
// would otherwise push out.
type tailBuffer struct {
	mu       sync.Mutex
	lines    []string
	headline string
}

const tailLines = 6

func (b *tailBuffer) add(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if strings.TrimSpace(s) == "" {
		return
	}
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	if strings.HasPrefix(s, "panic: ") || strings.HasPrefix(s, "fatal error: ") {
		b.headline = s
	}
	b.lines = append(b.lines, s)
	if len(b.lines) > tailLines {
		b.lines = b.lines[len(b.lines)-tailLines:]
	}
}

// summary renders the tail for an error message ("" when empty).
func (b *tailBuffer) summary() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.lines) == 0 {
		return ""
	}
	lines := b.lines
	if b.headline != "" && !slices.Contains(lines, b.headline) {
		lines = append([]string{b.headline, "..."}, lines...)
	}
	return "; its last output: " + strings.Join(lines, " | ")
}

package clock

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// guard fails the test instead of hanging when a broken clock never
// releases something.
func guard(t *testing.T, done <-chan struct{}) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("the virtual clock did not release the waits within a minute of real time")
	}
}

// Sleepers wake in time order, each at exactly its instant, whatever the
// order in which they started.
func TestVirtualSleepersWakeAtTheirInstant(t *testing.T) {
	v := NewVirtual(t0)
	ctx := NewContext(context.Background(), v)
	var mu sync.Mutex
	var woke []string
	var wg sync.WaitGroup
	for _, d := range []time.Duration{300 * time.Millisecond, 100 * time.Millisecond, 2 * time.Second, 200 * time.Millisecond} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := Sleep(ctx, d); err != nil {
				t.Error(err)
			}
			now := v.Now()
			mu.Lock()
			woke = append(woke, fmt.Sprintf("%s@%s", d, now.Sub(t0)))
			mu.Unlock()
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	guard(t, done)
	want := []string{"100ms@100ms", "200ms@200ms", "300ms@300ms", "2s@2s"}
	if !slices.Equal(woke, want) {
		t.Errorf("woke %v, want %v", woke, want)
	}
}

// A chain of sleeps adds up exactly: each starts when the previous ended.
func TestVirtualSequentialSleeps(t *testing.T) {
	v := NewVirtual(t0)
	ctx := NewContext(context.Background(), v)
	done := make(chan struct{})
	var got []time.Duration
	go func() {
		defer close(done)
		for _, d := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond} {
			_ = Sleep(ctx, d)
			got = append(got, From(ctx).Now().Sub(t0))
		}
	}()
	guard(t, done)
	if want := []time.Duration{100 * time.Millisecond, 300 * time.Millisecond, 700 * time.Millisecond}; !slices.Equal(got, want) {
		t.Errorf("woke at %v, want %v", got, want)
	}
}

// Waits due at the same instant are released in the order they were
// registered, one at a time: a timeout set before a sleep of the same
// length ends the sleep.
func TestVirtualTiesInRegistrationOrder(t *testing.T) {
	v := NewVirtual(t0)
	var mu sync.Mutex
	var order []int
	done := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Add(1)
		v.AfterFunc(time.Second, func() {
			defer wg.Done()
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
		})
	}
	go func() { wg.Wait(); close(done) }()
	guard(t, done)
	if !slices.Equal(order, []int{0, 1, 2, 3, 4}) {
		t.Errorf("released in order %v", order)
	}

	ctx, cancel := WithTimeoutCause(context.Background(), v, time.Second, errors.New("too slow"))
	defer cancel()
	err := v.SleepUntil(ctx, v.Now().Add(time.Second))
	if err == nil || err.Error() != "too slow" {
		t.Errorf("a sleep as long as the timeout set before it ended with %v, want the timeout's cause", err)
	}
	if got := v.Now().Sub(t0); got != 2*time.Second {
		t.Errorf("now %v, want 2s", got)
	}
}

func TestVirtualTimeoutContext(t *testing.T) {
	v := NewVirtual(t0)
	cause := errors.New("attempt timed out")
	ctx, cancel := WithTimeoutCause(context.Background(), v, 5*time.Second, cause)
	defer cancel()
	<-ctx.Done()
	if ctx.Err() != context.DeadlineExceeded || context.Cause(ctx) != cause {
		t.Errorf("err %v, cause %v", ctx.Err(), context.Cause(ctx))
	}
	if got := v.Now().Sub(t0); got != 5*time.Second {
		t.Errorf("ended at %v, want 5s", got)
	}
	if _, ok := ctx.Deadline(); ok {
		t.Error("a virtual timeout has a deadline: sockets would read it as wall time")
	}

	// Cancelled by its parent first: not a timeout, and the timer is gone.
	parent, stop := context.WithCancel(context.Background())
	ctx2, cancel2 := WithTimeoutCause(parent, v, time.Second, cause)
	defer cancel2()
	stop()
	if ctx2.Err() != context.Canceled {
		t.Errorf("err %v, want Canceled", ctx2.Err())
	}
	// Cancelled by its own cancel: the timer is stopped, nothing is left.
	_, cancel3 := WithTimeoutCause(context.Background(), v, time.Second, cause)
	cancel3()
	cancel2()
	if n := v.Pending(); n != 0 {
		t.Errorf("%d waits left after cancelling", n)
	}
}

func TestVirtualStop(t *testing.T) {
	v := NewVirtual(t0)
	called := make(chan struct{}, 1)
	tm := v.AfterFunc(time.Second, func() { called <- struct{}{} })
	if !tm.Stop() || tm.Stop() {
		t.Error("Stop: want true once, then false")
	}
	// A later wait passes the stopped one's instant without calling it.
	_ = v.SleepUntil(context.Background(), t0.Add(2*time.Second))
	select {
	case <-called:
		t.Error("a stopped AfterFunc was called")
	default:
	}
}

// CPU work takes no virtual time: the clock does not move while a
// goroutine runs, so work that never waits on the clock beats any timeout.
func TestVirtualComputingTakesNoTime(t *testing.T) {
	v := NewVirtual(t0)
	ctx, cancel := WithTimeoutCause(context.Background(), v, time.Millisecond, errors.New("timeout"))
	defer cancel()
	res := make(chan int, 1)
	go func() {
		// Real milliseconds of work, many times the virtual timeout.
		x := 0
		for i := range 20_000_000 {
			x += i % 7
		}
		res <- x
	}()
	select {
	case <-res:
	case <-ctx.Done():
		t.Fatal("the clock moved while a goroutine was computing")
	}
	if got := v.Now(); !got.Equal(t0) {
		t.Errorf("now moved by %v", got.Sub(t0))
	}
}

// Busy holds the clock while the program waits on something the clock
// cannot see (here a real timer standing in for a network reply).
func TestVirtualBusy(t *testing.T) {
	v := NewVirtual(t0)
	ctx, cancel := WithTimeoutCause(context.Background(), v, time.Millisecond, errors.New("timeout"))
	defer cancel()
	release := v.Busy()
	reply := make(chan struct{})
	time.AfterFunc(20*time.Millisecond, func() { close(reply) })
	select {
	case <-reply:
	case <-ctx.Done():
		t.Fatal("the clock moved while held busy")
	}
	release()
	release()
	<-ctx.Done() // once released, the timeout comes
	if got := v.Now().Sub(t0); got != time.Millisecond {
		t.Errorf("now %v, want 1ms", got)
	}
}

// With nothing to release, the clock's driver stops: no goroutine is left
// polling, and a program blocked for another reason is left to itself.
func TestVirtualIdleWithoutWaits(t *testing.T) {
	v := NewVirtual(t0)
	_ = v.SleepUntil(context.Background(), t0.Add(time.Hour))
	deadline := time.Now().Add(time.Minute)
	for {
		v.mu.Lock()
		driving := v.driving
		v.mu.Unlock()
		if !driving {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the driver still runs with nothing to release")
		}
		time.Sleep(time.Millisecond)
	}
	if v.Now().Sub(t0) != time.Hour {
		t.Errorf("now %v", v.Now().Sub(t0))
	}
}

func TestGoroutineStates(t *testing.T) {
	dump := strings.Join([]string{
		"goroutine 9 [running]:\nmain.drive()\n\t/x.go:1",
		"goroutine 1 [chan receive, 3 minutes]:\nmain.main()\n\t/x.go:2",
		"goroutine 7 [select, locked to thread]:\nruntime.ensureSigM.func1()",
		"goroutine 6 [syscall]:\nos/signal.signal_recv()\n\t/sigqueue.go:152\nos/signal.loop()",
		"goroutine 12 [sync.Cond.Wait]:\nsync.runtime_notifyListWait()",
		"goroutine 13 [IO wait]:\ninternal/poll.runtime_pollWait()",
		"goroutine 14 gp=0xc000007c00 m=nil [sleep]:\ntime.Sleep(0x3b9aca00)",
		"goroutine 15 [semacquire]:\nsync.runtime_Semacquire(0xc0000a)\n\t/sema.go:71",
		"goroutine 16 [semacquire]:\ninternal/poll.runtime_Semacquire(0xc0000b)\n\t/sema.go:76",
		"goroutine 19 [coroutine]:\niter.Pull[...].func1.1()",
		"goroutine 40 [chan receive (leaked)]:\nmain.lost()",
		"goroutine 41 [select (scan), 2 minutes]:\nmain.loop()",
		"goroutine 42 [chan receive (leaked) (scan)]:\nmain.lost()",
		"goroutine 43 [sync.WaitGroup.Wait (durable), synctest bubble 3]:\nmain.wait()",
		"goroutine 44 [sync.Mutex.Lock (durable)]:\nmain.lock()",
		"goroutine 45 [synctest.Wait]:\ntesting/synctest.Wait()",
		"goroutine 17 [syscall]:\nsyscall.Syscall6(0xf7, 0x3)\ninternal/syscall/unix.Waitid(0x0?)\nos.(*Process).pidfdWait.func1(...)\nos.ignoringEINTR(...)\nos.(*Process).pidfdWait(0xc0001)\nos.(*Process).wait(0x0?)",
		"goroutine 18 [syscall]:\nsyscall.Syscall6(0x3d, 0x1)\nsyscall.wait4(0x1)\nsyscall.Wait4(0x1)\nos.(*Process).pidWait.func1(...)\nos.(*Process).pidWait(0xc0002)",
	}, "\n\n") + "\n"
	if !allBlocked([]byte(dump)) {
		t.Error("blocked goroutines read as busy")
	}
	for _, busy := range []string{
		"goroutine 20 [runnable]:\nmain.work()",
		"goroutine 21 [running]:\nmain.work()",
		"goroutine 22 [syscall]:\nsyscall.Syscall()\nos.(*File).Read()",
		"goroutine 23 [GC assist wait]:\nmain.alloc()",
		"goroutine 24 [preempted]:\nmain.work()",
		"goroutine 26 [runnable (scan)]:\nmain.work()",
		// A GC starting while the world is stopped for the dump.
		"goroutine 25 [semacquire]:\nstrconv.Itoa(...)\nmain.work()",
	} {
		if allBlocked([]byte(dump + "\n" + busy + "\n")) {
			t.Errorf("%q read as blocked", strings.SplitN(busy, "\n", 2)[0])
		}
	}
	other := "goroutine 30 [runnable]:\n" + string(driveFrame) + "0xc000010000)\n\t/clock/virtual.go:1"
	if !allBlocked([]byte(dump + "\n" + other + "\n")) {
		t.Error("another virtual clock's driver holds this one up")
	}
}

func TestHold(t *testing.T) {
	Hold(context.Background())() // Real: nothing to hold
	v := NewVirtual(t0)
	ctx := NewContext(context.Background(), v)
	release := Hold(ctx)
	tctx, cancel := WithTimeoutCause(ctx, v, time.Millisecond, nil)
	defer cancel()
	select {
	case <-tctx.Done():
		t.Fatal("the clock moved while held")
	case <-time.After(20 * time.Millisecond):
	}
	release()
	<-tctx.Done()
	if tctx.Err() != context.DeadlineExceeded || context.Cause(tctx) != context.DeadlineExceeded {
		t.Errorf("err %v cause %v", tctx.Err(), context.Cause(tctx))
	}
}

// A goroutine waiting for a live child process (os/exec's Wait blocks in
// a system call for the child's life) waits for an outside event: the
// clock goes on meanwhile.
func TestVirtualChildWaitIsIdle(t *testing.T) {
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep program:", err)
	}
	waited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(waited) }()
	defer func() { _ = cmd.Process.Kill(); <-waited }()
	v := NewVirtual(t0)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = v.SleepUntil(context.Background(), t0.Add(10*time.Second))
	}()
	guard(t, done)
	if got := v.Now().Sub(t0); got != 10*time.Second {
		t.Errorf("now %v, want 10s", got)
	}
}

// A suspended iter.Pull (its goroutine waits in state "coroutine" between
// two calls of next) does not hold the clock up.
func TestVirtualPullIsIdle(t *testing.T) {
	next, stop := iter.Pull(func(yield func(int) bool) {
		for i := 0; yield(i); i++ {
		}
	})
	defer stop()
	next()
	v := NewVirtual(t0)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = v.SleepUntil(context.Background(), t0.Add(10*time.Second))
	}()
	guard(t, done)
	if got := v.Now().Sub(t0); got != 10*time.Second {
		t.Errorf("now %v, want 10s", got)
	}
}

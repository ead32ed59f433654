package procpool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/flowrun/flow/protocol"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/stagehost"
)

// BenchmarkWorkerProcess measures the worker side alone: one worker process
// running a trivial compute step, fed frames of pre-encoded items as fast as
// the pipe takes them, its results read back and counted. It reports the
// worker's own CPU time per item (worker-ns/item), which the parent's work
// does not blur; frame is the items per Items frame (the parent sends
// smaller frames than the largest when it is the slower side).
func BenchmarkWorkerProcess(b *testing.B) {
	for _, per := range []int{256, 2048} {
		b.Run(fmt.Sprintf("frame=%d", per), func(b *testing.B) { benchWorker(b, per) })
	}
}

func benchWorker(b *testing.B, per int) {
	text := `version: 1
stages:
  - name: src
    source: {range: {from: 1, to: 3}}
  - name: work
    step: compute
    mode: process
    with: {value: "${ item * 2 }"}
`
	file := filepath.Join(b.TempDir(), "pipeline.yaml")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		b.Fatal(err)
	}
	p, err := spec.Parse(file, []byte(text), spec.Options{}, testRegistry())
	if err != nil {
		b.Fatal(err)
	}
	// One of as many workers as CPUs, as with workers: auto.
	hello, err := stagehost.HelloFor(p, p.Stages[1], runtime.NumCPU())
	if err != nil {
		b.Fatal(err)
	}
	toR, toW := testPipe(b)
	fromR, fromW := testPipe(b)
	page, pageFile, err := newRunningPage()
	if err != nil {
		b.Fatal(err)
	}
	defer page.unmap()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), testMark, RoleEnv+"=worker")
	cmd.ExtraFiles = []*os.File{toR, fromW, pageFile}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	toR.Close()
	fromW.Close()
	pageFile.Close()
	defer fromR.Close()
	w, r := protocol.NewWriter(toW), protocol.NewReader(fromR)
	r.Reuse()
	if err := w.Write(&hello); err != nil {
		b.Fatal(err)
	}
	if m, err := r.Read(); err != nil {
		b.Fatal(err)
	} else if rd, ok := m.(*protocol.Ready); !ok || rd.Err != nil {
		b.Fatalf("worker answered %#v", m)
	}
	w.Compact()
	// The same frame over and over: the worker does not care that ids
	// repeat, and the feeder then costs next to nothing.
	items := make(protocol.Items, per)
	for i := range items {
		items[i] = protocol.Item{ID: uint64(i + 1), Index: int64(i), Value: int64(i)}
	}
	frame, err := w.AppendFrame(nil, &items)
	if err != nil {
		b.Fatal(err)
	}
	last, err := w.AppendFrame(nil, ptr(items[:b.N%per]))
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	fed := make(chan error, 1)
	// Two frames in flight, as the parent keeps the worker's queue short.
	credit := make(chan struct{}, 2)
	credit <- struct{}{}
	credit <- struct{}{}
	go func() {
		defer toW.Close()
		for range b.N / per {
			<-credit
			if err := w.WriteFrame(frame); err != nil {
				fed <- err
				return
			}
		}
		if b.N%per != 0 {
			if err := w.WriteFrame(last); err != nil {
				fed <- err
				return
			}
		}
		fed <- nil
	}()
	got := 0
	for {
		m, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
		if res, ok := m.(*protocol.Results); ok {
			for _, x := range res.Results {
				if x.Err != nil {
					b.Fatalf("item %d: %s", x.ID, x.Err.Message)
				}
			}
			for range (got+len(res.Results))/per - got/per {
				credit <- struct{}{}
			}
			got += len(res.Results)
		}
	}
	if err := <-fed; err != nil {
		b.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if got != b.N {
		b.Fatalf("%d results for %d items", got, b.N)
	}
	cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "worker-ns/item")
}

func ptr[T any](v T) *T { return &v }

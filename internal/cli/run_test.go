package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
)

// These tests drive the CLI in-process with a stand-in engine, so that the
// CLI's own duties (exit codes, report writing, signals) are tested whatever
// the engine does. The end-to-end tests in cmd/flow run the real engine.

type numsConfig struct {
	N int `yaml:"n" desc:"How many numbers."`
}

type nopSource struct{}

func (nopSource) Items(ctx context.Context, emit func(any) error) error { return nil }

func testRegistry() *steps.Registry {
	r := steps.NewRegistry()
	steps.RegisterSource(r, steps.Kind{Name: "nums", Summary: "numbers"},
		func(c *numsConfig, env *steps.Env) (steps.Source, error) { return nopSource{}, nil })
	return r
}

type testApp struct {
	*app
	stdout, stderr bytes.Buffer
	signals        chan chan<- os.Signal
	exits          chan int
}

func newTestApp(t *testing.T) *testApp {
	ta := &testApp{signals: make(chan chan<- os.Signal, 1), exits: make(chan int, 2)}
	ta.app = &app{
		stdin:      strings.NewReader(""),
		stdout:     &ta.stdout,
		stderr:     &ta.stderr,
		reg:        testRegistry(),
		notify:     func(c chan<- os.Signal, _ ...os.Signal) { ta.signals <- c },
		stopNotify: func(chan<- os.Signal) {},
		exit:       func(code int) { ta.exits <- code },
	}
	return ta
}

// fakeEngine replaces the engine for one test.
func fakeEngine(t *testing.T, fn func(ctx context.Context, p *spec.Pipeline, o engine.Options) (*report.Report, error)) {
	old := runEngine
	runEngine = fn
	t.Cleanup(func() { runEngine = old })
}

func writePipeline(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "p.yaml")
	body := "version: 1\nname: sig\nvars: {n: 3}\nstages:\n  - name: src\n    source: {nums: {n: 3}}\n"
	if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

func interruptedReport() *report.Report {
	// What the engine returns when its context is cancelled from outside.
	return &report.Report{Pipeline: "sig", Status: "interrupted", ExitCode: 130, Reason: "interrupted",
		Stages: []*report.Stage{{Name: "src", In: 5, Succeeded: 2, Cancelled: 3}}}
}

func readReport(t *testing.T, path string) report.Report {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("report not written: %v", err)
	}
	var r report.Report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, b)
	}
	return r
}

func TestSignalCancelsRunAndWritesReport(t *testing.T) {
	for _, tc := range []struct {
		sig  os.Signal
		code int
	}{{os.Interrupt, ExitSIGINT}, {syscall.SIGTERM, ExitSIGTERM}} {
		t.Run(signalName(tc.sig), func(t *testing.T) {
			ta := newTestApp(t)
			fakeEngine(t, func(ctx context.Context, p *spec.Pipeline, o engine.Options) (*report.Report, error) {
				<-ctx.Done() // a long run, stopped only by the signal
				return interruptedReport(), ctx.Err()
			})
			go func() { (<-ta.signals) <- tc.sig }()
			out := filepath.Join(t.TempDir(), "report.json")
			code := ta.run([]string{"run", writePipeline(t), "--report", out})
			if code != tc.code {
				t.Fatalf("exit code %d, want %d; stderr:\n%s", code, tc.code, ta.stderr.String())
			}
			r := readReport(t, out)
			if r.ExitCode != tc.code || r.Status != "interrupted" {
				t.Errorf("report exit_code %d status %q, want %d interrupted", r.ExitCode, r.Status, tc.code)
			}
			if want := "stopped by " + signalName(tc.sig); r.Reason != want {
				t.Errorf("report reason %q, want %q", r.Reason, want)
			}
			if len(r.Stages) != 1 || r.Stages[0].Cancelled != 3 {
				t.Errorf("report stages not kept from the engine: %+v", r.Stages)
			}
			if !strings.Contains(ta.stderr.String(), signalName(tc.sig)+": stopping") {
				t.Errorf("stderr does not say the run is stopping:\n%s", ta.stderr.String())
			}
			if !strings.Contains(ta.stderr.String(), "flow: sig interrupted in ") {
				t.Errorf("no closing summary:\n%s", ta.stderr.String())
			}
			select {
			case c := <-ta.exits:
				t.Errorf("one signal must not exit at once, got exit(%d)", c)
			default:
			}
		})
	}
}

func TestSecondSignalExitsAtOnce(t *testing.T) {
	ta := newTestApp(t)
	release := make(chan struct{})
	fakeEngine(t, func(ctx context.Context, p *spec.Pipeline, o engine.Options) (*report.Report, error) {
		<-release // an engine that does not stop when asked
		return interruptedReport(), ctx.Err()
	})
	go func() {
		c := <-ta.signals
		c <- os.Interrupt
		c <- syscall.SIGTERM
	}()
	done := make(chan int)
	go func() { done <- ta.run([]string{"run", writePipeline(t)}) }()
	if got := <-ta.exits; got != ExitSIGTERM {
		t.Errorf("second signal (SIGTERM) exit code %d, want %d", got, ExitSIGTERM)
	}
	close(release)
	<-done
}

func TestRunExitCodes(t *testing.T) {
	for _, tc := range []struct {
		name string
		rep  *report.Report
		err  error
		want int
	}{
		{"succeeded", &report.Report{Status: "succeeded", ExitCode: 0}, nil, ExitOK},
		{"items failed", &report.Report{Status: "failed", ExitCode: 1, Reason: "2 items failed"}, nil, ExitFailed},
		{"engine error without report", nil, os.ErrNotExist, ExitFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ta := newTestApp(t)
			fakeEngine(t, func(ctx context.Context, p *spec.Pipeline, o engine.Options) (*report.Report, error) {
				if p.Name != "sig" || o.Registry == nil || o.Stdout == nil {
					t.Errorf("engine got pipeline %q, options %+v", p.Name, o)
				}
				return tc.rep, tc.err
			})
			out := filepath.Join(t.TempDir(), "r.json")
			if code := ta.run([]string{"run", writePipeline(t), "--report", out}); code != tc.want {
				t.Fatalf("exit code %d, want %d; stderr:\n%s", code, tc.want, ta.stderr.String())
			}
			if tc.rep != nil {
				if r := readReport(t, out); r.ExitCode != tc.want {
					t.Errorf("report exit_code %d, want %d", r.ExitCode, tc.want)
				}
			}
		})
	}
}

func TestRunUsageErrors(t *testing.T) {
	fakeEngine(t, func(context.Context, *spec.Pipeline, engine.Options) (*report.Report, error) {
		t.Error("the engine must not run on a usage error")
		return nil, nil
	})
	file := writePipeline(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run"}, "missing FILE"},
		{[]string{"run", file, "--set", "novalue"}, "write NAME=VALUE"},
		{[]string{"run", file, "--set", "nope=1"}, `declares no variable "nope"`},
		{[]string{"run", file, "--progress", "fancy"}, "use one of auto, bar, plain, none"},
		{[]string{"run", file, "--frobnicate"}, "unknown flag: --frobnicate"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
	} {
		ta := newTestApp(t)
		if code := ta.run(tc.args); code != ExitInvalid {
			t.Errorf("%v: exit code %d, want 2", tc.args, code)
		}
		if !strings.Contains(ta.stderr.String(), tc.want) {
			t.Errorf("%v: stderr lacks %q:\n%s", tc.args, tc.want, ta.stderr.String())
		}
	}
}

func TestSummary(t *testing.T) {
	r := &report.Report{Pipeline: "demo", Status: "failed", Reason: "stage b: 1 item failed",
		Duration: report.Duration(1234 * time.Millisecond),
		Stages: []*report.Stage{
			{Name: "a", Succeeded: 3},
			{Name: "b", Succeeded: 2, Failed: 1, TimedOut: 1, Retries: 2},
			{Name: "c"},
		}}
	want := "flow: demo failed in 1.23s (stage b: 1 item failed): a 3 ok | b 2 ok, 1 failed, 1 timed out, 2 retries | c 0 items"
	if got := summary(r); got != want {
		t.Errorf("summary:\n got %s\nwant %s", got, want)
	}
}

// A failed run's write: sink wrote nothing (it keeps the old file), so its
// items are "not written"; print wrote them as they came, so they are "ok".
func TestSummarySinksOfAFailedRun(t *testing.T) {
	r := &report.Report{Pipeline: "demo", Status: "failed", Reason: "stage a: 1 item failed",
		Duration: report.Duration(time.Second),
		Stages: []*report.Stage{
			{Name: "a", Role: "step", Kind: "compute", Succeeded: 3, Failed: 1},
			{Name: "file", Role: "sink", Kind: "write", Succeeded: 3},
			{Name: "screen", Role: "sink", Kind: "print", Succeeded: 3},
		}}
	want := "flow: demo failed in 1s (stage a: 1 item failed): a 3 ok, 1 failed | file 3 not written | screen 3 ok"
	if got := summary(r); got != want {
		t.Errorf("summary:\n got %s\nwant %s", got, want)
	}
	r.Status, r.Reason = "succeeded", ""
	if got := summary(r); !strings.Contains(got, "file 3 ok") {
		t.Errorf("a succeeded run's write sink: %s", got)
	}
}

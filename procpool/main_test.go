package procpool

import (
	"context"
	"errors"
	"fmt"
	"github.com/flowrun/flow/stagehost"
	"math"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/flowrun/flow/protocol"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/steps/compute"
	"github.com/flowrun/flow/steps/sink"
	"github.com/flowrun/flow/steps/source"
	"github.com/flowrun/flow/tmpl"
)

// childEnv makes the test binary a plain child program (started by a step
// in a worker) instead of a test run or a worker.
const childEnv = "FLOW_PROCPOOL_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "v1worker" {
		os.Exit(v1Worker())
	}
	if IsWorker() {
		os.Exit(WorkerMain(testRegistry()))
	}
	switch os.Getenv(childEnv) {
	case "hog":
		hog()
	case "sleep":
		time.Sleep(time.Hour)
		os.Exit(0)
	case "parent":
		os.Exit(parentMain())
	}
	// Close must leave no goroutine behind either.
	goleak.VerifyTestMain(m)
}

// testRegistry is the registry of both the test process and its workers:
// the real sources and compute, and a "test" step whose item says what to
// do, so that one pool can be made to misbehave in every way.
func testRegistry() *steps.Registry {
	r := steps.NewRegistry()
	source.Register(r)
	compute.Register(r)
	sink.Register(r)
	steps.RegisterStep(r, steps.Kind{Name: "test", Summary: "test behaviours"}, newTestStep)
	return r
}

type testConfig struct {
	Tag       *tmpl.T `yaml:"tag"`
	FailBuild bool    `yaml:"fail_build"`
	Plain     bool    `yaml:"plain"`
}

func newTestStep(cfg *testConfig, env *steps.Env) (steps.Step, error) {
	if cfg.FailBuild {
		return nil, errors.New("fail_build is set")
	}
	if cfg.Plain {
		return steps.Func(func(_ context.Context, in steps.Input) (any, error) { return in.Item, nil }), nil
	}
	return steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
		return testDo(ctx, cfg, env, in)
	}), nil
}

// testDo interprets an item "COMMAND" or "COMMAND:ARG".
func testDo(ctx context.Context, cfg *testConfig, env *steps.Env, in steps.Input) (any, error) {
	s, _ := in.Item.(string)
	cmd, arg, _ := strings.Cut(s, ":")
	switch cmd {
	case "echo":
		out := map[string]any{"item": in.Item, "index": in.Index, "pid": int64(os.Getpid())}
		if cfg.Tag != nil {
			tag, err := cfg.Tag.Eval(env.Scope(ctx, in))
			if err != nil {
				return nil, err
			}
			out["tag"] = tag
		}
		return out, nil
	case "sleep":
		d, _ := time.ParseDuration(arg)
		select {
		case <-time.After(d):
			return int64(os.Getpid()), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	case "gate": // wait until the file exists
		for {
			if _, err := os.Stat(arg); err == nil {
				return in.Item, nil
			}
			select {
			case <-time.After(time.Millisecond):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	case "pidfile": // say where it runs, then wait to be killed
		if err := os.WriteFile(arg, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			return nil, err
		}
		select {}
	case "panic":
		panic("boom")
	case "gopanic": // a panic no recover can catch
		go panic("boom in a goroutine")
		select {}
	case "exit":
		n, _ := strconv.Atoi(arg)
		os.Exit(n)
	case "spin": // ignores its context
		for {
		}
	case "spawn": // a grandchild in its own process group, as exec makes
		c := exec.Command(os.Args[0])
		c.Env = append(os.Environ(), childEnv+"=sleep")
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := c.Start(); err != nil {
			return nil, err
		}
		if arg != "" {
			if err := os.WriteFile(arg, []byte(strconv.Itoa(c.Process.Pid)), 0o644); err != nil {
				return nil, err
			}
		}
		for {
		}
	case "hog":
		hog()
	case "childhog":
		c := exec.Command(os.Args[0])
		c.Env = append(os.Environ(), childEnv+"=hog")
		return nil, c.Run()
	case "fail":
		return nil, &steps.Error{Err: errors.New("rate limited"), Class: "http_429", RetryAfter: 1500 * time.Millisecond}
	case "permanent":
		return nil, steps.Permanent(steps.Errorf("decode", "bad input %q", arg))
	case "nan":
		return math.NaN(), nil
	case "print":
		fmt.Println("printed to stdout:", arg)
		fmt.Fprintln(os.Stderr, "printed to stderr:", arg)
		return arg, nil
	case "procs": // the worker's GOMAXPROCS, where it came from, what a program it starts sees
		initial, _ := os.ReadFile("/proc/self/environ")
		return map[string]any{"procs": int64(runtime.GOMAXPROCS(0)), "seen": os.Getenv("GOMAXPROCS") + "," + os.Getenv(procsEnv),
			"initial": strings.Contains("\x00"+string(initial), "\x00GOMAXPROCS=")}, nil
	case "types":
		return map[string]any{"int": int64(3), "float": 3.0, "list": []any{1.5, int64(-2)}, "nil": nil, "in": in.Item}, nil
	}
	return in.Item, nil
}

// hog allocates and touches memory until killed.
func hog() {
	var keep [][]byte
	for {
		b := make([]byte, 8<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		keep = append(keep, b)
		time.Sleep(5 * time.Millisecond)
	}
}

// parentMain is a flow-like parent whose death TestParentDeathStopsWorkers
// arranges: it runs one item that writes its worker's pid and blocks.
func parentMain() int {
	file := os.Getenv("FLOW_PROCPOOL_TEST_PIPELINE")
	text, err := os.ReadFile(file)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	p, err := spec.Parse(file, text, spec.Options{}, testRegistry())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	hello, err := stagehost.HelloFor(p, p.Stages[1], 1)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	pool, err := New(hello, Config{Workers: 1, Env: []string{os.Getenv("FLOW_PROCPOOL_TEST_WORKER_MARK")}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	_, err = pool.Do(context.Background(), steps.Input{Item: "pidfile:" + os.Getenv("FLOW_PROCPOOL_TEST_PIDFILE")}, nil)
	fmt.Fprintln(os.Stderr, "the blocking item returned:", err)
	return 1
}

// v1Worker is a worker of a flow binary that speaks protocol version 1: it
// accepts the hello and answers ready with its own version.
func v1Worker() int {
	r := protocol.NewReader(os.NewFile(fdIn, "in"))
	if _, err := r.Read(); err != nil {
		return 2
	}
	if protocol.NewWriter(os.NewFile(fdOut, "out")).Write(&protocol.Ready{Version: 1, PID: os.Getpid()}) != nil {
		return 2
	}
	for {
		if _, err := r.Read(); err != nil {
			return 0
		}
	}
}

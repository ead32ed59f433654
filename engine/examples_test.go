package engine

import (
	"context"
	"strings"
	"testing"

	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps/all"
)

// runExample runs a pipeline of examples/ with the real kinds.
func runExample(t *testing.T, file string) (string, *report.Report) {
	t.Helper()
	r := all.Registry()
	p, err := spec.Load("../examples/"+file, spec.Options{}, r)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	var out, errOut strings.Builder
	rep, err := Run(context.Background(), p, Options{Registry: r, Stdout: &out, Stderr: &errOut})
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	checkReport(t, rep)
	return out.String(), rep
}

// The guide's map(timeout=) example with the real compute step: 10, 20 and
// 30 are printed, then the run stops with a timeout and exit code 1.
func TestExampleMapTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("takes a second")
	}
	out, rep := runExample(t, "map_timeout.yaml")
	if out != "10\n20\n30\n" {
		t.Errorf("printed %q, want 10 20 30", out)
	}
	f := stageOf(t, rep, "fetch")
	if rep.Status != "timed_out" || rep.ExitCode != 1 || f.Succeeded != 3 || f.TimedOut != 2 || f.Cancelled != 2 {
		t.Errorf("status %s exit %d, fetch %+v", rep.Status, rep.ExitCode, *f)
	}
	if !strings.Contains(rep.Reason, `stage "fetch" did not finish within its deadline of 1s: 2 items not done were cancelled`) {
		t.Errorf("reason %q", rep.Reason)
	}
}

func TestExampleWaitFirst(t *testing.T) {
	if testing.Short() {
		t.Skip("takes a second")
	}
	out, rep := runExample(t, "wait_first.yaml")
	if rep.Status != "succeeded" || !strings.HasPrefix(out, "delta finished") {
		t.Errorf("status %s, printed %q", rep.Status, out)
	}
}

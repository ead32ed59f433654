package stagehost_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/stagehost"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/steps/all"
)

const pipeline = `version: 1
vars: {add: 1}
stages:
  - {name: src, source: {range: {from: 1, to: 3}}}
  - {name: calc, step: compute, mode: process, with: {value: "${ item + vars.add }"}}
`

// A worker builds the step from the text that was validated, with the
// effective variables: a file edited during the run changes nothing.
func TestHelloCarriesTheValidatedText(t *testing.T) {
	reg := all.Registry()
	file := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(file, []byte(pipeline), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := spec.Load(file, spec.Options{Set: map[string]string{"add": "10"}}, reg)
	if err != nil {
		t.Fatal(err)
	}
	// The file changes under the run: the step would now run a shell.
	evil := strings.Replace(pipeline, `step: compute, mode: process, with: {value: "${ item + vars.add }"}`, `step: exec, mode: process, with: {cmd: [touch, pwned]}`, 1)
	if err := os.WriteFile(file, []byte(evil), 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := stagehost.HelloFor(p, p.Stages[1], 2)
	if err != nil {
		t.Fatal(err)
	}
	if h.Source != pipeline || h.Stage != "calc" || h.Workers != 2 {
		t.Fatalf("hello %+v", h)
	}
	b, err := stagehost.Build(&h, reg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	v, err := b.Step.Do(context.Background(), steps.Input{Item: int64(5)})
	if err != nil || v != int64(15) {
		t.Fatalf("the worker's step gave %v, %v; want 15 (the --set value, the validated text)", v, err)
	}
}

// A barrier cannot run in a worker; the message says what to do.
func TestBuildRefusesABarrier(t *testing.T) {
	reg := all.Registry()
	src := "version: 1\nstages:\n  - {name: src, source: {items: [1]}}\n  - {name: s, step: sort, with: {by: \"${ item }\"}}\n"
	p, err := spec.Parse("p.yaml", []byte(src), spec.Options{}, reg)
	if err != nil {
		t.Fatal(err)
	}
	h, err := stagehost.HelloFor(p, p.Stages[1], 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stagehost.Build(&h, reg, io.Discard); err == nil || !strings.Contains(err.Error(), "runs in the parent") {
		t.Fatalf("got %v", err)
	}
}

package steps

import (
	"context"
	"errors"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

type noOpts struct{}

type closingStep struct{ closed *int }

func (s *closingStep) Do(context.Context, Input) (any, error) { return nil, nil }
func (s *closingStep) Close() error                           { *s.closed++; return nil }

type bar struct{}

func (bar) Add(Input) error                                { return nil }
func (bar) Flush(context.Context, func(Input) error) error { return nil }
func (bar) Do(context.Context, Input) (any, error)         { return nil, nil }
func (bar) Items(context.Context, func(any) error) error   { return nil }
func (bar) Write(context.Context, Record) error            { return nil }
func (bar) Close(context.Context, error) error             { return nil }
func scalar() *yaml.Node                                   { return nil }
func newBar(*noOpts, *Env) (Barrier, error)                { return bar{}, nil }
func newNil(*noOpts, *Env) (*closingStep, error)           { return nil, errors.New("no model file") }
func newSrc(*noOpts, *Env) (Source, error)                 { return bar{}, nil }
func newSink(*noOpts, *Env) (Sink, error)                  { return bar{}, nil }
func newStepCounting(n *int) func(*noOpts, *Env) (*closingStep, error) {
	return func(*noOpts, *Env) (*closingStep, error) { return &closingStep{n}, errors.New("half built") }
}

// A kind builds the value of its role, and only that: the engine never
// recovers a role by type switch.
func TestTypedRegistration(t *testing.T) {
	r := NewRegistry()
	RegisterBarrier(r, Kind{Name: "top"}, newBar)
	RegisterSource(r, Kind{Name: "src"}, newSrc)
	RegisterSink(r, Kind{Name: "out"}, newSink)
	for name, want := range map[string]string{"top": "barrier", "src": "source", "out": "sink"} {
		k, _ := r.Lookup(name)
		b, err := k.Build(scalar(), nil, &Env{})
		if err != nil {
			t.Fatal(err)
		}
		got := map[bool]string{b.Barrier != nil: "barrier", b.Source != nil: "source", b.Sink != nil: "sink"}[true]
		n := 0
		for _, set := range []bool{b.Source != nil, b.Step != nil, b.Barrier != nil, b.Sink != nil} {
			if set {
				n++
			}
		}
		if got != want || n != 1 {
			t.Errorf("%s built %+v, want only a %s", name, b, want)
		}
	}
	if k, _ := r.Lookup("top"); !k.Barrier || k.Role != RoleStep {
		t.Errorf("a barrier is a step kind marked Barrier: %+v", k)
	}
}

// Close runs even when the constructor failed but returned what it had
// built; a typed nil is not closed.
func TestFailedBuildClosesWhatWasBuilt(t *testing.T) {
	r := NewRegistry()
	closed := 0
	RegisterStep(r, Kind{Name: "half"}, newStepCounting(&closed))
	RegisterStep(r, Kind{Name: "none"}, newNil)
	k, _ := r.Lookup("half")
	if _, err := k.Build(nil, nil, &Env{}); err == nil || closed != 1 {
		t.Errorf("err %v, closed %d times, want an error and one close", err, closed)
	}
	k, _ = r.Lookup("none")
	if _, err := k.Build(nil, nil, &Env{}); err == nil || !strings.Contains(err.Error(), "no model file") {
		t.Errorf("err %v", err)
	}
}

func TestRegisterRefusesAWrongRoleAndDuplicates(t *testing.T) {
	for name, f := range map[string]func(r *Registry){
		"role": func(r *Registry) { RegisterSource(r, Kind{Name: "x", Role: RoleSink}, newSrc) },
		"dup": func(r *Registry) {
			RegisterSource(r, Kind{Name: "x"}, newSrc)
			RegisterSource(r, Kind{Name: "x"}, newSrc)
		},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f(NewRegistry())
		}()
	}
}

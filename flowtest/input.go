package flowtest

import (
	"context"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/steps/all"
)

// inputKind is the source a case's input items come from. It is a kind of
// its own, not the items source, so that strings of a fixture are data:
// "${ x }" in an input item is not evaluated.
const inputKind = "flowtest-input"

type inputOptions struct {
	Items []any `yaml:"items"`
}

type inputSource struct{ items []any }

func (s *inputSource) Items(ctx context.Context, emit func(any) error) error {
	for _, it := range s.items {
		if err := emit(it); err != nil {
			return err
		}
	}
	return nil
}

func (s *inputSource) Count() (int64, bool) { return int64(len(s.items)), true }

// NewRegistry is every built-in kind and the source of a case's input.
func NewRegistry() *steps.Registry {
	r := all.Registry()
	steps.RegisterSource(r, steps.Kind{
		Name:    inputKind,
		Summary: "The input items of a flow test case.",
	}, func(cfg *inputOptions, _ *steps.Env) (*inputSource, error) {
		return &inputSource{items: cfg.Items}, nil
	})
	return r
}

// inputStage is the source stage that feeds items to a case's stages, named
// so that no stage of the pipeline has its name.
func inputStage(items *yaml.Node, stages []*spec.Stage) *spec.Stage {
	name := "input"
	for taken := true; taken; {
		taken = false
		for _, s := range stages {
			if s.Name == name {
				name, taken = "test-"+name, true
			}
		}
	}
	opts := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Content: []*yaml.Node{
		{Kind: yaml.ScalarNode, Tag: "!!str", Value: "items"}, items}}
	return &spec.Stage{Name: name, Role: steps.RoleSource, Kind: inputKind, Options: opts, Node: items,
		Mode: spec.ModeThread, Order: spec.OrderInput, OnError: spec.OnErrorFail}
}

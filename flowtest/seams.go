package flowtest

import (
	"fmt"
	"time"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/spec"
)

// useClock puts the case's clock in opts and returns the run's start on it.
func useClock(c *Case, opts *engine.Options) time.Time {
	return time.Now()
}

// mockable checks that a case can run with its mocks.
func mockable(s *Suite, c *Case, p *spec.Pipeline) *Failure {
	if c.Mocks != nil {
		return &Failure{File: s.File, Pos: conf.KeyPos(c.Node, "mocks"), Msg: fmt.Sprintf("mocks: not available yet")}
	}
	return nil
}

// useMocks installs the case's mocks in opts.
func useMocks(s *Suite, c *Case, opts *engine.Options) (undo func(), err error) {
	return func() {}, nil
}

package flowtest

import (
	"fmt"
	"time"

	"github.com/flowrun/flow/clock"
	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/flowtest/mock"
	"github.com/flowrun/flow/spec"
)

// virtualStart is when every run on the virtual clock starts: a fixed
// instant, so that times in reports and results are the same on every run.
var virtualStart = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// useClock puts the case's clock in opts and returns the run's start on it.
func useClock(c *Case, opts *engine.Options) time.Time {
	if c.Clock == "real" {
		return time.Now()
	}
	opts.Clock = clock.NewVirtual(virtualStart)
	return virtualStart
}

// useMocks installs the case's mocks as the run's outside world. Without a
// mocks: section the world is empty: any request, program run or file
// read fails, so a test never reaches the real one.
func useMocks(s *Suite, c *Case, p *spec.Pipeline, opts *engine.Options) (*mock.Recorder, *Failure) {
	set := c.Mocks
	if set == nil {
		set = &mock.Set{}
	}
	rec, err := set.Install(s.Dir, p.Dir)
	if err != nil {
		f := &Failure{File: s.File, Pos: conf.KeyPos(c.Node, "mocks"), Msg: fmt.Sprintf("mocks: %v", err)}
		if ds, ok := err.(conf.Diags); ok && len(ds) > 0 && !ds[0].Pos.IsZero() {
			f.Pos, f.Msg = ds[0].Pos, "mocks: "+ds[0].Msg
		}
		if f.Pos.IsZero() {
			f.Pos = conf.NodePos(c.Node)
		}
		return nil, f
	}
	opts.Outside = rec
	return rec, nil
}

package engine

import (
	"fmt"

	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
)

// The policies of a stage: what a failure does to the run (errorPolicy,
// shared by step and barrier stages) and when a stage is done
// (completion). A new policy is a type here and a call where step and
// barrier stages decide an item's fate (collect.go, barrier.go).

// errorPolicy is a stage's on_error and max_errors.
type errorPolicy struct {
	red       *redactor
	stage     string
	onError   spec.OnError
	maxErrors int
	failed    int
}

func newErrorPolicy(s *spec.Stage, red *redactor) errorPolicy {
	return errorPolicy{red: red, stage: s.Name, onError: s.OnError, maxErrors: s.MaxErrors}
}

// fail counts one failed item and returns the stop it calls for, if any:
// the first failure under on_error: fail, or the one past max_errors.
func (p *errorPolicy) fail(in steps.Input, err error) *runStop {
	p.failed++
	switch {
	case p.onError == spec.OnErrorFail && p.failed == 1:
		return &runStop{status: report.StatusFailed, msg: fmt.Sprintf("stage %q failed on item %d (%s): %v (on_error: fail stops the run; use on_error: skip or keep to go on)",
			p.stage, in.Index, short(p.red, in.Item), err)}
	case p.onError != spec.OnErrorFail && p.maxErrors > 0 && p.failed == p.maxErrors+1:
		return &runStop{status: report.StatusFailed, msg: fmt.Sprintf("stage %q: %d items failed, more than max_errors: %d; the last: item %d (%s): %v",
			p.stage, p.failed, p.maxErrors, in.Index, short(p.red, in.Item), err)}
	}
	return nil
}

// accountFailure counts and records a failed item by the stage's
// on_error: skipped (dropped), kept (passed on carrying its error) or
// failed. timedOut marks a failure by the per-attempt timeout.
func (s *stage) accountFailure(onError spec.OnError, in steps.Input, err error, attempts int, timedOut bool, t *tries, em *emitter) {
	if timedOut {
		s.rep.TimedOut++
	}
	switch onError {
	case spec.OnErrorSkip:
		s.rep.Skipped++
		s.failure(in, err, attempts, report.Skipped)
		s.event(report.Skipped, in, nil, err, t)
	case spec.OnErrorKeep:
		s.rep.Failed++
		s.failure(in, err, attempts, report.Kept)
		s.event(report.Failed, in, nil, err, t)
		kept := map[string]any{"error": s.r.red.String(err.Error()), "class": steps.ClassOf(err), "input": in.Item}
		em.add(steps.Record{Index: in.Index, Item: kept, Err: err}, in, false, nil)
	default:
		s.rep.Failed++
		outcome := report.Failed
		if timedOut {
			outcome = report.TimedOut
		}
		s.failure(in, err, attempts, outcome)
		s.event(report.Failed, in, nil, err, t)
	}
}

// completion is `complete:`: all items, or the first N successes, after
// which the stage stops taking work (like wait(FIRST_COMPLETED)).
type completion struct {
	first     int // 0: all
	successes int
	met       bool
}

// success counts one success. late is true for a success that came after
// the policy was met: it is cancelled, not handed on. met is true for the
// success that meets it.
func (c *completion) success() (late, met bool) {
	if c.met {
		return true, false
	}
	c.successes++
	if c.first > 0 && c.successes >= c.first {
		c.met = true
		return false, true
	}
	return false, false
}

package cli

import (
	"io"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/flowrun/flow/cache"
	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/spec"
)

// resumeFlags: --resume reuses stored successes (docs/state.md).
type resumeFlags struct {
	resume, resumeFailed bool
}

func addResumeFlags(cmd *cobra.Command, f *resumeFlags) {
	fl := cmd.Flags()
	fl.BoolVar(&f.resume, "resume", false, "reuse the results of items that succeeded in earlier runs (stages with a cache: see docs/state.md); what failed or never ran runs")
	fl.BoolVar(&f.resumeFailed, "resume-failed", false, "the same as --resume: failures are never stored, so a resumed run always runs again what failed")
}

// cachedRunners wraps every mode's runner factory with the result cache
// of the state database. Without a database nothing is cached, and
// --resume is refused before anything runs: it would silently start from
// zero.
func (a *app) cachedRunners(rs engine.Runners, h *history, file string, p *spec.Pipeline, f resumeFlags, stderr io.Writer) (engine.Runners, error) {
	resume := f.resume || f.resumeFailed
	if h == nil {
		if resume {
			return nil, &exitError{code: ExitInvalid, msg: "--resume needs the state database, where earlier results are kept: drop --no-state, or name one with --state DIR; nothing was run"}
		}
		return rs, nil
	}
	scope := file
	if file == "-" {
		scope = "<stdin>"
	} else if abs, err := filepath.Abs(file); err == nil {
		scope = abs
	}
	out := engine.Runners{}
	for m, fac := range rs {
		out[m] = fac
	}
	if out[spec.ModeThread] == nil {
		out[spec.ModeThread] = engine.ThreadRunner
	}
	o := cache.Options{DB: h.db, Pipeline: scope, Resume: resume, Secrets: p.Vars.Secrets(), Stderr: stderr}
	for m, fac := range out {
		out[m] = cache.Wrap(fac, o)
	}
	return out, nil
}

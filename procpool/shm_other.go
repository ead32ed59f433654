//go:build !linux

package procpool

import "os"

// Without memfd there is no shared page: a dead worker's running item is
// then taken to be the oldest it held (exact unless results were waiting
// in the worker), and /proc-based memory limits are not enforced.
type runningPage struct{}

func newRunningPage() (runningPage, *os.File, error) { return runningPage{}, nil, nil }
func openRunningPage() runningPage                   { return runningPage{} }
func (runningPage) valid() bool                      { return false }
func (runningPage) load() uint64                     { return 0 }
func (runningPage) lastStarted() uint64              { return 0 }
func (runningPage) begin(uint64)                     {}
func (runningPage) end()                             {}
func (runningPage) unmap()                           {}

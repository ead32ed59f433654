//go:build !(linux || darwin || freebsd)

package analyzelogs

import (
	"context"
)

// scanOSFile reads f; mapping is only used where it has been measured.
func (s *Scanner) scanOSFile(ctx context.Context, f *logFile) (Counts, error) {
	if f.size >= bigFile {
		release, err := acquireSlot(ctx)
		if err != nil {
			return Counts{}, err
		}
		defer release()
	}
	return s.scanRead(ctx, f.sizedReader(0))
}

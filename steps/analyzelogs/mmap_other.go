//go:build !(linux || darwin || freebsd)

package analyzelogs

import (
	"context"
	"os"
)

// scanOSFile reads f; mapping is only used where it has been measured.
func (s *Scanner) scanOSFile(ctx context.Context, f *os.File) (Counts, error) {
	return s.ScanFile(ctx, f)
}

//go:build !(linux || darwin || freebsd)

package analyzelogs

import (
	"context"
	"io/fs"
	"os"
)

// scanOSFile reads f; mapping is only used where it has been measured.
func (s *Scanner) scanOSFile(ctx context.Context, f *os.File, fi fs.FileInfo) (Counts, error) {
	if !fi.Mode().IsRegular() {
		return s.ScanFile(ctx, f)
	}
	return s.scanFile(ctx, f, fi.Size())
}

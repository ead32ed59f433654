//go:build unix

package resize

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flowrun/flow/steps"
)

// A FIFO (a glob can match one) used to block os.ReadFile in open(2),
// where no timeout or signal reaches; a device is endless. Both must fail
// their item at once, permanently.
func TestNonRegularFilesRefused(t *testing.T) {
	dir := t.TempDir()
	if err := unix.Mkfifo(filepath.Join(dir, "pipe.png"), 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	s := mustStep(t, dir, "width: 10")
	for _, tc := range []struct{ item, want string }{
		{"pipe.png", "named pipe"},
		{"/dev/zero", "character device"},
		{".", "directory"},
	} {
		done := make(chan error, 1)
		go func() {
			_, err := s.Do(context.Background(), steps.Input{Item: tc.item})
			done <- err
		}()
		select {
		case err := <-done:
			var se *steps.Error
			if !errors.As(err, &se) || !se.Permanent || !strings.Contains(err.Error(), "not a regular file") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: %v, want a permanent 'not a regular file' error naming %q", tc.item, err, tc.want)
			}
		case <-time.After(time.Minute): // only a guard against a hang
			t.Fatalf("%s: the step blocked", tc.item)
		}
	}
}

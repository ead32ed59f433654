//go:build unix

package steptest

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

// RefusesNonRegularFiles checks that a step reading the file its item
// names fails at once, permanently, on a FIFO (named fifo in dir, where
// the step resolves relative paths), a device and a directory: a FIFO
// used to block in open(2), where no timeout or signal reaches.
func RefusesNonRegularFiles(t *testing.T, dir, fifo string, s steps.Step) {
	t.Helper()
	if err := unix.Mkfifo(filepath.Join(dir, fifo), 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	for _, tc := range []struct{ item, want string }{
		{fifo, "named pipe"},
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

//go:build unix

package resize

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/flowrun/flow/internal/leftover/leftovertest"
)

func TestTempOwner(t *testing.T) {
	for name, want := range map[string]int{
		".a.jpg.tmp-123-0123456789ab":        123,
		".a.tmp-b.jpg.tmp-77-abcdefabcdef":   77, // the last .tmp- counts
		".a.jpg.tmp-123-0123456789a":         0,  // random part too short
		".a.jpg.tmp-123-0123456789AB":        0,  // upper case: not ours
		"a.jpg.tmp-123-0123456789ab":         0,  // not hidden
		".a.jpg.tmp-12x-0123456789ab":        0,
		".a.jpg.tmp-123":                     0,
		".tmp-123-0123456789ab":              0, // no destination name
		".a.jpg.tmp-123-0123456789ab.tmp-1-": 0,
	} {
		pid, ok := tempOwner(name)
		if ok != (want != 0) || pid != want {
			t.Errorf("%s: got (%d, %v), want %d", name, pid, ok, want)
		}
	}
}

// A run killed with SIGKILL leaves its temporary files; the next run
// removes those whose process is gone, in every directory it writes to,
// and keeps those of live processes (a concurrent run).
func TestLeftoversOfDeadRunsRemoved(t *testing.T) {
	dead := leftovertest.DeadPID(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pic.png"), encodePNG(t, quadrants(40, 20)))
	out := filepath.Join(dir, "resized")
	d, l := strconv.Itoa(dead), strconv.Itoa(os.Getppid())
	files := map[string]bool{ // path under out_dir -> kept
		".old.png.tmp-" + d + "-0123456789ab":         false,
		"sub/.x.png.tmp-" + d + "-0123456789ab":       false,
		".old.png.tmp-" + l + "-0123456789ab":         true, // a live process
		".old.png.tmp-" + d + "-0123456789":           true, // not our naming
		"untouched/.x.png.tmp-" + d + "-abcdefab":     true,
		"untouched/.y.png.tmp-" + d + "-0123456789ab": true, // a directory no image went to
	}
	for name := range files {
		writeFile(t, filepath.Join(out, name), []byte("partial"))
	}
	s := mustStep(t, dir, "width: 20")
	run(t, s, "pic.png")
	sub := mustStep(t, dir, "width: 20\nname: sub/{stem}.{ext}")
	run(t, sub, "pic.png")
	for name, keep := range files {
		_, err := os.Stat(filepath.Join(out, name))
		if (err == nil) != keep {
			t.Errorf("%s: exists %v, want %v", name, err == nil, keep)
		}
	}
	for _, f := range []string{"pic.png", "sub/pic.png"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("no output %s: %v", f, err)
		}
	}
	if got := listDir(t, out); strings.Contains(strings.Join(got, ","), "tmp-"+strconv.Itoa(os.Getpid())) {
		t.Errorf("a temporary file of this run is left: %v", got)
	}
}

//go:build unix

package sink

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"

	"github.com/flowrun/flow/internal/leftover/leftovertest"
	"github.com/flowrun/flow/steps"
)

func TestWriteRemovesDeadLeftovers(t *testing.T) {
	dir := t.TempDir()
	dead := strconv.Itoa(leftovertest.DeadPID(t))
	live := strconv.Itoa(os.Getpid())
	// The runner of this test is alive and not us: a concurrent run.
	parent := strconv.Itoa(os.Getppid())
	files := map[string]bool{ // name -> should still exist after the write
		".r.jsonl.tmp-" + dead + "-123":       false, // killed writer of r.jsonl
		".r.jsonl.tmp-" + live + "-456":       true,  // our own pid: alive
		".r.jsonl.tmp-" + parent + "-789":     true,  // another live process
		".other.jsonl.tmp-" + dead + "-123":   true,  // another destination
		".r.jsonl.tmp-" + dead + "-abc":       true,  // not the exact pattern
		".r.jsonl.tmp-" + dead + "-1.tmp-2-3": true,  // a temp of '.r.jsonl.tmp-DEAD-1'
		".r.jsonl.tmp-123456":                 true,  // old naming, owner unknown
		"r.jsonl.tmp-" + dead + "-123":        true,  // not hidden
	}
	for name := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// A directory with a matching name was not made by a sink.
	dirName := ".r.jsonl.tmp-" + dead + "-999"
	if err := os.Mkdir(filepath.Join(dir, dirName), 0o755); err != nil {
		t.Fatal(err)
	}
	files[dirName] = true

	env := &steps.Env{Dir: dir}
	s, err := build(t, `write: r.jsonl`, env)
	if err != nil {
		t.Fatal(err)
	}
	writeAll(t, s, []steps.Record{{Item: int64(1)}, {Item: int64(2)}})
	if err := s.Close(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	golden(t, "output", readFile(t, filepath.Join(dir, "r.jsonl")), "1\n2\n")

	var want []string
	for name, stays := range files {
		if stays {
			want = append(want, name)
		}
	}
	want = append(want, "r.jsonl")
	sort.Strings(want)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if len(got) != len(want) {
		t.Fatalf("directory holds\n  %q\nwant\n  %q", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("directory holds\n  %q\nwant\n  %q", got, want)
		}
	}
}

// A sink that is built but never written to removes nothing: cleaning up is
// the job of a run that actually replaces the file.
func TestUnusedWriteLeavesLeftovers(t *testing.T) {
	dir := t.TempDir()
	name := ".r.jsonl.tmp-" + strconv.Itoa(leftovertest.DeadPID(t)) + "-1"
	if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := build(t, `write: r.jsonl`, &steps.Env{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
		t.Errorf("leftover removed by a sink that never wrote: %v", err)
	}
}

func TestTempNameCarriesPID(t *testing.T) {
	dir := t.TempDir()
	s, err := build(t, `write: r.jsonl`, &steps.Env{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	writeAll(t, s, []steps.Record{{Item: int64(1)}})
	fs := s.(*fileSink)
	if err := fs.bw.Flush(); err != nil { // the file is created on the first flush
		t.Fatal(err)
	}
	pid, ok := leftoverPID("r.jsonl", filepath.Base(fs.tmp.Name()))
	if !ok || pid != os.Getpid() {
		t.Errorf("temporary file %s: pid %d, %v; want %d", fs.tmp.Name(), pid, ok, os.Getpid())
	}
	if err := s.Close(context.Background(), context.Canceled); err != nil {
		t.Fatal(err)
	}
}

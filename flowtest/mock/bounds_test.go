package mock_test

import (
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/flowrun/flow/flowtest/mock"
	"github.com/flowrun/flow/steps"
)

// allocated returns the bytes f allocates.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// A run that writes a huge file over a fixture's path makes it an output,
// found without reading it into memory; an untouched fixture is no output.
func TestOutputsOverAFixtureReadInBoundedMemory(t *testing.T) {
	set := decode(t, "files: {map: {data/big.bin: fixtures/big.bin, data/same.bin: fixtures/same.bin}}\n")
	rec, _, dir := install(t, set, map[string]string{"fixtures/big.bin": "small", "fixtures/same.bin": "kept"})
	real, err := rec.Path(t.Context(), steps.At{}, steps.OpWrite, filepath.Join(dir, "data/big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	// Sparse: 512 MiB to read, no disk to fill.
	if err := os.Truncate(real, 512<<20); err != nil {
		t.Fatal(err)
	}
	var outs []string
	n := allocated(func() { outs, err = rec.Outputs() })
	if err != nil || !reflect.DeepEqual(outs, []string{filepath.Join(dir, "data/big.bin")}) {
		t.Fatalf("outputs %v %v", outs, err)
	}
	if n > 16<<20 {
		t.Errorf("Outputs allocated %d MiB to tell a 512 MiB output from a 5-byte fixture", n>>20)
	}
	// Same size, other bytes: still an output.
	same, _ := rec.Path(t.Context(), steps.At{}, steps.OpWrite, filepath.Join(dir, "data/same.bin"))
	if err := os.WriteFile(same, []byte("KEPT"), 0o644); err != nil {
		t.Fatal(err)
	}
	if outs, err := rec.Outputs(); err != nil || len(outs) != 2 {
		t.Fatalf("outputs %v %v", outs, err)
	}
}

// sparse makes a file of n zero bytes in dir that takes no disk.
func sparse(t *testing.T, dir, name string, n int64) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, n); err != nil {
		t.Fatal(err)
	}
}

// A body_file named by every response of a sequence is read once.
func TestBodyFileReadOncePerTest(t *testing.T) {
	text := "fetch:\n  - url: https://api.test/p\n    sequence:\n"
	for range 30 {
		text += "      - {body_file: responses/big.bin}\n"
	}
	set := decode(t, text)
	testDir := t.TempDir()
	sparse(t, testDir, "responses/big.bin", 8<<20)
	var rec *mock.Recorder
	var err error
	n := allocated(func() { rec, err = set.Install(testDir, t.TempDir()) })
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	// One read of 8 MiB, with io.ReadAll's growing: far below 30 reads.
	if n > 80<<20 {
		t.Errorf("Install allocated %d MiB for 30 responses naming one 8 MiB body_file", n>>20)
	}
}

// All the body_files of a test together stay within one bound, refused at
// the position of the first one past it.
func TestBodyFilesTotalBound(t *testing.T) {
	defer mock.SetMaxBodyFiles(12 << 20)()
	set := decode(t, `
fetch:
  - {url: https://api.test/a, body_file: responses/a.bin}
  - {url: https://api.test/b, body_file: responses/b.bin}
`)
	testDir := t.TempDir()
	sparse(t, testDir, "responses/a.bin", 8<<20)
	sparse(t, testDir, "responses/b.bin", 8<<20)
	rec, err := set.Install(testDir, t.TempDir())
	if err == nil {
		rec.Close()
		t.Fatal("16 MiB of body_files installed under a 12 MiB bound")
	}
	if !strings.Contains(err.Error(), "4:42: body_file") || !strings.Contains(err.Error(), "responses/b.bin") || !strings.Contains(err.Error(), "in all") {
		t.Errorf("error %v: want the position of b.bin's body_file and the bound", err)
	}
}

package mock_test

import (
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"testing"

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

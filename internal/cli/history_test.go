package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/store"
)

// The history records the hash of the text that was validated and run, as
// the report does, not of the file read again: an edit between loading the
// pipeline and starting the run must not give the run another file's hash.
func TestHistoryHashesTheTextThatRan(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(file, []byte("edited after loading\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(filepath.Join(dir, "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ran := []byte("version: 1\nname: p\n")
	h := &history{db: db, stderr: io.Discard}
	h.start(file, &spec.Pipeline{Name: "p", Source: ran})
	if h.id == "" {
		t.Fatal("the run was not recorded")
	}
	runs, err := db.Runs(context.Background(), store.RunFilter{})
	if err != nil || len(runs) != 1 {
		t.Fatalf("runs: %v, %v", runs, err)
	}
	sum := sha256.Sum256(ran)
	if got, want := runs[0].FileSHA256, hex.EncodeToString(sum[:]); got != want {
		t.Errorf("recorded sha256 %s, want %s (of the text that ran)", got, want)
	}
}

package report

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func readStatus(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("%s: %v\n%s", path, err, b)
	}
	return string(r.Status)
}

func onlyFiles(t *testing.T, dir string, want ...string) {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range es {
		got = append(got, e.Name())
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("%s holds %q, want %q (a temporary file left behind?)", dir, got, want)
	}
}

// TestWriteFileMode: reports are created 0644 less the umask, not 0600, so
// that a monitor running as another user can read them.
func TestWriteFileMode(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := t.TempDir()
	path := filepath.Join(dir, "report.json")
	if err := (&Report{Status: "succeeded"}).WriteFile(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	syscall.Umask(0o077)
	if err := (&Report{Status: "failed"}).WriteFile(path); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("under umask 077: mode %v, want 0600", fi.Mode().Perm())
	}
	onlyFiles(t, dir, "report.json")
}

// TestWriteFileReplacesAtomically: a new file takes the old one's name, so
// a reader sees the old report or the new one.
func TestWriteFileReplacesAtomically(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "report.json")
	if err := (&Report{Status: "succeeded"}).WriteFile(path); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(path)
	if err := (&Report{Status: "invalid"}).WriteFile(path); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(path)
	if os.SameFile(before, after) {
		t.Error("the report was rewritten in place, not replaced")
	}
	if got := readStatus(t, path); got != "invalid" {
		t.Errorf("status %q, want invalid", got)
	}
	onlyFiles(t, dir, "report.json")
}

// TestWriteFileThroughSymlinks: a link is written through (the file it
// names is replaced, the link stays), also a relative one, a chain, and a
// dangling one, whose target is created.
func TestWriteFileThroughSymlinks(t *testing.T) {
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(filepath.Join(dir, "reports"), 0o755))
	must(os.Symlink("reports/run.json", filepath.Join(dir, "latest.json")))
	must(os.Symlink("latest.json", filepath.Join(dir, "chain.json")))
	for _, name := range []string{"latest.json", "chain.json"} {
		link := filepath.Join(dir, name)
		must((&Report{Status: Status(name)}).WriteFile(link))
		if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Fatalf("%s is no longer a link: %v", name, err)
		}
		if got := readStatus(t, filepath.Join(dir, "reports", "run.json")); got != name {
			t.Errorf("through %s: status %q", name, got)
		}
	}
	onlyFiles(t, filepath.Join(dir, "reports"), "run.json")
}

// TestWriteFileToDevice: /dev/null (like /dev/stdout) is written to, never
// replaced.
func TestWriteFileToDevice(t *testing.T) {
	if err := CheckPath("/dev/null"); err != nil {
		t.Fatal(err)
	}
	if err := (&Report{Status: "succeeded"}).WriteFile("/dev/null"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat("/dev/null"); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		t.Fatalf("/dev/null is no longer a device: %v %v", fi.Mode(), err)
	}
}

// TestWriteFileToDevShm: /dev/shm is tmpfs, not a device: a report there
// is created (it used to be refused as a missing device: "no such file or
// directory") and then replaced atomically like one on disk.
func TestWriteFileToDevShm(t *testing.T) {
	dir, err := os.MkdirTemp("/dev/shm", "flow-report-test-")
	if err != nil {
		t.Skipf("no writable /dev/shm here: %v", err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "report.json")
	if err := CheckPath(path); err != nil {
		t.Fatal(err)
	}
	if err := (&Report{Status: "succeeded"}).WriteFile(path); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(path)
	if err := (&Report{Status: "failed"}).WriteFile(path); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(path)
	if got := readStatus(t, path); got != "failed" {
		t.Errorf("status %q, want failed", got)
	}
	if os.SameFile(before, after) {
		t.Error("the report in /dev/shm was rewritten in place, not replaced")
	}
	onlyFiles(t, dir, "report.json")
}

// TestCheckPath: what cannot take a report is found before a run, and the
// check leaves nothing behind.
func TestCheckPath(t *testing.T) {
	dir := t.TempDir()
	if err := CheckPath(filepath.Join(dir, "report.json")); err != nil {
		t.Fatal(err)
	}
	onlyFiles(t, dir)
	for path, want := range map[string]string{
		filepath.Join(dir, "no", "report.json"): "does not exist",
		dir:                                     "it is a directory",
	} {
		if err := CheckPath(path); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckPath(%s) = %v, want %q", path, err, want)
		}
	}
	if os.Geteuid() != 0 {
		ro := filepath.Join(dir, "ro")
		if err := os.Mkdir(ro, 0o755); err != nil {
			t.Fatal(err)
		}
		// A report the user may write in a directory they may not: written
		// in place rather than not at all.
		kept := filepath.Join(ro, "report.json")
		if err := os.WriteFile(kept, []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(ro, 0o555); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(ro, 0o755)
		if err := CheckPath(filepath.Join(ro, "new.json")); err == nil || !strings.Contains(err.Error(), "no permission") {
			t.Errorf("read-only directory: %v", err)
		}
		if err := CheckPath(kept); err != nil {
			t.Errorf("writable file in a read-only directory: %v", err)
		}
		if err := (&Report{Status: "failed"}).WriteFile(kept); err != nil {
			t.Fatal(err)
		}
		if got := readStatus(t, kept); got != "failed" {
			t.Errorf("status %q, want failed", got)
		}
	}
}

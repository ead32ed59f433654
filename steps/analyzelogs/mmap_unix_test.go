//go:build linux || darwin || freebsd

package analyzelogs

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

func tempFile(t *testing.T, data string) *os.File {
	t.Helper()
	p := filepath.Join(t.TempDir(), "app.log")
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func fdOf(f *os.File) int { return int(f.Fd()) }

// scanOS is the step's path for an open file.
func scanOS(t *testing.T, s *Scanner, f *os.File) (Counts, error) {
	t.Helper()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return s.scanOSFile(context.Background(), &logFile{fd: int(f.Fd()), size: fi.Size()})
}

// Windows of a few pages put lines across window boundaries and lines
// longer than a window, which must grow it.
func TestScanMappedMatchesReference(t *testing.T) {
	rulesets := map[string][]Rule{
		"default":      defaultRules,
		"overlapping":  {{Name: "a", Literal: "ERR"}, {Name: "b", Literal: "ERROR"}, {Name: "c", Literal: "RN"}},
		"regex":        {{Name: "start", Regexp: `^ERROR`}, {Name: "end", Regexp: `WARN$`}, {Name: "ci", Regexp: `(?i)time ?out`}},
		"text anchors": {{Name: "a", Regexp: `\AE`}, {Name: "z", Regexp: `N\z`}, {Name: "empty", Regexp: `^$`}},
	}
	page := os.Getpagesize()
	r := rand.New(rand.NewPCG(5, 6))
	for name, rules := range rulesets {
		t.Run(name, func(t *testing.T) {
			for iter := 0; iter < 20; iter++ {
				data := randomLog(r, 1+r.IntN(12*page))
				if iter%4 == 0 {
					// A line of several windows.
					data += strings.Repeat("z", 5*page) + "WARN" + data
				}
				samples := r.IntN(3)
				s := mustScanner(t, rules, samples, 8+r.IntN(40))
				s.blockLen = 1 + r.IntN(3000)
				s.noFused = iter%2 == 1
				window := page * (1 + r.IntN(3))
				want := reference(t, data, rules, samples, s.sampleLen)
				got, ok, err := s.scanMapped(context.Background(), fdOf(tempFile(t, data)), int64(len(data)), window)
				if err != nil || !ok {
					t.Fatalf("ok %v, err %v", ok, err)
				}
				if !equalCounts(got, want) {
					t.Fatalf("iteration %d (block %d, window %d): got %+v, want %+v", iter, s.blockLen, window, got, want)
				}
			}
		})
	}
}

func TestScanMappedGzipFallsBack(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	data := randomLog(r, 2<<20)
	z := gz(t, data, 2)
	s := mustScanner(t, defaultRules, 1, 50)
	f := tempFile(t, string(z))
	if _, ok, err := s.scanMapped(context.Background(), fdOf(f), int64(len(z)), mmapWindow); ok || err != nil {
		t.Fatalf("gzip file: ok %v, err %v; want a fallback to reading", ok, err)
	}
	// The step's path: large enough to be mapped, read through gzip instead.
	got, err := scanOS(t, s, f)
	if err != nil {
		t.Fatal(err)
	}
	if want := reference(t, data, defaultRules, 1, 50); !equalCounts(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestScanOSFileLarge(t *testing.T) {
	// Above mmapMin, with CRLF lines and no final line break.
	r := rand.New(rand.NewPCG(9, 10))
	data := randomLog(r, 3*mmapMin) + "\r\nWARN last"
	s := mustScanner(t, defaultRules, 2, 50)
	got, err := scanOS(t, s, tempFile(t, data))
	if err != nil {
		t.Fatal(err)
	}
	if want := reference(t, data, defaultRules, 2, 50); !equalCounts(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestScanMappedLineTooLong(t *testing.T) {
	s := mustScanner(t, defaultRules, 0, 200)
	s.blockLen, s.maxLine = 16, 64
	data := "ok\n" + strings.Repeat("z", 100) + "\n"
	_, _, err := s.scanMapped(context.Background(), fdOf(tempFile(t, data)), int64(len(data)), os.Getpagesize())
	if !errors.Is(err, ErrLineTooLong) || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("err = %v, want ErrLineTooLong naming line 2", err)
	}
	data = strings.Repeat("z", 63) + "\n"
	c, _, err := s.scanMapped(context.Background(), fdOf(tempFile(t, data)), int64(len(data)), os.Getpagesize())
	if err != nil || c.Lines != 1 {
		t.Fatalf("at the limit: %+v, %v", c, err)
	}
}

// A file truncated while mapped faults on the pages past its new end; the
// scan must report that, not crash the process.
func TestScanMappedTruncated(t *testing.T) {
	data := strings.Repeat("INFO fine\n", 4*mmapMin/10)
	f := tempFile(t, data)
	s := mustScanner(t, defaultRules, 0, 200)
	s.afterMap = func() {
		if err := os.Truncate(f.Name(), 0); err != nil {
			t.Error(err)
		}
	}
	_, _, err := s.scanMapped(context.Background(), fdOf(f), int64(len(data)), mmapWindow)
	if err == nil || !strings.Contains(err.Error(), "changed size") {
		t.Fatalf("err = %v, want a changed-size error", err)
	}
	if debug.SetPanicOnFault(false) {
		t.Error("SetPanicOnFault left on after the scan")
	}
	// A second scan of another file works normally.
	s.afterMap = nil
	data2 := strings.Repeat("ERROR x\n", mmapMin/8+1)
	c, err := scanOS(t, s, tempFile(t, data2))
	if err != nil || c.Counts[0] != int64(mmapMin/8+1) {
		t.Fatalf("after a fault: %+v, %v", c, err)
	}
}

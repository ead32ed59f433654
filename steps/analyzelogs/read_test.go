package analyzelogs

import (
	"context"
	"io"
	"math/bits"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// nextChunkCRRef is nextChunkCR one byte at a time; b[len(b)] is next.
func nextChunkCRRef(b []byte, next byte, set [4]byte) (nl, off int, cand, lf uint64) {
	at := func(i int) byte {
		if i == len(b) {
			return next
		}
		return b[i]
	}
	for base := 0; base+64 <= len(b); base += 64 {
		cand, lf = 0, 0
		for i := range 64 {
			c := b[base+i]
			if slices.Contains(set[:], c) || c == '\r' && at(base+i+1) != '\n' {
				cand |= 1 << i
			}
			if c == '\n' {
				lf |= 1 << i
			}
		}
		if cand != 0 {
			return nl, base, cand, lf
		}
		nl += bits.OnesCount64(lf)
	}
	return nl, -1, 0, 0
}

// The CRLF kernel marks lone carriage returns only, the one in a chunk's
// last byte too (its line feed is the next chunk's first byte, or the byte
// after the slice).
func TestNextChunkCR(t *testing.T) {
	if !haveFused {
		t.Skip("no one-pass kernel on this CPU")
	}
	r := rand.New(rand.NewPCG(11, 12))
	alpha := []byte{'\n', '\r', 'a', 'R', 'W', 0xff, 0}
	for iter := range 20000 {
		n := 64 * r.IntN(10)
		buf := make([]byte, n+1)
		for i := range buf {
			switch x := r.IntN(40); {
			case x == 0:
				buf[i] = alpha[r.IntN(len(alpha))]
			case x < 4:
				buf[i] = '\r'
				if i+1 < len(buf) && r.IntN(4) > 0 {
					buf[i+1] = '\n'
				}
			default:
				if buf[i] == 0 {
					buf[i] = 'x'
				}
			}
		}
		set := [4]byte{'R', 'W', 'R', 'W'}
		if iter%2 == 0 {
			set = [4]byte{'R', 'R', 'R', 'R'}
		}
		b := buf[:n]
		gotNL, gotOff, gotCand, gotLF := nextChunkCR(b, pack(set))
		wantNL, wantOff, wantCand, wantLF := nextChunkCRRef(b, buf[n], set)
		if gotNL != wantNL || gotOff != wantOff || gotCand != wantCand || gotLF != wantLF {
			t.Fatalf("iteration %d: got (%d, %d, %x, %x), want (%d, %d, %x, %x)\n%q", iter, gotNL, gotOff, gotCand, gotLF, wantNL, wantOff, wantCand, wantLF, buf)
		}
	}
}

// writeLog writes data to a file of its own and opens it as the step does.
func writeLog(t *testing.T, data string) *logFile {
	t.Helper()
	return openTemp(t, tempLog(t, data))
}

func tempLog(t *testing.T, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "app.log")
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func openTemp(t *testing.T, p string) *logFile {
	t.Helper()
	f, err := openLog(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// The step's own path (a file, its size at open, the pooled block) against
// the reference, with every block size around the places where a match, a
// line feed or a CRLF straddles a block edge, and files without a final
// line break, empty, or of CRLF lines with lone carriage returns in them.
func TestScanFileBoundaries(t *testing.T) {
	crlf := strings.Repeat("2024-05-01 INFO  api GET /v1/items status=200\r\n", 200)
	cases := map[string]string{
		"empty":            "",
		"one line, no LF":  "ERROR only",
		"LF only":          "\n",
		"CR only":          "\r",
		"CRLF only":        "\r\n",
		"match at the end": "info\ninfo\nx ERROR",
		"straddles":        "aaaa ERROR bbbb\nWARN cc ERROR\r\nddd WARN\n\nERR\nOR\n",
		"crlf":             crlf + "x ERROR\r\n" + crlf + "WARN y\r\n" + crlf,
		"crlf, lone CR":    crlf + "x ERROR\r" + crlf + "lone\rWARN\r\n" + crlf + "end\r",
		"crlf, no final":   crlf + "last WARN",
		"crlf, CR at end":  crlf + "\r",
		"lone CR at 63":    strings.Repeat("x", 63) + "\rERROR\r\n" + crlf,
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			want := reference(t, data, defaultRules, 2, 40)
			sizes := []int{1, 2, 3, 5, 7, 16, 63, 64, 65, 127, 128, 129, 4096, blockSize}
			for k := 1; k < len(data) && k < 40; k++ {
				sizes = append(sizes, k)
			}
			for _, bl := range sizes {
				for _, noFused := range []bool{false, true} {
					s := mustScanner(t, defaultRules, 2, 40)
					s.blockLen, s.noFused = bl, noFused
					got, err := s.scanOSFile(context.Background(), writeLog(t, data))
					if err != nil {
						t.Fatal(err)
					}
					if !equalCounts(got, want) {
						t.Fatalf("block %d, noFused %v: got %+v, want %+v", bl, noFused, got, want)
					}
				}
			}
		})
	}
}

// CRLF logs take the kernel that skips CRLF breaks once a block shows them,
// and still end lines at lone carriage returns found later.
func TestScanCRLFSwitchesKernel(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	for iter := range 40 {
		var b strings.Builder
		for b.Len() < 200_000 {
			switch r.IntN(50) {
			case 0:
				b.WriteString("x ERROR y\r\n")
			case 1:
				b.WriteString("WARN z\r\n")
			case 2:
				if iter%2 == 0 {
					b.WriteString("lone\rERROR\r\n")
				}
			default:
				b.WriteString("2024-05-01T08:00:00.000Z INFO  api-3 GET /v1/items/123 status=200\r\n")
			}
		}
		data := b.String()
		s := mustScanner(t, defaultRules, 1, 40)
		s.blockLen = 1024 + r.IntN(8192)
		st := newState(s.rules)
		st.plan(s, []byte(data))
		c := Counts{Counts: make([]int64, 2), Samples: make([][]string, 2)}
		if _, err := s.scanBytes(context.Background(), &c, st, []byte(data), true); err != nil {
			t.Fatal(err)
		}
		if want := reference(t, data, defaultRules, 1, 40); !equalCounts(c, want) {
			t.Fatalf("iteration %d: got %+v, want %+v", iter, c, want)
		}
		if haveFused && !st.crlfBreaks {
			t.Errorf("iteration %d: CRLF input did not switch to the CRLF kernel", iter)
		}
	}
}

// countingReader counts the reads it is asked for.
type countingReader struct {
	r     io.Reader
	reads int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.reads++
	return c.r.Read(p)
}

// A small file whose size is known at open is one read: no read of the
// gzip magic bytes on their own, no read that only finds the end.
func TestScanSmallFileOneRead(t *testing.T) {
	data := strings.Repeat("2024-05-01 INFO fine\n", 200) + "ERROR x\n"
	s := mustScanner(t, defaultRules, 0, 200)
	cr := &countingReader{r: strings.NewReader(data)}
	c, err := s.scanFile(context.Background(), cr, int64(len(data)))
	if err != nil || c.Lines != 201 || c.Counts[0] != 1 {
		t.Fatalf("got %+v, %v", c, err)
	}
	if cr.reads != 1 {
		t.Errorf("%d reads for a %d-byte file, want 1", cr.reads, len(data))
	}
}

// Scanning a small file must not allocate a block per file: the blocks are
// pooled. (Allocating 256 KiB per 4 KiB file once cost more than the scan.)
func TestScanFileReusesBlocks(t *testing.T) {
	data := strings.Repeat("2024-05-01 INFO fine\n", 200)
	s := mustScanner(t, defaultRules, 0, 200)
	p := tempLog(t, data)
	scan := func() {
		f, err := openLog(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := s.scanOSFile(context.Background(), f); err != nil {
			t.Fatal(err)
		}
	}
	scan()
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	const n = 50
	for range n {
		scan()
	}
	runtime.ReadMemStats(&m1)
	// A GC between the scans may empty the pool once; a block per scan
	// would be 50 blocks.
	if per := (m1.TotalAlloc - m0.TotalAlloc) / n; per > blockSize/8 {
		t.Errorf("%d bytes allocated per scan of a %d-byte file, want far less than a %d-byte block", per, len(data), blockSize)
	}
}

// grower appends to its content after the first read, as a log being
// written to does.
type grower struct {
	data  []byte
	off   int
	more  []byte
	reads int
}

func (g *grower) Read(p []byte) (int, error) {
	g.reads++
	if g.reads == 2 {
		g.data = append(g.data, g.more...)
	}
	if g.off == len(g.data) {
		return 0, io.EOF
	}
	n := copy(p, g.data[g.off:])
	g.off += n
	return n, nil
}

// A file that grows while it is read is read on past its size at open as
// long as the reads come back full; one that shrank ends where the reads
// end. Either way every count describes bytes that were in the file.
func TestScanFileGrowsOrShrinks(t *testing.T) {
	first := strings.Repeat("ERROR a\n", 100)
	more := strings.Repeat("WARN b\n", 100)
	s := mustScanner(t, defaultRules, 0, 200)
	s.blockLen = 64
	g := &grower{data: []byte(first), more: []byte(more)}
	c, err := s.scanFile(context.Background(), g, int64(len(first)))
	if err != nil {
		t.Fatal(err)
	}
	if want := reference(t, first+more, defaultRules, 0, 200); !equalCounts(c, want) {
		t.Errorf("grown: got %+v, want %+v", c, want)
	}

	// Shrunk between open and read: the size at open is larger than what
	// the reads return.
	p := tempLog(t, first+more)
	f := openTemp(t, p)
	if err := os.Truncate(p, int64(len(first)+3)); err != nil {
		t.Fatal(err)
	}
	s = mustScanner(t, defaultRules, 0, 200)
	c, err = s.scanOSFile(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	if want := reference(t, first+"WAR", defaultRules, 0, 200); !equalCounts(c, want) {
		t.Errorf("shrunk: got %+v, want %+v", c, want)
	}
}

// The gzip magic is sniffed in the first block, however small the block.
func TestScanFileGzipTinyBlocks(t *testing.T) {
	data := "info\nERROR x\r\nWARN y\n"
	z := gz(t, data, 1)
	for _, bl := range []int{1, 2, 3, 64} {
		s := mustScanner(t, defaultRules, 0, 200)
		s.blockLen = bl
		got, err := s.scanOSFile(context.Background(), writeLog(t, string(z)))
		if err != nil {
			t.Fatal(err)
		}
		if want := reference(t, data, defaultRules, 0, 200); !equalCounts(got, want) {
			t.Errorf("block %d: got %+v, want %+v", bl, got, want)
		}
	}
}

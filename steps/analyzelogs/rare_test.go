package analyzelogs

import (
	"bytes"
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// TestIndexEveryPick checks the rare-byte search against bytes.Index for
// every choice of searched and checked byte, so that whatever a sample
// picks, the result is the same: literals with repeated bytes, overlapping
// occurrences, one byte long, and found at the very start or end of b.
func TestIndexEveryPick(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	lits := []string{"E", "ER", "ERROR", "RROR", "aaa", "abab", "aab", "baa", "xyzzy", "WARN", "ERRORERROR"}
	for _, lit := range lits {
		for iter := 0; iter < 300; iter++ {
			// A small alphabet makes near-misses and overlaps common.
			alpha := lit + "\n "
			n := r.IntN(200)
			if iter%10 == 0 {
				n = r.IntN(5000) // long enough to reach the fallback
			}
			b := make([]byte, n)
			for i := range b {
				b[i] = alpha[r.IntN(len(alpha))]
			}
			switch iter % 4 {
			case 1:
				b = append([]byte(lit), b...)
			case 2:
				b = append(b, lit...)
			}
			want := bytes.Index(b, []byte(lit))
			for rare := range len(lit) {
				for check := range len(lit) {
					if got := index(b, []byte(lit), pick{rare, check}); got != want {
						t.Fatalf("index(%q, %q, rare %d, check %d) = %d, want %d", b, lit, rare, check, got, want)
					}
				}
			}
		}
	}
}

// TestIndexFrequentPick covers a pick that the sample got wrong: the
// searched byte is on nearly every position, which hands over to bytes.Index.
func TestIndexFrequentPick(t *testing.T) {
	b := []byte(strings.Repeat("ab", 5000) + "abc" + strings.Repeat("ab", 10))
	if got, want := index(b, []byte("abc"), pick{rare: 0, check: 1}), 10000; got != want {
		t.Fatalf("got %d, want %d", got, want)
	}
	if got := index(b, []byte("abd"), pick{rare: 1, check: 0}); got != -1 {
		t.Fatalf("absent literal found at %d", got)
	}
}

func TestChoose(t *testing.T) {
	sample := []byte(strings.Repeat("GET POST POST POST DELETE ERROR\n", 10) + "WARN\n")
	h := histogram(sample)
	for _, tc := range []struct {
		lit         string
		rare, check int
	}{
		// 'R' (31) is rarer than 'O' (40) and 'E' (50) here, and the first
		// 'R' is taken; 'O' is the next rarest.
		{"ERROR", 1, 3},
		// 'W', 'A' and 'N' once each: ties go to the rarer in logs
		// generally, 'W' then 'N'.
		{"WARN", 0, 3},
		// Neither 'Z' nor 'Q' is in the sample; 'Z' is the rarer in general.
		{"QZ", 1, 0},
		{"x", 0, 0},
		// One distinct byte: there is no other byte to check.
		{"zzz", 0, 0},
		// The check byte differs from the searched one.
		{"RRO", 0, 2},
	} {
		p := choose([]byte(tc.lit), h)
		if p.rare != tc.rare || p.check != tc.check {
			t.Errorf("choose(%q) = %+v, want rare %d check %d", tc.lit, p, tc.rare, tc.check)
		}
	}
	// Only the first sampleBytes count.
	long := append(bytes.Repeat([]byte{'a'}, sampleBytes), bytes.Repeat([]byte{'b'}, 2*sampleBytes)...)
	if h := histogram(long); h['a'] != sampleBytes || h['b'] != 0 {
		t.Errorf("histogram counted a=%d b=%d, want %d and 0", h['a'], h['b'], sampleBytes)
	}
}

// TestScanMisleadingSample: the first block shows one byte of the literal as
// rare and the rest of the file makes it the most frequent one; counts must
// not change, only speed.
func TestScanMisleadingSample(t *testing.T) {
	rules := []Rule{{Name: "e", Literal: "ERROR"}, {Name: "w", Literal: "WARN"}}
	var b strings.Builder
	for b.Len() < 2*sampleBytes {
		b.WriteString("GET /x EEEE OOOO WARN\n") // 'R' looks rare
	}
	for i := 0; b.Len() < 600<<10; i++ {
		b.WriteString(strings.Repeat("R", i%50))
		if i%7 == 0 {
			b.WriteString("ERROR")
		}
		b.WriteString(strings.Repeat("R", i%13))
		if i%5 == 0 {
			b.WriteString("WARN")
		}
		b.WriteString("\n")
	}
	data := b.String()
	s := mustScanner(t, rules, 1, 40)
	for _, blockLen := range []int{sampleBytes, blockSize} {
		s.blockLen = blockLen
		if got, want := scan(t, s, data), reference(t, data, rules, 1, 40); !equalCounts(got, want) {
			t.Fatalf("block %d: got %+v, want %+v", blockLen, got, want)
		}
	}
}

// TestScanLiteralAcrossBlocks puts each literal at every column of a line
// and cuts the input at every block size up to past the line, so the
// literal's rare byte lands on either side of each read.
func TestScanLiteralAcrossBlocks(t *testing.T) {
	rules := []Rule{{Name: "e", Literal: "ERROR"}, {Name: "w", Literal: "WARN"}, {Name: "x", Literal: "X"}, {Name: "r", Literal: "RR"}}
	var b strings.Builder
	for col := 0; col < 24; col++ {
		for _, lit := range []string{"ERROR", "WARN", "X", "RR", "ERRO", "WAR"} {
			b.WriteString(strings.Repeat("-", col) + lit + strings.Repeat("E", 24-col) + "\n")
		}
	}
	data := b.String()
	want := reference(t, data, rules, 0, 40)
	// "ERRO" lines count for "RR".
	if !slices.Equal(want.Counts, []int64{24, 24, 24, 48}) {
		t.Fatalf("reference counts %v: the input does not test what it should", want.Counts)
	}
	for blockLen := 1; blockLen < 60; blockLen++ {
		s := mustScanner(t, rules, 0, 40)
		s.blockLen = blockLen
		got, err := s.Scan(context.Background(), strings.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if !equalCounts(got, want) {
			t.Fatalf("block %d: got %+v, want %+v", blockLen, got, want)
		}
	}
}

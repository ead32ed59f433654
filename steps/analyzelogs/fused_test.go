package analyzelogs

import (
	"bytes"
	"context"
	"math/bits"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// nextCandRef is nextCand one byte at a time.
func nextCandRef(b []byte, set [4]byte) (nl, at int) {
	for i, c := range b {
		if slices.Contains(set[:], c) {
			return nl, i
		}
		if c == '\n' {
			nl++
		}
	}
	return nl, -1
}

func pack(set [4]byte) uint32 {
	return uint32(set[0]) | uint32(set[1])<<8 | uint32(set[2])<<16 | uint32(set[3])<<24
}

// The kernel works on 64-byte chunks made of two 32-byte halves: put the
// first candidate and the line feeds at every offset around those edges.
func TestNextCandEdges(t *testing.T) {
	if !haveFused {
		t.Skip("no one-pass kernel on this CPU")
	}
	set := [4]byte{'R', 'W', 'R', 'R'}
	for n := 0; n <= 200; n++ {
		for pos := -1; pos < n; pos++ {
			b := bytes.Repeat([]byte{'a'}, n)
			for i := 0; i < n; i += 3 {
				b[i] = '\n'
			}
			if pos >= 0 {
				b[pos] = "RW"[pos%2]
			}
			gotNL, gotAt := nextCand(b, pack(set))
			wantNL, wantAt := nextCandRef(b, set)
			if gotNL != wantNL || gotAt != wantAt {
				t.Fatalf("len %d, candidate at %d: got (%d, %d), want (%d, %d)", n, pos, gotNL, gotAt, wantNL, wantAt)
			}
		}
	}
}

func TestNextCandRandom(t *testing.T) {
	if !haveFused {
		t.Skip("no one-pass kernel on this CPU")
	}
	r := rand.New(rand.NewPCG(7, 8))
	for iter := 0; iter < 20000; iter++ {
		b := make([]byte, r.IntN(1000))
		// A small alphabet makes candidates and line feeds frequent;
		// bytes with the high bit set check that comparisons are unsigned.
		alpha := []byte{'\n', 'a', 'b', 0xff, 0x80, 0, 'E', 'R'}
		for i := range b {
			if r.IntN(50) == 0 {
				b[i] = alpha[r.IntN(len(alpha))]
			} else {
				b[i] = 'x'
			}
		}
		var set [4]byte
		for k := range set {
			set[k] = alpha[1+r.IntN(len(alpha)-1)]
		}
		off := r.IntN(8)
		if off > len(b) {
			off = len(b)
		}
		gotNL, gotAt := nextCand(b[off:], pack(set))
		wantNL, wantAt := nextCandRef(b[off:], set)
		if gotNL != wantNL || gotAt != wantAt {
			t.Fatalf("iteration %d: got (%d, %d), want (%d, %d)", iter, gotNL, gotAt, wantNL, wantAt)
		}
	}
}

// The default rules on log-like input take the one-pass path; rules it
// cannot serve do not.
func TestFusedChosen(t *testing.T) {
	data := []byte(strings.Repeat("2024-05-01 INFO request served in 3ms\n", 500))
	for _, tc := range []struct {
		name  string
		rules []Rule
		want  bool
	}{
		{"default", defaultRules, haveFused},
		{"regex with literals", []Rule{{Name: "a", Regexp: `ERROR|FATAL`}}, haveFused},
		{"regex without literals", []Rule{{Name: "a", Regexp: `\d{5}`}}, false},
		{"five bytes", []Rule{{Name: "a", Literal: "Q"}, {Name: "b", Literal: "J"}, {Name: "c", Literal: "K"}, {Name: "d", Literal: "Z"}, {Name: "e", Literal: "X"}}, false},
		{"no rules", nil, false},
	} {
		s := mustScanner(t, tc.rules, 0, 10)
		st := newState(s.rules)
		st.plan(s, data)
		if st.fused != tc.want {
			t.Errorf("%s: fused %v, want %v", tc.name, st.fused, tc.want)
		}
	}
}

// FuzzScan holds both paths, the one-pass kernel and the pass per byte, to
// the line-by-line reference.
func FuzzScan(f *testing.F) {
	f.Add("2024 INFO ok\nWARN x\r\nERROR y\nWARN and ERROR\n", "ERROR", "WARN", uint16(64))
	f.Add(strings.Repeat("x", 70)+"R\n\nW", "RR", "W", uint16(1))
	f.Add("é\xff\nORN \n", "é", "ORN", uint16(3))
	f.Fuzz(func(t *testing.T, data, lit1, lit2 string, block uint16) {
		var rules []Rule
		for i, l := range []string{lit1, lit2} {
			if l != "" && !strings.ContainsAny(l, "\r\n") {
				rules = append(rules, Rule{Name: string(rune('a' + i)), Literal: l})
			}
		}
		want := reference(t, data, rules, 2, 30)
		for _, noFused := range []bool{false, true} {
			s := mustScanner(t, rules, 2, 30)
			s.blockLen = 1 + int(block)
			s.noFused = noFused
			got, err := s.Scan(context.Background(), strings.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if !equalCounts(got, want) {
				t.Fatalf("noFused=%v: got %+v, want %+v", noFused, got, want)
			}
		}
	})
}

// Picked bytes that turn out frequent (a sample that misled) send the next
// blocks line by line; sparse ones keep the stop-at-each-byte path. Both
// give the reference's counts.
func TestDirectAndDense(t *testing.T) {
	if !haveFused {
		t.Skip("no one-pass kernel on this CPU")
	}
	sparse := strings.Repeat("2024-05-01 INFO request served in 3ms\n", 300) + "x ERROR y\nWARN then ERROR\n"
	dense := strings.Repeat("2024-05-01 INFO request served in 3ms\n", 300) + strings.Repeat("ERROR WARN ERROR WARN\n", 2000) + "WARN\n"
	for _, tc := range []struct {
		name, data string
		dense      bool
	}{{"sparse", sparse, false}, {"dense", dense, true}} {
		s := mustScanner(t, defaultRules, 2, 40)
		s.blockLen = 4096
		st := newState(s.rules)
		st.plan(s, []byte(tc.data))
		if st.direct == nil {
			t.Fatalf("%s: literal rules did not take the direct path", tc.name)
		}
		c := Counts{Counts: make([]int64, len(s.rules)), Samples: make([][]string, len(s.rules))}
		if _, err := s.scanBytes(context.Background(), &c, st, []byte(tc.data), true); err != nil {
			t.Fatal(err)
		}
		if st.dense != tc.dense {
			t.Errorf("%s: dense %v, want %v", tc.name, st.dense, tc.dense)
		}
		if want := reference(t, tc.data, defaultRules, 2, 40); !equalCounts(c, want) {
			t.Errorf("%s: got %+v, want %+v", tc.name, c, want)
		}
	}
}

// nextChunkRef is nextChunk one byte at a time.
func nextChunkRef(b []byte, set [4]byte) (nl, off int, cand, lf uint64) {
	for base := 0; base+64 <= len(b); base += 64 {
		cand, lf = 0, 0
		for i, c := range b[base : base+64] {
			if slices.Contains(set[:], c) {
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

// Both kernels, the four-byte one and the two-byte one that fusedSet's
// cyclic packing selects for one or two bytes, against the reference.
func TestNextChunk(t *testing.T) {
	if !haveFused {
		t.Skip("no one-pass kernel on this CPU")
	}
	r := rand.New(rand.NewPCG(9, 10))
	alpha := []byte{'\n', 'a', 'b', 0xff, 0x80, 0, 'E', 'R', 'W'}
	for iter := 0; iter < 20000; iter++ {
		b := make([]byte, 64*r.IntN(12))
		for i := range b {
			if r.IntN(60) == 0 {
				b[i] = alpha[r.IntN(len(alpha))]
			} else {
				b[i] = 'x'
			}
		}
		distinct := 1 + r.IntN(4)
		var set [4]byte
		for k := range set {
			set[k] = alpha[1+(k%distinct)*2%(len(alpha)-1)]
		}
		gotNL, gotOff, gotCand, gotLF := nextChunk(b, pack(set))
		wantNL, wantOff, wantCand, wantLF := nextChunkRef(b, set)
		if gotNL != wantNL || gotOff != wantOff || gotCand != wantCand || gotLF != wantLF {
			t.Fatalf("iteration %d, set %q: got (%d, %d, %x, %x), want (%d, %d, %x, %x)", iter, set[:], gotNL, gotOff, gotCand, gotLF, wantNL, wantOff, wantCand, wantLF)
		}
	}
}

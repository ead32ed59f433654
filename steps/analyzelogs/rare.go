package analyzelogs

import "bytes"

// Literals are searched by their rarest byte rather than by their first.
// bytes.Index looks for the first byte with IndexByte and verifies each hit;
// for "ERROR" in web logs the 'E' of GET, DELETE and DEBUG stops it every
// few dozen bytes, and the call per stop costs more than the scan. The rarest
// byte of the literal in the file at hand ('R' there, or 'W' for "WARN")
// lets IndexByte run over hundreds of bytes per call. grep's Boyer-Moore and
// ripgrep's rare-byte prefilter exploit the same skew.

// pick says how one literal is searched: by the byte at offset rare, with
// the byte at offset check tested before the whole literal is compared.
type pick struct {
	rare, check int
}

// sampleBytes is how much of the start of an input is counted to rank bytes:
// enough to see the shape of typical lines, little enough to cost well under
// 1% of scanning a file of a few MB.
const sampleBytes = 16 << 10

// histogram counts the bytes of the start of b.
func histogram(b []byte) *[256]uint32 {
	var h [256]uint32
	b = b[:min(len(b), sampleBytes)]
	for _, c := range b {
		h[c]++
	}
	return &h
}

// choose picks, for lit, the byte that occurs least in the sample h and, of
// the others, the next least, for the cheap check. Ties (most often bytes
// that do not occur in the sample at all) go to the byte that is rarer in
// logs in general.
func choose(lit []byte, h *[256]uint32) pick {
	rarer := func(i, j int) bool {
		a, b := lit[i], lit[j]
		if h[a] != h[b] {
			return h[a] < h[b]
		}
		return commonness[a] < commonness[b]
	}
	p := pick{}
	for i := 1; i < len(lit); i++ {
		if rarer(i, p.rare) {
			p.rare = i
		}
	}
	p.check = -1
	for i := range lit {
		if lit[i] != lit[p.rare] && (p.check < 0 || rarer(i, p.check)) {
			p.check = i
		}
	}
	if p.check < 0 {
		p.check = p.rare // every byte is the same one
	}
	return p
}

// commonness ranks bytes by how often they appear in log text, 0 for the
// rarest; it only breaks ties of the sample counts.
var commonness = func() [256]uint8 {
	// From most to least common: space, lower-case letters by English
	// frequency, digits and the punctuation of timestamps, paths and
	// key=value pairs, then upper-case letters by English frequency.
	const order = " etaoinsrhldcumfpgwybvkxjqz0123456789.:-/=_,\"'[]()ETAOINSRHLDCUMFPGWYBVKXJQZ\t{}<>;!?@#&%*+|\\$^~`"
	var r [256]uint8
	n := uint8(255)
	for i := 0; i < len(order); i++ {
		if r[order[i]] == 0 {
			r[order[i]] = n
			n--
		}
	}
	return r
}()

// index returns the offset of the first occurrence of lit in b, or -1,
// searching for the byte p picked.
func index(b, lit []byte, p pick) int {
	n := len(lit)
	if n == 1 {
		return bytes.IndexByte(b, lit[0])
	}
	c, cc := lit[p.rare], lit[p.check]
	// Candidate starts are s in [i, len(b)-n]; their rare byte is at s+p.rare.
	fails := 0
	for i := 0; i+n <= len(b); {
		j := bytes.IndexByte(b[i+p.rare:len(b)-n+1+p.rare], c)
		if j < 0 {
			return -1
		}
		s := i + j
		if b[s+p.check] == cc && bytes.Equal(b[s:s+n], lit) {
			return s
		}
		i = s + 1
		// When the picked byte turns out to be frequent here after all (the
		// sample misled), a call per hit costs more than bytes.Index's own
		// fallback; hand over once hits come more often than one per 16
		// bytes, as bytes.Index does itself.
		fails++
		if fails > 4+(i>>4) && i < len(b) {
			if k := bytes.Index(b[i:], lit); k >= 0 {
				return i + k
			}
			return -1
		}
	}
	return -1
}

package analyzelogs

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

const (
	// blockSize is the read size: large enough that the per-block overhead
	// (one call per pattern) vanishes, small enough to stay in L2 cache while
	// every pattern sweeps it.
	blockSize = 256 << 10
	// MaxLineBytes bounds a single line. Lines are matched whole (as Python
	// does), so the buffer grows to hold the longest line; past this size the
	// input is more likely a binary file than a log.
	MaxLineBytes = 256 << 20
)

// Rule is one named pattern. Exactly one of Literal or Regexp is set.
type Rule struct {
	Name    string
	Literal string
	Regexp  string
}

// Scanner counts lines and, per line, the first rule that matches. It is
// safe for concurrent use: Scan keeps its state on the stack.
type Scanner struct {
	rules     []rule
	samples   int
	sampleLen int
	// Buffer sizes; tests shrink them to exercise block boundaries.
	blockLen, maxLine int
	// afterMap, set by tests, runs after each window of a file is mapped.
	afterMap func()
	// noFused, set by tests, keeps the scan off the one-pass kernel.
	noFused bool
	// hist is the byte histogram of the last full sample (see
	// sampleHistogram).
	hist atomic.Pointer[[256]uint32]
	// planned is the last plan made and the histogram it came from: a
	// small file borrows the histogram, so its plan is the same as the
	// one before, and making it again (a dozen allocations) cost as much
	// as scanning the file.
	planned atomic.Pointer[plan]
	// states recycles the per-scan state between inputs.
	states sync.Pool
}

type rule struct {
	name string
	// lits are the prefilter of literals and of regular expressions that
	// need one of a few literals: a line can only match if it holds one.
	lits [][]byte
	// re checks a candidate line (without its line break); nil for literals,
	// where finding the literal is the match.
	re *regexp.Regexp
	// pre is the block-wide prefilter of a regular expression without
	// required literals; with neither lits nor pre, every line is a
	// candidate (expressions with \A or \z, whose meaning differs between
	// a block and a lone line).
	pre *regexp.Regexp
}

// NewScanner compiles rules; samples is how many matching lines to keep per
// rule and sampleLen how many bytes of each.
func NewScanner(rules []Rule, samples, sampleLen int) (*Scanner, error) {
	s := &Scanner{samples: samples, sampleLen: sampleLen, blockLen: blockSize, maxLine: MaxLineBytes}
	for _, r := range rules {
		if r.Regexp == "" {
			if r.Literal == "" || strings.ContainsAny(r.Literal, "\r\n") {
				return nil, fmt.Errorf("pattern %q: a literal must be non-empty and on one line", r.Name)
			}
			s.rules = append(s.rules, rule{name: r.Name, lits: [][]byte{[]byte(r.Literal)}})
			continue
		}
		re, pre, lits, err := compileRegexp(r.Regexp)
		if err != nil {
			return nil, fmt.Errorf("pattern %q: %w", r.Name, err)
		}
		if lits != nil {
			pre = nil // finding literals is much faster than any regexp scan
		}
		s.rules = append(s.rules, rule{name: r.Name, re: re, pre: pre, lits: lits})
	}
	return s, nil
}

// compileRegexp returns the line matcher and, when it is sound, a block-wide
// prefilter: the same expression in multi-line mode, where `$` also accepts a
// carriage return before the line feed. For any line that matches on its own
// the prefilter matches at or before that line, so checking only the lines
// where the prefilter matches loses nothing.
//
// lits, when not nil, are literals of which every match holds at least one.
func compileRegexp(src string) (line, block *regexp.Regexp, lits [][]byte, err error) {
	line, err = regexp.Compile(src)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("invalid regular expression %q: %v", src, strings.TrimPrefix(err.Error(), "error parsing regexp: "))
	}
	if re, err := syntax.Parse(src, syntax.Perl); err == nil {
		if set, ok := required(re.Simplify()); ok {
			for _, l := range set {
				lits = append(lits, []byte(l))
			}
		}
	}
	// Parse as the multi-line form: ^ and $ at every line boundary.
	re, err := syntax.Parse(src, syntax.Perl&^syntax.OneLine)
	if err != nil || !blockSafe(re) {
		return line, nil, lits, nil
	}
	rewriteEndLine(re)
	block, err = regexp.Compile(re.String())
	if err != nil {
		return line, nil, lits, nil
	}
	return line, block, lits, nil
}

// maxLits bounds the literal set of a prefilter: each literal is one more
// sweep of every block.
const maxLits = 6

// required returns literals at least one of which occurs in every match of
// re, or false when there is no such small set (a match may be empty, or
// case-folded, or made of character classes only).
func required(re *syntax.Regexp) ([]string, bool) {
	switch re.Op {
	case syntax.OpLiteral:
		if re.Flags&syntax.FoldCase != 0 {
			return nil, false
		}
		return []string{string(re.Rune)}, true
	case syntax.OpCapture:
		return required(re.Sub[0])
	case syntax.OpPlus:
		return required(re.Sub[0])
	case syntax.OpRepeat:
		if re.Min >= 1 {
			return required(re.Sub[0])
		}
	case syntax.OpConcat:
		// Any one element's set will do; prefer the one whose shortest
		// literal is longest, as it produces the fewest false candidates.
		var best []string
		bestLen := 0
		for _, sub := range re.Sub {
			set, ok := required(sub)
			if !ok {
				continue
			}
			short := len(set[0])
			for _, l := range set {
				short = min(short, len(l))
			}
			if short > bestLen {
				best, bestLen = set, short
			}
		}
		return best, best != nil
	case syntax.OpAlternate:
		var all []string
		for _, sub := range re.Sub {
			set, ok := required(sub)
			if !ok {
				return nil, false
			}
			all = append(all, set...)
		}
		if len(all) > maxLits {
			return nil, false
		}
		return all, true
	}
	return nil, false
}

// blockSafe reports whether re has no text-boundary assertions, the only
// constructs (besides `$` before CR, handled by rewriteEndLine) whose result
// differs between a lone line and the same line inside a block.
func blockSafe(re *syntax.Regexp) bool {
	switch re.Op {
	case syntax.OpBeginText, syntax.OpEndText:
		return false
	}
	for _, s := range re.Sub {
		if !blockSafe(s) {
			return false
		}
	}
	return true
}

func rewriteEndLine(re *syntax.Regexp) {
	for i, s := range re.Sub {
		if s.Op == syntax.OpEndLine {
			cr := &syntax.Regexp{Op: syntax.OpLiteral, Rune: []rune{'\r'}}
			opt := &syntax.Regexp{Op: syntax.OpQuest, Sub: []*syntax.Regexp{cr}}
			re.Sub[i] = &syntax.Regexp{Op: syntax.OpConcat, Sub: []*syntax.Regexp{opt, s}}
			continue
		}
		rewriteEndLine(s)
	}
	if re.Op == syntax.OpEndLine {
		// A bare `$` at the top: wrap in place.
		cp := *re
		cr := &syntax.Regexp{Op: syntax.OpLiteral, Rune: []rune{'\r'}}
		*re = syntax.Regexp{Op: syntax.OpConcat, Sub: []*syntax.Regexp{{Op: syntax.OpQuest, Sub: []*syntax.Regexp{cr}}, &cp}}
	}
}

// Counts is the outcome of one scan.
type Counts struct {
	Lines   int64
	Counts  []int64    // per rule, in rule order
	Samples [][]string // per rule, when samples were asked for
}

// ErrLineTooLong is returned (wrapped) for a line longer than MaxLineBytes.
var ErrLineTooLong = errors.New("line too long")

var gzipMagic = []byte{0x1f, 0x8b}

// ScanFile scans r, decompressing it first when it starts with the gzip
// magic bytes.
func (s *Scanner) ScanFile(ctx context.Context, r io.Reader) (Counts, error) {
	return s.scanFile(ctx, r, -1)
}

// scanFile is ScanFile for an input whose size at open is known (size >= 0)
// or not (-1). A known size saves the read that would only find the end: a
// 4 KiB log is then one read(2), not two, which counts when there are ten
// thousand of them. The input is sniffed for gzip in the first block
// itself, not by a separate two-byte read.
func (s *Scanner) scanFile(ctx context.Context, r io.Reader, size int64) (Counts, error) {
	if size >= 0 {
		r = &sizedReader{r: r, left: size}
	}
	return s.scanRead(ctx, r)
}

// scanRead is scanFile after the choice of reader.
func (s *Scanner) scanRead(ctx context.Context, r io.Reader) (Counts, error) {
	pooled := s.getBlock()
	defer s.putBlock(pooled)
	buf := *pooled
	n, err := readFull(r, buf)
	if err != nil && err != io.EOF {
		return Counts{}, err
	}
	return s.scanHead(ctx, r, buf, n, err == io.EOF)
}

// scanHead is scanRead with the first block, buf[:n], already read from r
// (eof: and r is done).
func (s *Scanner) scanHead(ctx context.Context, r io.Reader, buf []byte, n int, eof bool) (Counts, error) {
	if n >= 2 && bytes.Equal(buf[:2], gzipMagic) {
		head := io.Reader(bytes.NewReader(bytes.Clone(buf[:n])))
		if !eof {
			head = io.MultiReader(head, r)
		}
		return s.scanGzip(ctx, head)
	}
	return s.scan(ctx, r, buf, n, eof)
}

func (s *Scanner) scanGzip(ctx context.Context, r io.Reader) (Counts, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	zr, err := gzip.NewReader(br)
	if err != nil {
		return Counts{}, fmt.Errorf("reading gzip header: %w", err)
	}
	defer zr.Close()
	zr.Multistream(false)
	c, err := s.Scan(ctx, &gzipMembers{ctx: ctx, br: br, zr: zr})
	if err != nil && !errors.Is(err, ErrTrailingGarbage) && ctx.Err() == nil {
		return c, fmt.Errorf("decompressing: %w", err)
	}
	return c, err
}

// sizedReader ends the input at the first short read that reaches the size
// the file had when it was opened: for a regular file a short read means
// its end, and asking again would only return 0. A file that grew since is
// read on (a read that is not short, or one past the size), one that shrank
// ends where the reads end; either way every count describes bytes that
// were in the file.
type sizedReader struct {
	r    io.Reader
	left int64
}

// sizedReader returns l from where it is, read bytes in, ending at its
// size at stat (see sizedReader).
func (l *logFile) sizedReader(read int) io.Reader {
	l.sized = sizedReader{r: l, left: l.size - int64(read)}
	return &l.sized
}

func (z *sizedReader) Read(p []byte) (int, error) {
	n, err := z.r.Read(p)
	z.left -= int64(n)
	if err == nil && n > 0 && n < len(p) && z.left <= 0 {
		err = io.EOF
	}
	return n, err
}

// blocks recycles read buffers of blockSize between files: allocating (and
// zeroing) a fresh 256 KiB buffer per file cost more than scanning a small
// file, and the garbage it left kept the collector busy. A pool is per P,
// so a buffer tends to stay in the cache of the core that last used it.
// Allocations this large are page-aligned by the runtime, as read(2) likes.
var blocks = newBufPool(blockSize)

// probeSize is the first read of a file (see scanOSFile): the whole of a
// small one.
const probeSize = 64 << 10

var probes = newBufPool(probeSize)

// bufPool recycles buffers of one size.
type bufPool struct {
	size int
	pool sync.Pool
}

func newBufPool(size int) *bufPool {
	p := &bufPool{size: size}
	p.pool.New = func() any {
		b := make([]byte, size)
		return &b
	}
	return p
}

// get returns a buffer of the pool's size, or of n bytes (two at least, to
// see the gzip magic) when n is shorter: tests shrink blockLen to exercise
// block boundaries, and such a buffer is not pooled.
func (p *bufPool) get(n int) *[]byte {
	if n >= p.size {
		return p.pool.Get().(*[]byte)
	}
	b := make([]byte, max(n, 2))
	return &b
}

func (p *bufPool) put(b *[]byte) {
	if len(*b) == p.size {
		p.pool.Put(b)
	}
}

// getBlock returns a read buffer of s.blockLen bytes.
func (s *Scanner) getBlock() *[]byte { return blocks.get(s.blockLen) }

func (s *Scanner) putBlock(b *[]byte) { blocks.put(b) }

// getProbe returns a buffer for the first read of a file, no longer than
// a block.
func (s *Scanner) getProbe() *[]byte { return probes.get(s.blockLen) }

func (s *Scanner) putProbe(b *[]byte) { probes.put(b) }

// ErrTrailingGarbage is returned (wrapped) for bytes after the end of gzip
// data that are neither another gzip member nor zero padding.
var ErrTrailingGarbage = errors.New("the file has bytes after its gzip data that are not gzip data")

// gzipMembers reads the members of a gzip file one after the other, as
// `gzip -d` and Python's gzip module do, and skips zero bytes after a
// member: tapes and some copying tools pad files with them, `gzip -t`
// accepts them and Python skips them. compress/gzip alone reads such
// padding as a broken header. Anything else after a member fails the file,
// as it does in Python.
type gzipMembers struct {
	ctx context.Context
	br  *bufio.Reader // zr reads from it, so what it holds is what follows
	zr  *gzip.Reader
}

func (g *gzipMembers) Read(p []byte) (int, error) {
	for {
		n, err := g.zr.Read(p)
		if err != io.EOF || n > 0 {
			if err == io.EOF {
				err = nil // the next call finds the end of the member again
			}
			return n, err
		}
		more, err := g.next()
		if err != nil || !more {
			if err == nil {
				err = io.EOF
			}
			return 0, err
		}
	}
}

// next skips the zero padding after a member and starts the member that
// follows it; false means the input ended.
func (g *gzipMembers) next() (bool, error) {
	for {
		if err := g.ctx.Err(); err != nil {
			return false, err
		}
		b, err := g.br.Peek(1)
		if err == io.EOF {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if b[0] != 0 {
			break
		}
		// Discard the run of zeros the buffer holds, not byte by byte.
		buf, _ := g.br.Peek(g.br.Buffered())
		z := len(buf)
		for i, c := range buf {
			if c != 0 {
				z = i
				break
			}
		}
		_, _ = g.br.Discard(max(z, 1))
	}
	if err := g.zr.Reset(g.br); err != nil {
		return false, fmt.Errorf("%w (%v); the file may be damaged, check it with 'gzip -t'", ErrTrailingGarbage, err)
	}
	g.zr.Multistream(false)
	return true, nil
}

// Scan counts the lines of r as Python's `for line in f` does (a last line
// without a line break counts) and, for each line, the first rule that
// matches it. It reads in large blocks and never allocates per line.
func (s *Scanner) Scan(ctx context.Context, r io.Reader) (Counts, error) {
	pooled := s.getBlock()
	defer s.putBlock(pooled)
	return s.scan(ctx, r, *pooled, 0, false)
}

// scan is Scan with buf[:have] already read from r (eof: and r is done).
func (s *Scanner) scan(ctx context.Context, r io.Reader, buf []byte, have int, eof bool) (Counts, error) {
	c := Counts{Counts: make([]int64, len(s.rules))}
	if s.samples > 0 {
		c.Samples = make([][]string, len(s.rules))
	}
	st := s.getState()
	defer s.putState(st)
	// buf[:have] holds data and starts at a line start.
	planned := false
	filled := have > 0 || eof
	for {
		if err := ctx.Err(); err != nil {
			return c, err
		}
		if !filled {
			n, rerr := readFull(r, buf[have:])
			have += n
			eof = rerr == io.EOF
			if rerr != nil && !eof {
				return c, rerr
			}
		}
		filled = false
		if !planned {
			st.plan(s, buf[:have])
			planned = true
		}
		last := bytes.LastIndexByte(buf[:have], '\n')
		switch {
		case last >= 0:
			s.lines(&c, buf[:last+1], st)
			have = copy(buf, buf[last+1:have])
		case have == len(buf) && !eof:
			// One line fills the buffer: grow it to hold the whole line.
			if len(buf) >= s.maxLine {
				return c, fmt.Errorf("%w: line %d is longer than %d bytes; is this a text file?", ErrLineTooLong, c.Lines+1, s.maxLine)
			}
			nb := make([]byte, min(2*len(buf), s.maxLine))
			copy(nb, buf[:have])
			buf = nb
		}
		if eof {
			if have > 0 {
				// The final line has no line break; it still counts.
				s.lines(&c, buf[:have], st)
			}
			return c, nil
		}
	}
}

// readFull reads until p is full or the input ends; io.EOF is returned only
// at the end of the input.
func readFull(r io.Reader, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := r.Read(p[n:])
		n += m
		if err != nil {
			return n, err
		}
		if m == 0 && n > 0 {
			// A reader returning 0, nil is allowed; do not spin on it once
			// something is in hand.
			break
		}
	}
	return n, nil
}

// lines processes whole lines: b ends with a line feed, except for the last
// line of an input that has none.
//
// A lone carriage return ends a line too, as in Python's text mode. Blocks
// without lone carriage returns should not pay for that: where the
// one-pass kernel has a free slot (see withCR), it watches for carriage
// returns itself, in the same pass (one before a line feed only ends its
// line, as always), and the block is counted again (lone ones turned into
// line feeds, see universal) only if it stopped at a lone one. Elsewhere,
// and after a block that had lone ones, a search for carriage returns comes
// first.
func (s *Scanner) lines(c *Counts, b []byte, st *state) {
	switch {
	case st.crlfBreaks && st.direct != nil && !st.dense:
		st.save(c)
		if b[len(b)-1] != '\n' {
			c.Lines++
		}
		if s.linesDirect(c, b, st, st.set, true, true) {
			return
		}
		st.restore(c)
	case st.crSet != 0 && !st.crSeen:
		st.save(c)
		if s.countBlock(c, b, st, st.crSet, true) {
			return
		}
		st.restore(c)
	}
	lone := false
	if i := bytes.IndexByte(b, '\r'); i >= 0 {
		b, lone = st.universal(b, i)
		if !lone {
			st.crlfBreaks = true // CRLF line breaks: see crlfBreaks
		}
	}
	st.crSeen = lone
	s.countBlock(c, b, st, st.set, false)
}

// countBlock counts the lines of b, stopping the kernel at the bytes of
// set. With watchCR, set holds the carriage return too, and countBlock
// gives up (false, with c half updated) at the first lone one it sees.
func (s *Scanner) countBlock(c *Counts, b []byte, st *state, set uint32, watchCR bool) bool {
	if b[len(b)-1] != '\n' {
		c.Lines++
	}
	if st.fused {
		if st.direct != nil && !st.dense {
			return s.linesDirect(c, b, st, set, watchCR, false)
		}
		return s.linesFused(c, b, st, set, watchCR)
	}
	c.Lines += int64(bytes.Count(b, []byte{'\n'}))
	if len(s.rules) == 0 {
		return true
	}
	st.reset()
	for i := range s.rules {
		st.next[i] = s.rules[i].find(b, 0, st.lits[i], st.by[i])
	}
	for {
		m := len(b)
		for _, p := range st.next {
			m = min(m, p)
		}
		if m >= len(b) {
			return true
		}
		line, le := lineAround(b, 0, m) // the line of the earliest candidate
		winner := -1
		for i := range s.rules {
			if st.next[i] > le {
				continue
			}
			if winner < 0 && s.rules[i].check(line) {
				winner = i
			}
			st.next[i] = s.rules[i].find(b, le+1, st.lits[i], st.by[i])
		}
		if winner >= 0 {
			c.Counts[winner]++
			if s.samples > 0 && len(c.Samples[winner]) < s.samples {
				c.Samples[winner] = append(c.Samples[winner], Clip(line, s.sampleLen))
			}
		}
	}
}

// universal returns b with every lone carriage return (one not followed by
// a line feed) turned into a line feed, so that it ends a line as in
// Python's text mode (universal newlines). b[i] is its first carriage
// return. b itself is never written (it may be a read-only mapping): a
// copy is made, and only when a lone carriage return exists. A block ends
// with a line feed unless the input ends with it, so a carriage return at
// the end of b is lone, and one before a block boundary cannot be split
// from its line feed.
func (st *state) universal(b []byte, i int) (_ []byte, lone bool) {
	for {
		if i+1 == len(b) || b[i+1] != '\n' {
			break // a lone one
		}
		j := bytes.IndexByte(b[i+2:], '\r')
		if j < 0 {
			return b, false // CRLF line breaks only
		}
		i += 2 + j
	}
	if cap(st.crlf) < len(b) {
		st.crlf = make([]byte, len(b))
	}
	out := st.crlf[:len(b)]
	copy(out, b)
	for ; i < len(out); i++ {
		if out[i] == '\r' && (i+1 == len(out) || out[i+1] != '\n') {
			out[i] = '\n'
		}
	}
	return out, true
}

// state is the per-scan position of every rule in the current block.
type state struct {
	next []int    // per rule: the next candidate offset
	lits [][]int  // per rule and literal: the next occurrence, -1 if unknown
	by   [][]pick // per rule and literal: how it is searched, nil until planned
	// fused says lines go through the one-pass kernel, stopping at the
	// bytes packed in set (see linesFused).
	fused bool
	set   uint32
	// back is the longest literal's length less one when every rule is a
	// literal, else -1.
	back int
	// direct, when every rule is a literal, says per rule where its
	// picked byte sits, for linesDirect. dense is set after a block where
	// the picked bytes were too frequent for it; the rest of the input then
	// goes line by line.
	direct []direct
	dense  bool
	// crSet is set with the carriage return added, when the kernel has
	// room for it (0 otherwise); crSeen says the last block held one, so
	// the next one searches for them first (see lines).
	crSet  uint32
	crSeen bool
	// crlfBreaks says the input has CRLF line breaks: stopping at every
	// carriage return would then cost a stop per line (twice the time of
	// a file with LF breaks), so the direct path uses the kernel that
	// flags lone carriage returns only (nextChunkCR).
	crlfBreaks bool
	// crlf holds the copy of a block whose lone carriage returns were
	// turned into line feeds (see universal).
	crlf []byte
	// saved is c before a block counted with crSet, to start it again.
	saved struct {
		lines   int64
		counts  []int64
		samples []int
	}
}

func (st *state) save(c *Counts) {
	st.saved.lines = c.Lines
	st.saved.counts = append(st.saved.counts[:0], c.Counts...)
	st.saved.samples = st.saved.samples[:0]
	for _, l := range c.Samples {
		st.saved.samples = append(st.saved.samples, len(l))
	}
}

func (st *state) restore(c *Counts) {
	c.Lines = st.saved.lines
	copy(c.Counts, st.saved.counts)
	for i, n := range st.saved.samples {
		c.Samples[i] = c.Samples[i][:n]
	}
}

type direct struct {
	lit []byte
	off int  // offset of the picked byte in lit
	c   byte // the picked byte
}

func newState(rules []rule) *state {
	st := &state{next: make([]int, len(rules)), lits: make([][]int, len(rules))}
	for i, r := range rules {
		st.lits[i] = make([]int, len(r.lits))
	}
	return st
}

// getState returns a state for a new input, reset.
func (s *Scanner) getState() *state {
	st, _ := s.states.Get().(*state)
	if st == nil {
		return newState(s.rules)
	}
	crlf := st.crlf
	*st = state{next: st.next, lits: st.lits, crlf: crlf, saved: st.saved}
	return st
}

func (s *Scanner) putState(st *state) {
	if cap(st.crlf) > 2*blockSize {
		st.crlf = nil // after a very long line: do not keep its copy
	}
	s.states.Put(st)
}

// plan is how each literal is searched and which kernel counts; see
// state for the fields. Once made it is only read.
type plan struct {
	hist       *[256]uint32
	by         [][]pick
	fused      bool
	set, crSet uint32
	back       int
	direct     []direct
}

// plan picks how each literal is searched from the bytes of the first block,
// which are taken to be typical of the input.
func (st *state) plan(s *Scanner, first []byte) {
	var h *[256]uint32
	for _, r := range s.rules {
		if len(r.lits) > 0 {
			h = s.sampleHistogram(first)
			break
		}
	}
	p := s.planned.Load()
	if p == nil || p.hist != h {
		p = s.makePlan(h)
		s.planned.Store(p)
	}
	st.by, st.fused, st.set, st.crSet, st.back, st.direct = p.by, p.fused, p.set, p.crSet, p.back, p.direct
}

func (s *Scanner) makePlan(h *[256]uint32) *plan {
	rules := s.rules
	p := &plan{hist: h, by: make([][]pick, len(rules))}
	for i, r := range rules {
		if len(r.lits) == 0 {
			continue
		}
		p.by[i] = make([]pick, len(r.lits))
		for j, lit := range r.lits {
			p.by[i][j] = choose(lit, h)
		}
	}
	// The kernel stops at the picked bytes; sharing one between literals
	// (see share) leaves it fewer to stop at, and room to watch for
	// carriage returns.
	fb := share(rules, p.by, h)
	p.fused, p.set = fusedSet(s, fb)
	if p.fused {
		p.crSet = withCR(p.set)
	}
	for i, r := range rules {
		if r.re != nil {
			p.back, p.direct = -1, nil
			break
		}
		p.back = max(p.back, len(r.lits[0])-1)
		if p.fused {
			off := fb[i][0].rare
			p.direct = append(p.direct, direct{lit: r.lits[0], off: off, c: r.lits[0][off]})
		}
	}
	return p
}

// sampleHistogram ranks the bytes of the start of an input. An input
// shorter than a sample (a small file) says little about byte frequencies,
// and counting it would cost as much as scanning it: it borrows the
// histogram of an earlier input of this scanner, if there is one. Which
// bytes the search stops at only changes its speed, never its counts.
func (s *Scanner) sampleHistogram(b []byte) *[256]uint32 {
	if len(b) < sampleBytes {
		if h := s.hist.Load(); h != nil {
			return h
		}
	}
	h := histogram(b)
	if len(b) >= sampleBytes || s.hist.Load() == nil {
		s.hist.Store(h)
	}
	return h
}

// share returns picks for the one-pass kernel: by, with each literal
// searched by a byte picked for another literal when it holds one (the byte
// picked for most literals first). The bytes picked are then a subset of
// by's, so the kernel stops no more often, and fewer bytes leave it a free
// slot for the carriage return (see withCR): "ERROR" and "WARN", picked by
// 'R' and 'W', both go by 'R'. by itself stays as it is for the searches of
// the other paths, where a literal's own rarest byte is best.
func share(rules []rule, by [][]pick, h *[256]uint32) [][]pick {
	var picked [256]bool
	for i, r := range rules {
		for j := range r.lits {
			picked[r.lits[j][by[i][j].rare]] = true
		}
	}
	var n [256]int // for each picked byte, the literals that hold it
	for _, r := range rules {
		for _, lit := range r.lits {
			var seen [256]bool
			for _, c := range lit {
				if picked[c] && !seen[c] {
					seen[c] = true
					n[c]++
				}
			}
		}
	}
	out := make([][]pick, len(by))
	for i, r := range rules {
		if by[i] == nil {
			continue
		}
		out[i] = slices.Clone(by[i])
		for j, lit := range r.lits {
			p := &out[i][j]
			best := lit[p.rare]
			for k, c := range lit {
				if n[c] > 0 && (n[c] > n[best] || n[c] == n[best] && h[c] < h[best]) {
					best, p.rare = c, k
				}
			}
		}
	}
	return out
}

// fusedSet says whether the one-pass kernel can serve these rules, and with
// which bytes: every rule must have literals (a line can only match if it
// holds one), and their picked bytes must number four at most.
func fusedSet(s *Scanner, by [][]pick) (bool, uint32) {
	if !haveFused || s.noFused || len(s.rules) == 0 {
		return false, 0
	}
	var set []byte
	for i, r := range s.rules {
		if len(r.lits) == 0 {
			return false, 0
		}
		for j, lit := range r.lits {
			if c := lit[by[i][j].rare]; !slices.Contains(set, c) {
				set = append(set, c)
			}
		}
	}
	if len(set) > 4 {
		return false, 0
	}
	var packed uint32
	for k := range 4 {
		packed |= uint32(set[k%len(set)]) << (8 * k)
	}
	return true, packed
}

// withCR returns set with the carriage return among its bytes when that
// costs the kernel nothing, and 0 otherwise. One byte or three become two
// or four, which the kernel compares anyway; two would become three, which
// the kernel compares as four, and four leave no room: those search for a
// carriage return first (measured on the benchmark's logs, both cost about
// the same, a quarter of the kernel's time on data in cache).
func withCR(set uint32) uint32 {
	var bs []byte
	for k := range 4 {
		if c := byte(set >> (8 * k)); !slices.Contains(bs, c) {
			bs = append(bs, c)
		}
	}
	switch {
	case slices.Contains(bs, '\r'):
		return set
	case len(bs) != 1 && len(bs) != 3:
		return 0
	}
	bs = append(bs, '\r')
	var packed uint32
	for k := range 4 {
		packed |= uint32(bs[k%len(bs)]) << (8 * k)
	}
	return packed
}

// linesFused is lines in one pass over b: the kernel counts line feeds until
// a byte that some literal holds, and the line around that byte is checked
// against every rule in turn. Every line that matches holds one of those
// bytes, so no match is missed; a line is checked at most once, since the
// scan resumes after it. Where those bytes are rare (the search picks the
// rarest byte of each literal from the input itself), b is read once
// instead of once for line feeds and once per literal.
//
// With watchCR it returns false at the first lone carriage return: the
// kernel stops at every carriage return, and the rest of a candidate line,
// which the kernel skips, is searched for one.
func (s *Scanner) linesFused(c *Counts, b []byte, st *state, set uint32, watchCR bool) bool {
	p := 0
	for p < len(b) {
		nl, at := nextCand(b[p:], set)
		c.Lines += int64(nl)
		if at < 0 {
			return true
		}
		m := p + at
		if watchCR && b[m] == '\r' {
			if m+1 < len(b) && b[m+1] == '\n' {
				c.Lines++ // a CRLF: its line feed ends the line
				p = m + 2
				continue
			}
			return false
		}
		// The kernel saw every byte from p to m and stopped at none, so an
		// occurrence of a literal that starts more than back bytes before
		// m would have stopped it: checking literals needs only the end of
		// the line from there. Regular expressions need the whole line.
		from := p
		if st.back >= 0 {
			from = max(p, m-st.back)
		}
		line, le := lineAround(b, from, m)
		if watchCR {
			// The kernel skips the rest of the line: a carriage return
			// there must be the one of a CRLF.
			if i := bytes.IndexByte(b[m:le], '\r'); i >= 0 && (m+i != le-1 || le == len(b)) {
				return false
			}
		}
		if le < len(b) {
			c.Lines++
		}
		for i := range s.rules {
			r := &s.rules[i]
			if r.re != nil {
				if !r.re.Match(line) {
					continue
				}
			} else if !bytes.Contains(line, r.lits[0]) {
				continue
			}
			c.Counts[i]++
			if s.samples > 0 && len(c.Samples[i]) < s.samples {
				whole, _ := lineAround(b, p, m)
				c.Samples[i] = append(c.Samples[i], Clip(whole, s.sampleLen))
			}
			break
		}
		p = le + 1
	}
	return true
}

// linesDirect is linesFused for rules that are all literals, without
// looking for line boundaries: the kernel hands over each 64-byte chunk that
// holds a picked byte, with a mask of those bytes and one of the line feeds,
// and at each picked byte the literals picked by it are compared in place.
// Every occurrence of a literal has its picked byte somewhere, so each one
// is seen; a line's rule is the first (in rule order) of those seen in it,
// and a line ends at a line feed of the masks. Lines with no picked byte
// cost nothing beyond the kernel's pass.
//
// With watchCR it returns false at the first lone carriage return: set
// holds the carriage return, and the kernel sees every byte. With crKernel
// too, set does not hold it: the kernel marks lone ones only, so that the
// carriage returns of CRLF breaks cost nothing.
func (s *Scanner) linesDirect(c *Counts, b []byte, st *state, set uint32, watchCR, crKernel bool) bool {
	var (
		best  = -1 // the pending line's rule so far
		at    int  // where it was seen
		stops int
		crlfs int // CRLF breaks seen at stops
	)
	// feeds accounts for the line feeds marked in lf; the first one ends
	// the pending line.
	feeds := func(lf uint64) {
		if lf != 0 {
			if best >= 0 {
				s.count(c, b, best, at)
				best = -1
			}
			c.Lines += int64(bits.OnesCount64(lf))
		}
	}
	stop := func(m int) {
		stops++
		for i := range st.direct {
			if best >= 0 && i >= best {
				return
			}
			d := &st.direct[i]
			if start := m - d.off; d.c == b[m] && start >= 0 && start+len(d.lit) <= len(b) && bytes.Equal(b[start:start+len(d.lit)], d.lit) {
				best, at = i, m
			}
		}
	}
	whole := len(b) &^ 63
	chunk := nextChunk
	if crKernel {
		// The kernel reads the byte after each chunk.
		whole = (len(b) - 1) &^ 63
		chunk = nextChunkCR
	}
	for p := 0; p < whole; {
		nl, off, cand, lf := chunk(b[p:whole], set)
		if nl > 0 {
			feeds(1) // any line feed before the chunk ends the pending line
			c.Lines += int64(nl - 1)
		}
		if off < 0 {
			break
		}
		base := p + off
		done := uint64(0) // bits of the chunk already accounted for
		for cand != 0 {
			q := bits.TrailingZeros64(cand)
			below := uint64(1)<<q - 1
			if watchCR && b[base+q] == '\r' {
				if base+q+1 < len(b) && b[base+q+1] == '\n' {
					cand &= cand - 1 // a CRLF: its line feed ends the line
					crlfs++
					continue
				}
				return false
			}
			feeds(lf & below &^ done)
			stop(base + q)
			done = below | uint64(1)<<q
			cand &= cand - 1
		}
		feeds(lf &^ done)
		p = base + 64
	}
	for i := whole; i < len(b); i++ {
		if crKernel && b[i] == '\r' && (i+1 == len(b) || b[i+1] != '\n') {
			return false
		}
		switch b[i] {
		case '\n':
			feeds(1)
		case byte(set), byte(set >> 8), byte(set >> 16), byte(set >> 24):
			if watchCR && b[i] == '\r' {
				if i+1 < len(b) && b[i+1] == '\n' {
					continue
				}
				return false
			}
			stop(i)
		}
	}
	if best >= 0 {
		s.count(c, b, best, at)
	}
	// A stop every 16 bytes costs more than finding each line's bounds:
	// the next blocks go line by line (see linesFused).
	st.dense = stops > 64+len(b)/16
	if crlfs > 8 {
		st.crlfBreaks = true
	}
	return true
}

// lineAround returns the line of b holding b[at], without its line break,
// and the offset of its line feed (len(b) when the line has none). The line
// is taken to start after the last line feed of b[from:at], or at from if
// there is none: callers pass a line start, or a later point when only the
// end of the line matters.
func lineAround(b []byte, from, at int) (line []byte, le int) {
	ls := from + bytes.LastIndexByte(b[from:at], '\n') + 1
	le = bytes.IndexByte(b[at:], '\n')
	if le < 0 {
		le = len(b)
	} else {
		le += at
	}
	line = b[ls:le]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return line, le
}

// count records rule i for the line holding b[at].
func (s *Scanner) count(c *Counts, b []byte, i, at int) {
	c.Counts[i]++
	if s.samples > 0 && len(c.Samples[i]) < s.samples {
		line, _ := lineAround(b, 0, at)
		c.Samples[i] = append(c.Samples[i], Clip(line, s.sampleLen))
	}
}

func (st *state) reset() {
	for _, l := range st.lits {
		for j := range l {
			l[j] = -1
		}
	}
}

// none is the offset find returns when a rule has no candidate in b: past
// the end of even an unterminated last line.
func none(b []byte) int { return len(b) + 1 }

// find returns the offset in b, at or after from, of the next place where the
// rule may match, or none(b). at caches the next occurrence of each literal
// so that a rare literal is not searched for again after every line where a
// frequent one occurs; by holds the byte each literal is searched by.
func (r *rule) find(b []byte, from int, at []int, by []pick) int {
	if from >= len(b) {
		return none(b)
	}
	switch {
	case r.lits != nil:
		best := none(b)
		for j, lit := range r.lits {
			if at[j] < from {
				if i := index(b[from:], lit, by[j]); i >= 0 {
					at[j] = from + i
				} else {
					at[j] = none(b)
				}
			}
			best = min(best, at[j])
		}
		return best
	case r.pre != nil:
		if loc := r.pre.FindIndex(b[from:]); loc != nil {
			return from + loc[0]
		}
		return none(b)
	}
	return from // every line is a candidate
}

// check confirms a candidate line. A literal candidate is already a match.
func (r *rule) check(line []byte) bool {
	return r.re == nil || r.re.Match(line)
}

// Clip renders a line as valid UTF-8 of at most n bytes, marking a cut with
// an ellipsis.
func Clip(line []byte, n int) string {
	cut := false
	if len(line) > n {
		line = line[:n]
		// Do not split a multi-byte character.
		for i := 0; i < utf8.UTFMax && len(line) > 0; i++ {
			r, size := utf8.DecodeLastRune(line)
			if r != utf8.RuneError || size > 1 {
				break
			}
			line = line[:len(line)-1]
		}
		cut = true
	}
	s := strings.ToValidUTF8(string(line), "\uFFFD")
	if cut {
		s += "…"
	}
	return s
}

// scanBytes counts the lines of data, which starts at a line start, in
// blocks of blockLen, as Scan does for what it reads. It returns how many
// bytes it consumed: up to the last line break, or everything when final
// (the input ends with data). A line that does not end within data and is
// not final is left for the caller, who must supply more of it.
func (s *Scanner) scanBytes(ctx context.Context, c *Counts, st *state, data []byte, final bool) (int, error) {
	p := 0
	for p < len(data) {
		if err := ctx.Err(); err != nil {
			return p, err
		}
		end := min(p+s.blockLen, len(data))
		if last := bytes.LastIndexByte(data[p:end], '\n'); last >= 0 {
			end = p + last + 1
		} else {
			// One line longer than a block: take all of it, as far as
			// the longest line allowed.
			k := bytes.IndexByte(data[end:max(end, min(p+s.maxLine, len(data)))], '\n')
			switch {
			case k >= 0:
				end += k + 1
			case len(data)-p > s.maxLine || len(data)-p == s.maxLine && !final:
				return p, fmt.Errorf("%w: line %d is longer than %d bytes; is this a text file?", ErrLineTooLong, c.Lines+1, s.maxLine)
			case final:
				end = len(data)
			default:
				return p, nil // the caller supplies the rest of the line
			}
		}
		s.lines(c, data[p:end], st)
		p = end
	}
	return p, nil
}

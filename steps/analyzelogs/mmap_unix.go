//go:build linux || darwin || freebsd

package analyzelogs

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"golang.org/x/sys/unix"
)

// A large file is read into a reused buffer, or mapped into memory, which
// saves copying every byte out of the page cache but pays a page fault per
// few pages and a TLB miss per page. Which is cheaper depends on the
// machine, not the file: on the 2-core AMD EPYC VM of issue 19, reading
// cost 0.27-0.29 s of CPU per GiB and mapping 0.70-0.86 s (with MAP_POPULATE,
// MADV_SEQUENTIAL, MADV_HUGEPAGE or MADV_WILLNEED alike), while elsewhere
// mapping had won. So the process measures both once, on the first large
// file, and keeps the cheaper (see chooseMapping).
const (
	// mmapMin is the smallest file worth mapping: below it the system calls
	// to set up and tear down a mapping cost more than the copy they save.
	mmapMin = 1 << 20
	// mmapWindow is the mapped span. Each window costs a mmap and a munmap,
	// but its touched pages count in the resident set: 16 MiB windows were
	// no faster than 4 MiB ones and tripled peak RSS (122 MB against 41 MB
	// with the benchmark's workers).
	mmapWindow = 4 << 20
)

// scanOSFile scans f: mapped when it is large, not gzip-compressed, and
// mapping is the cheaper way on this machine, read otherwise.
//
// The first bytes are read before anything else, with pread into a small
// pooled probe: a pipe, FIFO, socket or terminal refuses it (ESPIPE), a
// directory too (EISDIR). A read that comes back short but not empty is
// then the whole of a small regular file, as short reads of regular files
// happen only at their end (on local and network filesystems; FUSE with
// direct_io may answer short earlier): it is scanned without asking the
// file's type and size, which saves an fstat per file, a fifth of the
// system time over 10,000 files of 4 KiB. Any other outcome (an error, nothing, or a full
// probe: /dev/zero gives one) asks fstat, which refuses what is not a
// regular file and gives the size that large files go by.
//
// The probe is not the 256 KiB block: a large file takes its block only
// once it holds a scan slot, so that waiting workers hold no block and the
// few in use stay in cache. Reading the whole first block before the slot
// cost 5-8% more CPU over the 1 GiB benchmark.
func (s *Scanner) scanOSFile(ctx context.Context, f *logFile) (Counts, error) {
	pp := s.getProbe()
	probe := *pp
	n, rerr := f.pread(probe, 0)
	if rerr == nil && n < len(probe) {
		c, err := s.scanHead(ctx, nil, probe, n, true)
		s.putProbe(pp)
		return c, err
	}
	done := func(c Counts, err error) (Counts, error) {
		s.putProbe(pp)
		return c, err
	}
	if err := f.stat(); err != nil {
		return done(Counts{}, err)
	}
	if rerr != nil && rerr != io.EOF {
		return done(Counts{}, rerr)
	}
	if f.size >= bigFile {
		release, err := acquireSlot(ctx)
		if err != nil {
			return done(Counts{}, err)
		}
		defer release()
	}
	if f.size >= mmapMin && s.blockLen == blockSize && chooseMapping(f.fd, f.size) {
		c, ok, err := s.scanMapped(ctx, f.fd, f.size, mmapWindow)
		if ok {
			return done(c, err)
		}
		// Not mapped, nothing consumed: go on from the probe.
	}
	pooled := s.getBlock()
	defer s.putBlock(pooled)
	buf := *pooled
	copy(buf, probe[:n])
	s.putProbe(pp)
	f.off = int64(n)
	return s.scanHead(ctx, f.sizedReader(n), buf, n, rerr == io.EOF)
}

// scanMapped scans the first size bytes of f through windows of window
// bytes. ok is false, with nothing consumed, when the file cannot be
// mapped or is gzip-compressed: the caller reads it instead.
func (s *Scanner) scanMapped(ctx context.Context, fd int, size int64, window int) (c Counts, ok bool, err error) {
	c = Counts{Counts: make([]int64, len(s.rules))}
	if s.samples > 0 {
		c.Samples = make([][]string, len(s.rules))
	}
	st := s.getState()
	defer s.putState(st)
	page := int64(os.Getpagesize())
	var off int64 // the next line start
	for off < size {
		base := off &^ (page - 1)
		n := min(int64(window), size-base)
		m, merr := unix.Mmap(fd, base, int(n), unix.PROT_READ, unix.MAP_SHARED)
		if merr != nil {
			if off == 0 {
				return c, false, nil
			}
			return c, true, fmt.Errorf("mapping bytes %d-%d: %w", base, base+n, merr)
		}
		_ = unix.Madvise(m, unix.MADV_SEQUENTIAL)
		if s.afterMap != nil {
			s.afterMap()
		}
		final := base+n == size
		var used int
		gzipped := false
		used, gzipped, err = s.scanWindow(ctx, &c, st, m[off-base:], off == 0, final)
		if uerr := unix.Munmap(m); uerr != nil && err == nil {
			err = uerr
		}
		if gzipped {
			return c, false, nil
		}
		if err != nil {
			return c, true, err
		}
		if used == 0 && !final {
			// One line spans the whole window: map a larger one.
			if int64(window) > int64(s.maxLine)+page {
				return c, true, fmt.Errorf("%w: line %d is longer than %d bytes; is this a text file?", ErrLineTooLong, c.Lines+1, s.maxLine)
			}
			window *= 2
		}
		off += int64(used)
	}
	return c, true, nil
}

// scanWindow scans mapped bytes. A file that shrinks while it is mapped
// makes the pages past its new end fault (SIGBUS); the runtime turns the
// fault into a panic for this goroutine only, recovered here as an error.
func (s *Scanner) scanWindow(ctx context.Context, c *Counts, st *state, data []byte, first, final bool) (used int, gzipped bool, err error) {
	prev := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(prev)
		if r := recover(); r != nil {
			if _, fault := r.(interface{ Addr() uintptr }); !fault {
				panic(r)
			}
			err = fmt.Errorf("the file changed size while being read (it was truncated or rewritten); read it again once it is complete")
		}
	}()
	if first {
		if len(data) >= 2 && bytes.Equal(data[:2], gzipMagic) {
			return 0, true, nil
		}
		st.plan(s, data)
	}
	used, err = s.scanBytes(ctx, c, st, data, final)
	return used, false, err
}

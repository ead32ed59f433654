//go:build unix

package store

import (
	"os"
	"syscall"
)

func statOf(fi os.FileInfo) fileStat {
	st := fileStat{size: fi.Size(), mtimeNS: fi.ModTime().UnixNano()}
	if s, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.inode = int64(s.Ino)
		st.ctimeNS = ctimeNS(s)
	}
	return st
}

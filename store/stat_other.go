//go:build !unix

package store

import "os"

// Without inode and ctime, size and mtime decide.
func statOf(fi os.FileInfo) fileStat {
	return fileStat{size: fi.Size(), mtimeNS: fi.ModTime().UnixNano()}
}

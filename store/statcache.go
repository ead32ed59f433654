package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/flowrun/flow/store/cachekey"
)

// racyWindow: a file modified this recently may change again within the
// filesystem's timestamp granularity without its mtime moving (git's "racy
// clean" problem), so its digest is not remembered.
const racyWindow = 2 * time.Second

// fileStat is what the stat cache compares: a file whose size, mtime,
// ctime and inode are all unchanged is taken as unchanged. ctime catches
// a content change whose mtime was put back (cp -p, tar -x, touch -r).
type fileStat struct {
	size, mtimeNS, ctimeNS, inode int64
}

// FileDigest returns the SHA-256 (hex) of a file's content, read only when
// the file is not known with the same size, mtime, ctime and inode. Touching
// a file costs one read; its digest, and so every cache key, is unchanged.
func (db *DB) FileDigest(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", path)
	}
	st := statOf(fi)
	ctx := context.Background()
	var (
		known fileStat
		sum   string
	)
	err = retryBusy(func() error {
		return db.r.QueryRowContext(ctx, `SELECT size, mtime_ns, ctime_ns, inode, sha256 FROM file_digests WHERE path = ?`, abs).
			Scan(&known.size, &known.mtimeNS, &known.ctimeNS, &known.inode, &sum)
	})
	switch {
	case err == nil && known == st:
		return sum, nil
	case err != nil && !errors.Is(err, sql.ErrNoRows):
		return "", db.wrap(err)
	}
	if sum, err = (cachekey.ReadFiles{}).FileDigest(abs); err != nil {
		return "", err
	}
	now := db.now()
	if now.Sub(time.Unix(0, st.mtimeNS)) < racyWindow || now.Sub(time.Unix(0, st.ctimeNS)) < racyWindow {
		return sum, nil
	}
	err = db.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT OR REPLACE INTO file_digests(path, size, mtime_ns, ctime_ns, inode, sha256, checked_ms) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			abs, st.size, st.mtimeNS, st.ctimeNS, st.inode, sum, now.UnixMilli())
		return err
	})
	return sum, err
}

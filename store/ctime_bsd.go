//go:build darwin || freebsd

package store

import "syscall"

func ctimeNS(s *syscall.Stat_t) int64 { return s.Ctimespec.Nano() }

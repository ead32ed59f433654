//go:build !linux

package exec

import "syscall"

// Elsewhere, an item's programs end with its process group (group_unix.go)
// or with the program alone; see docs/reliability.md.

func prepareTree()                     {}
func lockThread() (unlock func())      { return func() {} }
func dieWithFlow(*syscall.SysProcAttr) {}
func sweep(string)                     {}
func track(int) (untrack func())       { return func() {} }

//go:build !unix

package sink

// processGone cannot tell here, so leftovers are never removed.
func processGone(pid int) bool { return false }

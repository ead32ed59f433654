package mock

// SetMaxBodyFiles lowers the bound on all the body_files of a test case
// until restore is called.
func SetMaxBodyFiles(n int64) (restore func()) {
	old := maxBodyFiles
	maxBodyFiles = n
	return func() { maxBodyFiles = old }
}

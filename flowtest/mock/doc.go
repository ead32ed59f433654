// Package mock is what a pipeline finds outside the process under
// `flow test`: HTTP responses for fetch, program outcomes for exec, and a
// sandbox of fixture files for the kinds that read and write files. Nothing
// unmocked gets through: a request, a program run or a file read that no
// mock covers fails its item with class 'unmocked' (permanent: never
// retried) and is recorded, so the test fails even when the stage skips
// or keeps the item.
//
// The flow test command decodes a test case's `mocks:` section into a Set
// with conf.Decode, like any options struct (every problem positioned),
// then for each run of the case:
//
//	rec, err := set.Install(testDir, pipeline.Dir) // err: conf.Diags, positioned
//	defer rec.Close()                              // removes the sandbox
//	// every stage's steps.Env gets Outside = rec; the run uses the thread
//	// runner for every mode (a worker process or a cluster worker builds
//	// its steps without the mocks) and no result cache (a cached result
//	// would skip the step and its mocks)
//	rec.Unmocked()   // the accesses nothing mocked: each one fails the test
//	rec.Requests()   // every HTTP request, in order, secrets redacted
//	rec.Calls()      // every program run, in order
//	rec.Outputs()    // the files the run wrote, as the pipeline names them
//	rec.Output(path) // the content of one
//
// Matching: fetch rules match the URL as sent, exactly except that '*'
// matches any run of characters ('/' and '?' included), or a whole-URL
// RE2 regexp (url_regexp); optionally the method and the stage. exec rules
// match argv element by element ('*' inside an element, '**' for any number
// of elements), or a shell command line. The first matching rule answers.
// A sequence of responses is walked per URL (per argv) by default, so that
// the order in which workers interleave does not change which item gets
// which response; after its last entry the last repeats.
//
// Files: the sandbox mirrors the pipeline's file system (the path /a/b is
// SANDBOX/root/a/b), which keeps the structure steps.Outside.Path promises,
// so the kinds walk, open and write there with all their own checks. A read
// is mocked when a fixture provides the path, a fixture lies below it (a
// glob walks the folder), or the run wrote it; anything else is unmocked,
// even a file that exists for real. Writes always land in the sandbox.
//
// Latency is waited on clock.From(ctx), so on the virtual clock of a test it
// is instant and exact, and counts against timeouts like a slow server.
package mock

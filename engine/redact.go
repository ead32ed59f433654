package engine

import "github.com/flowrun/flow/internal/redact"

// redactor hides the values of secret variables in what the engine writes
// itself: failure messages, failed items, the items and results passed to
// progress, and the run's reason. internal/redact knows the forms a secret
// takes (JSON-escaped, percent-encoded, base64, cut short).
type redactor = redact.Redactor

func newRedactor(secrets []string) *redactor { return redact.New(secrets) }

package fetch

import (
	"crypto/tls"
	"net/http"
	"strings"

	"github.com/flowrun/flow/internal/redact"
)

const redacted = redact.Hidden

// sensitive and redactURL are the shared rules (internal/redact), so that
// what flow test records of a request hides the same names.
func sensitive(name string) bool { return redact.CredentialName(name) }

// redactHeaders renders response headers for a result: lower-case names
// (as HTTP/2 sends them, and easy to index: item.headers["content-type"]),
// repeated values joined with ", ", credentials hidden.
func redactHeaders(h http.Header) map[string]any {
	out := make(map[string]any, len(h))
	for k, vs := range h {
		name := strings.ToLower(k)
		switch {
		case sensitive(name):
			out[name] = redacted
		case name == "location" || name == "content-location":
			out[name] = redactURL(strings.Join(vs, ", "))
		default:
			out[name] = strings.Join(vs, ", ")
		}
	}
	return out
}

func redactURL(raw string) string { return redact.URL(raw) }

// tlsVerifyError matches *tls.CertificateVerificationError, which wraps
// the x509 errors since Go 1.20.
type tlsVerifyError = tls.CertificateVerificationError

package fetch

import (
	"crypto/tls"
	"net/http"
	"net/url"
	"strings"
)

const redacted = "[redacted]"

// sensitive reports whether a header or query parameter name is likely to
// carry a credential. It errs on the side of hiding.
func sensitive(name string) bool {
	n := strings.ToLower(name)
	switch n {
	case "authorization", "proxy-authorization", "cookie", "set-cookie":
		return true
	}
	for _, w := range []string{"token", "secret", "key", "auth", "password", "passwd", "session", "signature", "credential", "cookie"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

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

// redactURL hides the password of a URL and the values of credential-like
// query parameters, leaving the rest as written.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		// Not a URL we can take apart: show nothing that could be a secret.
		if i := strings.IndexAny(raw, "?@"); i >= 0 {
			return raw[:i] + "?" + redacted
		}
		return raw
	}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "REDACTED")
		}
	}
	if u.RawQuery != "" {
		parts := strings.Split(u.RawQuery, "&")
		for i, p := range parts {
			k, _, hasValue := strings.Cut(p, "=")
			if key, err := url.QueryUnescape(k); err == nil && hasValue && sensitive(key) {
				parts[i] = k + "=REDACTED"
			}
		}
		u.RawQuery = strings.Join(parts, "&")
	}
	return u.String()
}

// tlsVerifyError matches *tls.CertificateVerificationError, which wraps
// the x509 errors since Go 1.20.
type tlsVerifyError = tls.CertificateVerificationError

package redact

import (
	"net/url"
	"strings"
)

// Hidden stands in for a credential in what flow shows of a request or a
// response (fetch's results, flow test's record of requests).
const Hidden = "[redacted]"

// CredentialName reports whether a header or query parameter name is likely to
// carry a credential. It errs on the side of hiding.
func CredentialName(name string) bool {
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

// URL hides the password of a URL and the values of credential-like
// query parameters, leaving the rest as written.
func URL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		// Not a URL we can take apart: show nothing that could be a secret.
		if i := strings.IndexAny(raw, "?@"); i >= 0 {
			return raw[:i] + "?" + Hidden
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
			if key, err := url.QueryUnescape(k); err == nil && hasValue && CredentialName(key) {
				parts[i] = k + "=REDACTED"
			}
		}
		u.RawQuery = strings.Join(parts, "&")
	}
	return u.String()
}

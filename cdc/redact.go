package cdc

import (
	"net/url"
	"regexp"
	"strings"
)

var kvPassword = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// secretParams are DSN parameters whose values are secrets.
var secretParams = []string{"password", "sslpassword"}

// RedactDSN returns dsn with any password replaced by "xxxxx", for logs and
// error messages.
func RedactDSN(dsn string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "(unparsable URL)"
		}
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		q := u.Query()
		for _, p := range secretParams {
			if q.Has(p) {
				q.Set(p, "xxxxx")
				u.RawQuery = q.Encode()
			}
		}
		return u.String()
	}
	return kvPassword.ReplaceAllString(dsn, "${1}xxxxx")
}

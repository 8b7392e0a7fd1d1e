package cdc

import (
	"fmt"
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

// ConnectError wraps a failure to connect to the server at dsn with what to
// check; the DSN in it is redacted.
func ConnectError(dsn string, err error) error {
	return fmt.Errorf("connect to PostgreSQL at %s: %w; check that the server is running and reachable from this host, and the DSN's host, port, user, password and database",
		RedactDSN(dsn), err)
}

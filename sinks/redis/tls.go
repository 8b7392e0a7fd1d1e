package redis

import (
	"fmt"
	"strings"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// TLSConfig holds the files and checks of a TLS connection, which a
// rediss:// URL turns on. The zero value verifies the server's certificate
// against the system's roots and the URL's host, and presents no client
// certificate. The client certificate and key are presented to a server
// that asks for one (tls-auth-clients); a zero ServerName means the URL's
// host.
type TLSConfig = delivery.TLSFiles

// validateTLS reports what is wrong with t, loading its files to check
// them; enabled tells whether the URL asks for TLS.
func validateTLS(t TLSConfig, enabled bool) []error {
	if !enabled {
		if given := t.Given(); len(given) > 0 {
			return []error{fmt.Errorf("redis: TLS settings (%s) are given but the URL is redis://; use rediss:// to connect with TLS, or remove them",
				strings.Join(given, ", "))}
		}
		return nil
	}
	var errs []error
	for _, err := range t.Check() {
		errs = append(errs, fmt.Errorf("redis: %w", err))
	}
	return errs
}

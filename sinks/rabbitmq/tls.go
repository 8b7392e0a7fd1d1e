package rabbitmq

import (
	"fmt"
	"strings"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// TLSConfig says how the Sink checks the server's certificate and proves
// its own identity, on an amqps:// URL. The zero value trusts the system's
// roots and presents no client certificate. The client certificate and key
// are presented to a server that asks for one (ssl_options.verify =
// verify_peer); a zero ServerName means the host of the URL.
type TLSConfig = delivery.TLSFiles

// validateTLS reports what is wrong with t for a URL that uses TLS (on) or
// not, loading its files to check them.
func validateTLS(t TLSConfig, on bool) []error {
	if !on {
		if given := t.Given(); len(given) > 0 {
			return []error{fmt.Errorf("rabbitmq: TLS settings (%s) are given but the URL is amqp://; use amqps:// (port 5671 by default), or remove them", strings.Join(given, ", "))}
		}
		return nil
	}
	var errs []error
	for _, err := range t.Check() {
		errs = append(errs, fmt.Errorf("rabbitmq: %w", err))
	}
	return errs
}

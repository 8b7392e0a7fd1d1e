package redis

import "github.com/outbox-relay/outbox-relay/sinks/delivery"

// TLSConfig holds the files and checks of a TLS connection, which a
// rediss:// URL turns on. The zero value verifies the server's certificate
// against the system's roots and the URL's host, and presents no client
// certificate. The client certificate and key are presented to a server
// that asks for one (tls-auth-clients); a zero ServerName means the URL's
// host.
type TLSConfig = delivery.TLSFiles

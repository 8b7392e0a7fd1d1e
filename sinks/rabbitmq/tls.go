package rabbitmq

import "github.com/outbox-relay/outbox-relay/sinks/delivery"

// TLSConfig says how the Sink checks the server's certificate and proves
// its own identity, on an amqps:// URL. The zero value trusts the system's
// roots and presents no client certificate. The client certificate and key
// are presented to a server that asks for one (ssl_options.verify =
// verify_peer); a zero ServerName means the host of the URL.
type TLSConfig = delivery.TLSFiles

package rabbitmq

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// Name names the sink in logs (component=rabbitmq) and in the sink label of
// its metrics.
const Name = "rabbitmq"

// Defaults of Config's zero fields.
const (
	// DefaultExchange is the exchange template used when Config.Exchange
	// is empty: one exchange for every event.
	DefaultExchange = "outbox"
	// DefaultExchangeType is the type Setup declares the exchange with
	// when Config.ExchangeType is empty.
	DefaultExchangeType = "topic"
	// DefaultRoutingKey is the routing key template used when
	// Config.RoutingKey is empty, so that consumers bind "order.*" for
	// every event of orders, or "*.created" for every creation.
	DefaultRoutingKey = "{aggregate_type}.{event_type}"
	// DefaultDeadLetterQueue is the queue of undeliverable events.
	DefaultDeadLetterQueue = "outbox-relay-dlq"
	// DefaultDeadLetterQueueType is the type Setup declares the dead-letter
	// queue with when Config.DeadLetterQueueType is empty.
	DefaultDeadLetterQueueType = QueueClassic
	// DefaultMaxMessageBytes is Config.MaxMessageBytes when zero: 16 MiB.
	// RabbitMQ accepts up to its max_message_size, 128 MiB by default, but
	// a queue holds a message whole in memory until it pages it out, and
	// the relay holds it too until the broker acknowledges it: at 16 MiB,
	// four such events fit in the relay's default 64 MiB of in-flight
	// payload, and a burst of them does not set off the broker's memory
	// alarm, which blocks every publisher.
	DefaultMaxMessageBytes = 16 << 20
	// DefaultUnroutableGrace is Config.UnroutableGrace when zero: long
	// enough for consumers that bind their queues as they start to do so
	// after the relay started, short enough not to hold an aggregate long
	// behind an event that nobody will ever receive.
	DefaultUnroutableGrace = 30 * time.Second
)

// Queue types Config.DeadLetterQueueType accepts.
const (
	// QueueClassic is a classic queue: durable on one node.
	QueueClassic = "classic"
	// QueueQuorum is a quorum queue, replicated on a majority of the
	// cluster's nodes before the broker acknowledges a message.
	QueueQuorum = "quorum"
)

// Limits Validate enforces.
const (
	// minMessageBytes leaves room for the relay's own headers.
	minMessageBytes = 1 << 10
	// maxMessageBytes is the largest max_message_size RabbitMQ accepts.
	maxMessageBytes = 512 << 20
	// maxName is the longest exchange name, queue name or routing key
	// AMQP 0-9-1 carries (a short string).
	maxName = 255
)

// exchangeTypes are the exchange types of RabbitMQ itself; plugins add
// types whose names start with "x-", such as x-consistent-hash.
var exchangeTypes = []string{"direct", "fanout", "topic", "headers"}

// redacted stands for a secret in logs, errors and fmt output, as in
// cdc.RedactDSN.
const redacted = "xxxxx"

// Config configures a Sink. The zero value of every field but URL has a
// documented meaning; New fills the defaults itself, and Validate accepts a
// Config with or without them. Its LogValue, String and GoString leave out
// the password.
type Config struct {
	// URL is the AMQP 0-9-1 URI of the server:
	// amqp://user:password@host:5672/vhost, or amqps:// for TLS (port 5671
	// by default). A vhost of "/" is written %2F; a password with
	// reserved characters is percent-encoded. The query parameters
	// heartbeat (seconds) and connection_timeout (milliseconds) are
	// honoured; TLS settings go in TLS, not in the URL. Required.
	URL string
	// Username and Password, when set, replace the user and the password
	// of URL, so that the password can come from a file instead of the
	// command line. Zero means those of URL (guest and guest when URL has
	// none; RabbitMQ accepts guest only from the server's own host).
	Username, Password string
	// TLS says how to check the server's certificate and which client
	// certificate to present, for an amqps:// URL. It must be zero for an
	// amqp:// URL.
	TLS TLSConfig
	// Exchange is the template that names each event's exchange. The
	// placeholders {aggregate_type} and {event_type} are replaced by the
	// event's fields; no other {...} is allowed. A rendered name must be
	// 1 to 255 bytes of UTF-8, or the event fails with ReasonDestination.
	// Setup declares the exchange only when the template has no
	// placeholder. Zero means DefaultExchange, "outbox".
	Exchange string
	// ExchangeType is the type Setup declares the exchange with: topic,
	// direct, fanout, headers, or a plugin's type such as
	// x-consistent-hash (which Setup declares hashing the aggregate_id
	// header). Publishing does not depend on it. Zero means
	// DefaultExchangeType, topic.
	ExchangeType string
	// RoutingKey is the template of each event's routing key, with the
	// placeholders {aggregate_type}, {event_type} and {aggregate_id}. A
	// rendered key must be at most 255 bytes of UTF-8, or the event fails
	// with ReasonDestination. Zero means DefaultRoutingKey,
	// "{aggregate_type}.{event_type}".
	RoutingKey string
	// DeadLetterQueue receives the events that can never be delivered,
	// through the default exchange, with headers saying why (see
	// delivery.DeadLetterHeaders). Setup declares it. Zero means
	// DefaultDeadLetterQueue, "outbox-relay-dlq".
	DeadLetterQueue string
	// DeadLetterQueueType is the type Setup declares the dead-letter
	// queue with when it does not exist: QueueClassic or QueueQuorum. Zero
	// means DefaultDeadLetterQueueType, classic.
	DeadLetterQueueType string
	// MaxMessageBytes bounds a message's body and header names and values
	// together; a larger event fails with ReasonSize. Keep it at or below
	// the server's max_message_size (128 MiB by default): a message over
	// that closes the channel, and is sent again forever. Zero means
	// DefaultMaxMessageBytes (16 MiB). From 1 KiB to 512 MiB.
	MaxMessageBytes int
	// UnroutableGrace is how long an event that comes back unroutable
	// (no queue bound matches) is sent again before it is poison
	// (ReasonUnroutable): a queue may be missing for a moment only, as
	// when consumers bind their queues as they start, after the relay.
	// Meanwhile the event's aggregate waits. Zero means
	// DefaultUnroutableGrace (30s); a negative value makes the first
	// return poison.
	UnroutableGrace time.Duration
	// Delivery bounds the batches, the concurrent senders and the retry
	// backoff; New sets its Name to "rabbitmq". Each sender publishes on
	// a channel of its own.
	Delivery delivery.Config
}

// withDefaults returns c with its zero fields replaced by their defaults.
func (c Config) withDefaults() Config {
	if c.Exchange == "" {
		c.Exchange = DefaultExchange
	}
	if c.ExchangeType == "" {
		c.ExchangeType = DefaultExchangeType
	}
	if c.RoutingKey == "" {
		c.RoutingKey = DefaultRoutingKey
	}
	if c.DeadLetterQueue == "" {
		c.DeadLetterQueue = DefaultDeadLetterQueue
	}
	if c.DeadLetterQueueType == "" {
		c.DeadLetterQueueType = DefaultDeadLetterQueueType
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.UnroutableGrace == 0 {
		c.UnroutableGrace = DefaultUnroutableGrace
	}
	c.Delivery.Name = Name
	c.Delivery = c.Delivery.WithDefaults()
	return c
}

// Validate reports every field of c that New would reject, each with what
// to change. It reads the TLS files, and its errors name any it cannot read
// or parse, but it does not contact the server; see Sink.Ping.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	uri, err := c.uri()
	if err != nil {
		errs = append(errs, err)
	}
	if _, err := parseTemplate(c.Exchange, exchangePlaceholders); err != nil {
		errs = append(errs, fmt.Errorf("rabbitmq: exchange %w", err))
	}
	if _, err := parseTemplate(c.RoutingKey, routingKeyPlaceholders); err != nil {
		errs = append(errs, fmt.Errorf("rabbitmq: routing key %w", err))
	}
	if !slices.Contains(exchangeTypes, c.ExchangeType) && !strings.HasPrefix(c.ExchangeType, "x-") {
		errs = append(errs, fmt.Errorf("rabbitmq: exchange type %q is unknown; use topic, direct, fanout, headers, or a plugin's type starting with x-", c.ExchangeType))
	}
	if !legalName(c.DeadLetterQueue) || strings.HasPrefix(c.DeadLetterQueue, "amq.") {
		errs = append(errs, fmt.Errorf("rabbitmq: dead-letter queue %q is not a name RabbitMQ lets a client declare; use 1 to %d bytes of UTF-8 not starting with amq.", c.DeadLetterQueue, maxName))
	}
	if c.DeadLetterQueueType != QueueClassic && c.DeadLetterQueueType != QueueQuorum {
		errs = append(errs, fmt.Errorf("rabbitmq: dead-letter queue type %q is unknown; use %s or %s", c.DeadLetterQueueType, QueueClassic, QueueQuorum))
	}
	if c.MaxMessageBytes < minMessageBytes || c.MaxMessageBytes > maxMessageBytes {
		errs = append(errs, fmt.Errorf("rabbitmq: max message bytes %d is out of range; use %d to %d, at most the server's max_message_size, or 0 for %d",
			c.MaxMessageBytes, minMessageBytes, maxMessageBytes, DefaultMaxMessageBytes))
	}
	if err == nil {
		errs = append(errs, c.TLS.Validate("rabbitmq", uri.Scheme == "amqps", "the URL is amqp://", "use amqps:// (port 5671 by default)")...)
	}
	if err := c.Delivery.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("rabbitmq: %w", err))
	}
	return errors.Join(errs...)
}

// uri parses c.URL and applies Username and Password. Its errors never
// hold the password.
func (c Config) uri() (amqp.URI, error) {
	if strings.TrimSpace(c.URL) == "" {
		return amqp.URI{}, errors.New("rabbitmq: no URL; set it, such as amqp://user:password@host:5672/vhost")
	}
	if _, err := url.Parse(c.URL); err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // *url.Error quotes the URL, password and all
		}
		return amqp.URI{}, fmt.Errorf("rabbitmq: URL %s is not valid (%w); write it as amqp://user:password@host:5672/vhost, percent-encoding reserved characters in the password", c.redactedURL(), err)
	}
	uri, err := amqp.ParseURI(c.URL)
	if err != nil {
		return amqp.URI{}, fmt.Errorf("rabbitmq: URL %s is not valid (%w); write it as amqp://user:password@host:5672/vhost, or amqps:// for TLS", c.redactedURL(), err)
	}
	if uri.CertFile != "" || uri.KeyFile != "" || uri.CACertFile != "" || uri.ServerName != "" {
		return amqp.URI{}, fmt.Errorf("rabbitmq: URL %s holds TLS settings (certfile, keyfile, cacertfile, server_name_indication); give them as the sink's TLS settings instead", c.redactedURL())
	}
	if c.Username != "" {
		uri.Username = c.Username
	}
	if c.Password != "" {
		uri.Password = c.Password
	}
	return uri, nil
}

// redactedURL returns c.URL with its password replaced by "xxxxx", or a
// placeholder when it cannot be parsed.
func (c Config) redactedURL() string {
	u, err := url.Parse(c.URL)
	if err != nil {
		return "(a URL that does not parse)"
	}
	return u.Redacted()
}

// address returns the scheme, host and port c dials, for errors and logs:
// amqp://127.0.0.1:5672.
func address(uri amqp.URI) string {
	return fmt.Sprintf("%s://%s:%d", uri.Scheme, uri.Host, uri.Port)
}

// LogValue describes c for logs: the URL without its password, and never
// the Password field.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("url", c.redactedURL()),
		slog.String("username", c.Username),
		slog.Bool("password_set", c.Password != ""),
		slog.Any("tls", c.TLS),
		slog.String("exchange", c.Exchange),
		slog.String("exchange_type", c.ExchangeType),
		slog.String("routing_key", c.RoutingKey),
		slog.String("dead_letter_queue", c.DeadLetterQueue),
		slog.Int("max_message_bytes", c.MaxMessageBytes),
		slog.Duration("unroutable_grace", c.UnroutableGrace),
	)
}

// plain is Config without its methods, for String and GoString.
type plain Config

// redactedCopy returns c with its secrets replaced by "xxxxx".
func (c Config) redactedCopy() plain {
	c.URL = c.redactedURL()
	c.Password = mask(c.Password)
	return plain(c)
}

// String describes c for fmt's %v and %s with its secrets replaced by
// "xxxxx".
func (c Config) String() string { return fmt.Sprintf("%+v", c.redactedCopy()) }

// GoString describes c for fmt's %#v with its secrets replaced by "xxxxx".
func (c Config) GoString() string { return fmt.Sprintf("rabbitmq.Config%+v", c.redactedCopy()) }

// mask returns "xxxxx" for a secret that is set, and "" for one that is not.
func mask(secret string) string {
	if secret == "" {
		return ""
	}
	return redacted
}

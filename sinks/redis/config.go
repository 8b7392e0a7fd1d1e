package redis

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// Name names the sink in logs (component=redis) and in the sink label of
// its metrics.
const Name = "redis"

// Defaults of Config's zero fields.
const (
	// DefaultStream is the stream key template used when Config.Stream is
	// empty: one stream per aggregate type, like the Kafka sink's topics.
	DefaultStream = "outbox.{aggregate_type}"
	// DefaultDeadLetterStream is the stream of undeliverable events.
	DefaultDeadLetterStream = "outbox-relay-dlq"
	// DefaultMaxMessageBytes is Config.MaxMessageBytes when zero: 16 MiB,
	// well under the 512 MB Redis accepts in one argument
	// (proto-max-bulk-len), so that one large event cannot hold a
	// connection for long.
	DefaultMaxMessageBytes = 16 << 20
	// DefaultDialTimeout is Config.DialTimeout when zero.
	DefaultDialTimeout = 5 * time.Second
	// DefaultReadTimeout and DefaultWriteTimeout are Config.ReadTimeout and
	// Config.WriteTimeout when zero. They bound a whole batch, whose
	// entries Redis writes to its append-only file, and with appendfsync
	// always syncs, before it replies; a batch that times out is sent
	// again, so they err on the long side.
	DefaultReadTimeout  = 10 * time.Second
	DefaultWriteTimeout = 10 * time.Second
)

// Limits Validate enforces.
const (
	// minMessageBytes leaves room for the relay's own fields.
	minMessageBytes = 1 << 10
	// maxMessageBytes is Redis's default proto-max-bulk-len, the largest
	// argument it accepts.
	maxMessageBytes = 512 << 20
)

// redacted stands for a secret in logs, errors and fmt output, as in
// cdc.RedactDSN.
const redacted = "xxxxx"

// Config configures a Sink. The zero value of every field but URL has a
// documented meaning; New fills the defaults itself, and Validate accepts a
// Config with or without them. Its LogValue, String and GoString leave out
// the password, whether in URL or in Password.
type Config struct {
	// URL names the Redis server: redis://[user[:password]@]host[:port][/db],
	// or rediss://... to connect with TLS. Zero port means 6379, no path
	// database 0. Query parameters are refused: the fields below hold
	// every setting. Required. Redis Cluster is not supported: name a
	// standalone server or a primary (see the package doc).
	URL string
	// Username and Password authenticate the connection (AUTH, or ACL
	// users since Redis 6) and override the URL's. Zero means the URL's,
	// and no authentication when the URL has none.
	Username, Password string
	// TLS holds the certificate files of a rediss:// URL. It must be zero
	// with redis://.
	TLS TLSConfig
	// DialTimeout bounds the opening of a connection, TLS handshake
	// included. Zero means DefaultDialTimeout.
	DialTimeout time.Duration
	// ReadTimeout bounds the wait for the replies of one batch, and
	// WriteTimeout the writing of it; a batch that runs out of either is
	// sent again. Raise them with very large messages on a slow link.
	// Zero means DefaultReadTimeout and DefaultWriteTimeout.
	ReadTimeout, WriteTimeout time.Duration
	// Stream is the template of each event's stream key. The placeholders
	// {aggregate_type}, {event_type} and {aggregate_id} are replaced by the
	// event's fields; braces are allowed nowhere else. Zero means
	// DefaultStream, "outbox.{aggregate_type}".
	//
	// Each aggregate's events keep their order only within one stream:
	// with {event_type} in the template they may spread over several. With
	// {aggregate_id} every aggregate gets a stream of its own, which makes
	// as many keys as aggregates (each with its own memory overhead), and
	// consumers must find them (SCAN) rather than read a known few.
	Stream string
	// DeadLetterStream is the stream key of the events that can never be
	// delivered, with fields saying why (see the package doc). It is never
	// trimmed. Zero means DefaultDeadLetterStream, "outbox-relay-dlq".
	DeadLetterStream string
	// MaxLen, when positive, trims each event stream to about that many
	// entries as entries are added (XADD MAXLEN ~ MaxLen): Redis drops the
	// oldest ones, whether or not a consumer group has read them, so a
	// slow consumer can miss events. Keep it well above the backlog
	// consumers may build. Zero means no trimming.
	MaxLen int64
	// MaxMessageBytes bounds the size of one entry: stream key, field
	// names and values. A larger event fails at once as poison
	// (delivery.ReasonSize). Keep it at or below the server's
	// proto-max-bulk-len. Zero means DefaultMaxMessageBytes (16 MiB).
	// From 1 KiB to 512 MiB.
	MaxMessageBytes int
	// Delivery configures batching, concurrency and retries. New sets its
	// Name to "redis".
	Delivery delivery.Config
}

// withDefaults returns c with its zero fields replaced by their defaults.
func (c Config) withDefaults() Config {
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.DeadLetterStream == "" {
		c.DeadLetterStream = DefaultDeadLetterStream
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	c.Delivery.Name = Name
	return c
}

// Validate reports every field of c that New would reject, each with what
// to change. It reads the TLS files, and its errors name any it cannot read
// or parse, but it does not contact the server; see Sink.Ping.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	u, err := c.parseURL()
	if err != nil {
		errs = append(errs, err)
	}
	if _, err := parseTemplate(c.Stream); err != nil {
		errs = append(errs, fmt.Errorf("redis: %w", err))
	}
	if strings.ContainsAny(c.DeadLetterStream, "{}") {
		errs = append(errs, fmt.Errorf("redis: dead-letter stream %q holds a brace; it is one stream for every event, so give it a fixed name such as %q",
			c.DeadLetterStream, DefaultDeadLetterStream))
	}
	if c.MaxLen < 0 {
		errs = append(errs, fmt.Errorf("redis: max length is %d; use a positive number of entries to trim each stream to, or 0 for no trimming", c.MaxLen))
	}
	if c.MaxMessageBytes < minMessageBytes || c.MaxMessageBytes > maxMessageBytes {
		errs = append(errs, fmt.Errorf("redis: max message bytes %d is out of range; use %d to %d, at most the server's proto-max-bulk-len, or 0 for %d",
			c.MaxMessageBytes, minMessageBytes, maxMessageBytes, DefaultMaxMessageBytes))
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{{"dial", c.DialTimeout}, {"read", c.ReadTimeout}, {"write", c.WriteTimeout}} {
		if d.d < 0 {
			errs = append(errs, fmt.Errorf("redis: %s timeout %s is negative; use a positive duration, or 0 for the default", d.name, d.d))
		}
	}
	if u != nil {
		errs = append(errs, c.TLS.Validate("redis", u.Scheme == schemeTLS, "the URL is redis://", "use rediss:// to connect with TLS")...)
	}
	if err := c.Delivery.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("redis: %w", err))
	}
	return errors.Join(errs...)
}

// URL schemes Config.URL accepts.
const (
	schemePlain = "redis"
	schemeTLS   = "rediss"
)

// parseURL checks c.URL and returns it parsed. Its errors never hold the
// password.
func (c Config) parseURL() (*url.URL, error) {
	const form = "write it as redis://[user:password@]host[:port][/db], or rediss:// for TLS"
	if c.URL == "" {
		return nil, errors.New("redis: no URL; set one such as redis://127.0.0.1:6379/0, or rediss:// for TLS")
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the url.Error repeats the URL, password and all
		}
		return nil, fmt.Errorf("redis: the URL cannot be parsed (%v); %s", err, form)
	}
	shown := u.Redacted()
	if u.Scheme != schemePlain && u.Scheme != schemeTLS {
		return nil, fmt.Errorf("redis: URL %s has scheme %q; %s", shown, u.Scheme, form)
	}
	if u.RawQuery != "" {
		q, _ := url.ParseQuery(u.RawQuery)
		names := make([]string, 0, len(q))
		for k := range q {
			names = append(names, k)
		}
		slices.Sort(names)
		return nil, fmt.Errorf("redis: URL %s has query parameters (%s), which the sink does not read; set the timeouts and TLS files in its configuration instead, and remove them",
			u.Scheme+"://"+u.Host+u.Path, strings.Join(names, ", "))
	}
	if _, err := goredis.ParseURL(c.URL); err != nil {
		return nil, fmt.Errorf("redis: URL %s: %s; %s", shown, strings.TrimPrefix(err.Error(), "redis: "), form)
	}
	return u, nil
}

// redactedURL returns c.URL with its password, if any, replaced by
// "xxxxx", for logs and errors; a URL that cannot be parsed is replaced
// whole.
func (c Config) redactedURL() string {
	u, err := url.Parse(c.URL)
	if err != nil {
		return redacted
	}
	return u.Redacted()
}

// options returns the go-redis options for c, which must have its defaults
// and be valid.
func (c Config) options() (*goredis.Options, error) {
	opt, err := goredis.ParseURL(c.URL)
	if err != nil {
		return nil, fmt.Errorf("redis: URL %s: %w", c.redactedURL(), err)
	}
	if c.Username != "" {
		opt.Username = c.Username
	}
	if c.Password != "" {
		opt.Password = c.Password
	}
	if opt.TLSConfig != nil {
		tc, err := c.TLS.Config(opt.TLSConfig.ServerName)
		if err != nil {
			return nil, fmt.Errorf("redis: %w", err)
		}
		opt.TLSConfig = tc
	}
	opt.DialTimeout = c.DialTimeout
	opt.ReadTimeout = c.ReadTimeout
	opt.WriteTimeout = c.WriteTimeout
	// The sink retries what failed, with backoff and only the messages
	// that failed: a retry of the whole pipeline by the client would add
	// duplicates of the entries Redis had already added, and retried dials
	// would make a Ping of a server that is down take five dial timeouts.
	opt.MaxRetries = -1
	opt.DialerRetries = 1
	// RESP2 works with every server and proxy; the sink needs nothing of
	// RESP3, and without it there is no maintenance-notification
	// handshake either.
	opt.Protocol = 2
	opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	// No CLIENT SETINFO: an ACL user needs no permission beyond XADD,
	// PING and, optionally, CONFIG GET.
	opt.DisableIdentity = true
	return opt, nil
}

// LogValue describes c for logs without its password.
func (c Config) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("url", c.redactedURL())}
	if c.Username != "" {
		attrs = append(attrs, slog.String("username", c.Username))
	}
	if c.Password != "" {
		attrs = append(attrs, slog.String("password", redacted))
	}
	attrs = append(attrs,
		slog.Any("tls", c.TLS),
		slog.String("stream", c.Stream),
		slog.String("dead_letter_stream", c.DeadLetterStream),
		slog.Int64("max_len", c.MaxLen),
		slog.Int("max_message_bytes", c.MaxMessageBytes),
		slog.Duration("dial_timeout", c.DialTimeout),
		slog.Duration("read_timeout", c.ReadTimeout),
		slog.Duration("write_timeout", c.WriteTimeout),
		slog.Int("max_batch", c.Delivery.MaxBatch),
		slog.Int("senders", c.Delivery.Senders),
		slog.Duration("retry_min", c.Delivery.RetryMin),
		slog.Duration("retry_max", c.Delivery.RetryMax),
	)
	return slog.GroupValue(attrs...)
}

// plain is Config without its methods, for String and GoString.
type plain Config

// redactedCopy returns c with its secrets replaced by "xxxxx".
func (c Config) redactedCopy() plain {
	c.URL = c.redactedURL()
	if c.Password != "" {
		c.Password = redacted
	}
	return plain(c)
}

// String describes c for fmt's %v and %s with its secrets replaced by
// "xxxxx".
func (c Config) String() string { return fmt.Sprintf("%+v", c.redactedCopy()) }

// GoString describes c for fmt's %#v with its secrets replaced by "xxxxx".
func (c Config) GoString() string {
	return "redis.Config" + strings.TrimPrefix(fmt.Sprintf("%#v", c.redactedCopy()), "redis.plain")
}

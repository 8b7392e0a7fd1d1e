package kafka

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Defaults for the zero values of Config fields.
const (
	// DefaultTopic is the topic template used when Config.Topic is empty.
	DefaultTopic = "outbox.{aggregate_type}"
	// DefaultClientID is the client ID used when Config.ClientID is empty.
	DefaultClientID = "outbox-relay"
	// DefaultMaxMessageBytes is the batch size limit used when
	// Config.MaxMessageBytes is zero: 1 MiB, just under the 1,048,588 bytes
	// Kafka brokers and topics accept by default (message.max.bytes,
	// max.message.bytes).
	DefaultMaxMessageBytes = 1 << 20
	// DefaultDeadLetterTopic is the topic of undeliverable events.
	DefaultDeadLetterTopic = "outbox-relay-dlq"
	// DefaultMaxBufferedRecords is the client's record buffer used when
	// Config.MaxBufferedRecords is zero: franz-go's own default.
	DefaultMaxBufferedRecords = 50_000
	// DefaultTransactionTimeout is Config.TransactionTimeout when zero.
	DefaultTransactionTimeout = time.Minute
)

// Compression names the codec the producer compresses record batches with.
type Compression string

// The codecs Config.Compression accepts.
const (
	// CompressionNone sends batches uncompressed.
	CompressionNone Compression = "none"
	// CompressionSnappy is snappy (franz-go's encoder is klauspost's s2
	// in snappy mode).
	CompressionSnappy Compression = "snappy"
	// CompressionLZ4 is lz4 at its fastest level.
	CompressionLZ4 Compression = "lz4"
	// CompressionZstd is zstd at its default level. It needs brokers of
	// Kafka 2.1 or later, and consumers that decode it; to older brokers
	// franz-go sends the batches uncompressed.
	CompressionZstd Compression = "zstd"
)

// DefaultCompression is Config.Compression when zero: snappy, chosen by
// BenchmarkCompression (franz-go's compressor on one record batch, 2-core
// machine, medians of 5 runs). On an 87 KB batch of 200 JSON events of
// ~300 bytes, snappy took 54 µs (1.6 GB/s) to a ratio of 0.38, lz4 120 µs
// (0.72 GB/s) to 0.36 and zstd 326 µs (0.27 GB/s) to 0.21. On a 67 KB
// batch of 8 KB payloads of base64 of random bytes (W4's), which none of
// the three shrinks as franz-go runs them (zstd's default level skips
// entropy coding of bare literals), snappy gave up after 4.4 µs, lz4 after
// 25 µs and zstd after 33 µs. Snappy thus costs incompressible payloads
// least, about 0.5 µs per 8 KB record (BENCHMARKS.md: the relay spends
// some 23 µs of CPU per W4 row), and still makes typical events 2.6 times
// smaller for about 0.3 µs each; lz4's output is 5% smaller for twice the
// time, zstd's 44% smaller for six times. none costs nothing and saves
// nothing.
const DefaultCompression = CompressionSnappy

// compressions lists the codecs Validate accepts.
var compressions = []Compression{CompressionNone, CompressionSnappy, CompressionLZ4, CompressionZstd}

// codec returns franz-go's codec for c, which must be one of compressions.
func (c Compression) codec() kgo.CompressionCodec {
	switch c {
	case CompressionSnappy:
		return kgo.SnappyCompression()
	case CompressionLZ4:
		return kgo.Lz4Compression()
	case CompressionZstd:
		return kgo.ZstdCompression()
	}
	return kgo.NoCompression()
}

// Limits Validate enforces.
const (
	// maxLinger is the longest linger franz-go accepts.
	maxLinger = time.Minute
	// minMessageBytes and maxMessageBytes bound Config.MaxMessageBytes:
	// franz-go needs at least 512 bytes for a batch and writes no request
	// larger than 100 MiB (Kafka's socket.request.max.bytes).
	minMessageBytes = 512
	maxMessageBytes = 100 << 20
	// maxTransactionTimeout is Kafka's default transaction.max.timeout.ms.
	maxTransactionTimeout = 15 * time.Minute
)

// Config configures a Sink. The zero value of every field but Brokers has a
// documented meaning; New fills the defaults itself, and Validate accepts a
// Config with or without them.
type Config struct {
	// Brokers lists seed brokers as host:port, one per entry. Required. The
	// client discovers the rest of the cluster from them.
	Brokers []string
	// Topic is the template that names each event's topic. The placeholders
	// {aggregate_type} and {event_type} are replaced by the event's fields;
	// no other {...} is allowed. A rendered name must be a legal Kafka topic
	// name (1 to 249 characters of a-z A-Z 0-9 . _ -, not "." or ".."), or
	// the event fails with a RecordError. Zero means DefaultTopic,
	// "outbox.{aggregate_type}".
	//
	// With {event_type} in the template, one aggregate's events can land on
	// several topics, and Kafka orders them only within each topic.
	Topic string
	// ClientID names the client to the brokers, for their logs, quotas and
	// metrics. Zero means DefaultClientID, "outbox-relay".
	ClientID string
	// AllowAutoTopicCreation lets the client ask the brokers to create a
	// missing topic (the brokers must allow it too, and pick its partition
	// count). When false, events for a topic that does not exist fail
	// after a few metadata refreshes with UNKNOWN_TOPIC_OR_PARTITION.
	AllowAutoTopicCreation bool
	// Linger is how long a partition waits for more records before it
	// sends a batch. Zero means no wait, for the lowest latency: while a
	// request is in flight, records still gather into the next batch.
	// At most one minute.
	Linger time.Duration
	// MaxMessageBytes bounds the uncompressed size of one record batch; a
	// single record that cannot fit fails with a RecordError (ReasonSize).
	// Keep it at or below the topics' max.message.bytes. Zero means
	// DefaultMaxMessageBytes (1 MiB). From 512 bytes to 100 MiB.
	MaxMessageBytes int
	// MaxBufferedRecords bounds the records the client holds unacknowledged
	// (dead letters included); Publish blocks, whatever its context, while
	// it is reached. Keep the caller's in-flight bound below it, with room
	// for dead letters: BufferFor gives a value. Zero means
	// DefaultMaxBufferedRecords.
	MaxBufferedRecords int
	// DeadLetterTopic receives the events that can never be delivered, with
	// headers saying why (see Sink.DeadLetter). Zero means
	// DefaultDeadLetterTopic, "outbox-relay-dlq".
	DeadLetterTopic string
	// Compression is the codec each record batch is compressed with:
	// CompressionNone, CompressionSnappy, CompressionLZ4 or
	// CompressionZstd; the producer uses that codec alone. A batch the
	// codec does not make smaller is sent uncompressed, the time spent
	// trying lost. Consumers decompress whatever codec a batch carries
	// (the brokers store it as sent unless a topic's compression.type
	// says otherwise). zstd needs brokers of Kafka 2.1 or later. Zero
	// means DefaultCompression, snappy: of the three codecs it costs
	// incompressible payloads least (4.4 µs per 67 KB batch, lz4 25 µs,
	// zstd 33 µs) and still makes JSON events 2.6 times smaller; see
	// DefaultCompression for the measurements.
	Compression Compression
	// TLS encrypts the broker connections and may present a client
	// certificate. Zero means plaintext.
	TLS TLSConfig
	// SASL authenticates the client to the brokers. Zero means no
	// authentication.
	SASL SASLConfig
	// TransactionalID turns on exactly-once mode: the producer is
	// transactional with this ID, the caller brackets events with
	// Sink.BeginTxn and Sink.CommitTxn, and a second Sink with the same ID
	// fences this one (see txn.go). Derive it from the replication slot,
	// so that two relays on one slot fence each other. Zero means
	// at-least-once mode, in which the Sink behaves as it always has.
	TransactionalID string
	// TransactionTimeout is how long the broker lets a transaction stay
	// open, from its first record, before aborting it; keep it well above
	// the commit interval and at most the brokers'
	// transaction.max.timeout.ms. Used only with TransactionalID; zero
	// means DefaultTransactionTimeout, one minute.
	TransactionTimeout time.Duration
	// CheckpointKey keys this relay's fence record in CheckpointTopic.
	// Set it to the replication slot's name, so that the fence survives a
	// change of TransactionalID. Used only with TransactionalID; zero
	// means TransactionalID.
	CheckpointKey string
}

// LogValue describes c for logs without the SASL password or token.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Any("brokers", c.Brokers),
		slog.String("topic", c.Topic),
		slog.String("client_id", c.ClientID),
		slog.String("compression", string(c.Compression)),
		slog.Any("tls", c.TLS),
		slog.Any("sasl", c.SASL),
	)
}

// withDefaults returns c with its zero fields replaced by their defaults.
func (c Config) withDefaults() Config {
	if c.Topic == "" {
		c.Topic = DefaultTopic
	}
	if c.ClientID == "" {
		c.ClientID = DefaultClientID
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.DeadLetterTopic == "" {
		c.DeadLetterTopic = DefaultDeadLetterTopic
	}
	if c.Compression == "" {
		c.Compression = DefaultCompression
	}
	if c.MaxBufferedRecords == 0 {
		c.MaxBufferedRecords = DefaultMaxBufferedRecords
	}
	if c.TransactionalID != "" && c.TransactionTimeout == 0 {
		c.TransactionTimeout = DefaultTransactionTimeout
	}
	if c.TransactionalID != "" && c.CheckpointKey == "" {
		c.CheckpointKey = c.TransactionalID
	}
	return c
}

// BufferFor returns the MaxBufferedRecords that lets a caller keep
// inflight events unacknowledged without Publish ever blocking: room for
// each event and for a dead letter of each, and never less than the
// default.
func BufferFor(inflight int) int {
	return max(DefaultMaxBufferedRecords, 2*inflight+1)
}

// Validate reports every field of c that New would reject, each with what
// to change. It reads the TLS files, and its errors name any it cannot
// read or parse, but it does not contact the brokers; see Sink.Ping.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("kafka: no brokers; list at least one as host:port"))
	}
	for _, b := range c.Brokers {
		switch {
		case strings.TrimSpace(b) == "":
			errs = append(errs, errors.New("kafka: empty broker address; list brokers as host:port"))
		case strings.ContainsAny(b, ", \t"):
			errs = append(errs, fmt.Errorf("kafka: broker address %q holds a comma or a space; give each broker as its own host:port entry", b))
		default:
			if err := checkBrokerAddr(b); err != nil {
				errs = append(errs, fmt.Errorf("kafka: broker address %q: %w", b, err))
			}
		}
	}
	if _, err := parseTopicTemplate(c.Topic); err != nil {
		errs = append(errs, fmt.Errorf("kafka: %w", err))
	}
	if !legalTopic(c.DeadLetterTopic) {
		errs = append(errs, fmt.Errorf("kafka: dead-letter topic %q is not a legal topic name; use 1 to %d characters of a-z A-Z 0-9 . _ -", c.DeadLetterTopic, maxTopicLen))
	}
	if c.Linger < 0 || c.Linger > maxLinger {
		errs = append(errs, fmt.Errorf("kafka: linger %s is out of range; use 0 (no wait) up to %s", c.Linger, maxLinger))
	}
	if c.MaxMessageBytes < minMessageBytes || c.MaxMessageBytes > maxMessageBytes {
		errs = append(errs, fmt.Errorf("kafka: max message bytes %d is out of range; use %d to %d, at most the topics' max.message.bytes, or 0 for %d",
			c.MaxMessageBytes, minMessageBytes, maxMessageBytes, DefaultMaxMessageBytes))
	}
	if !slices.Contains(compressions, c.Compression) {
		errs = append(errs, fmt.Errorf("kafka: compression %q is unknown; use none, snappy, lz4 or zstd (zstd needs brokers of Kafka 2.1 or later), or leave it empty for %s",
			c.Compression, DefaultCompression))
	}
	if c.MaxBufferedRecords < 0 {
		errs = append(errs, fmt.Errorf("kafka: max buffered records is %d; use a positive number, or 0 for %d", c.MaxBufferedRecords, DefaultMaxBufferedRecords))
	}
	if c.TransactionalID != "" && (c.TransactionTimeout < time.Second || c.TransactionTimeout > maxTransactionTimeout) {
		errs = append(errs, fmt.Errorf("kafka: transaction timeout %s is out of range; use 1s to %s (at most the brokers' transaction.max.timeout.ms), or 0 for %s",
			c.TransactionTimeout, maxTransactionTimeout, DefaultTransactionTimeout))
	}
	errs = append(errs, c.TLS.validate()...)
	errs = append(errs, c.SASL.validate()...)
	return errors.Join(errs...)
}

// opts returns the franz-go options for c, which must have its defaults and
// be valid. New adds the logger and the metrics hooks.
func (c Config) opts() []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.ClientID(c.ClientID),
		// acks=all is what makes done(nil) mean durable; the idempotent
		// producer (franz-go's default, which requires acks=all) is left
		// on. Retriable produce errors are retried without limit (also
		// the default; no kgo.RecordRetries), and the idempotent
		// producer's sequence numbers keep each partition's records in
		// order and free of duplicates across those retries.
		kgo.RequiredAcks(kgo.AllISRAcks()),
		// Keyed records: toPositive(murmur2(key)) % partitions, as the
		// Java client's default partitioner does.
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.ProducerBatchMaxBytes(int32(c.MaxMessageBytes)),
		// A produce request carries a batch of every partition with
		// records, up to 100 MiB by default: with big events, ten
		// partitions make 10 MiB requests, which the client serializes
		// into buffers of its own beside the events. Two batches' worth
		// per request keeps those buffers small; five requests in flight
		// keep the pipe full.
		kgo.BrokerMaxWriteBytes(int32(min(2*c.MaxMessageBytes, maxMessageBytes))),
		// One codec and no fallback: franz-go's default is snappy, then
		// none.
		kgo.ProducerBatchCompression(c.Compression.codec()),
		kgo.MaxBufferedRecords(c.MaxBufferedRecords),
		// Set even at zero: franz-go's own default linger is 10ms.
		kgo.ProducerLinger(c.Linger),
		// A failed produce waits for a metadata refresh before its retry;
		// franz-go spaces refreshes at least 5s apart by default, which
		// would stretch every broker hiccup to 5s.
		kgo.MetadataMinAge(500 * time.Millisecond),
		// No kgo.MaxProduceRequestsInflightPerBroker: with idempotence
		// franz-go rejects any value but 1 and sizes it itself, one
		// request per broker until the first response shows produce v4+,
		// then five, the window within which brokers deduplicate and
		// check sequence numbers, so in-flight requests cannot reorder a
		// partition.
	}
	if c.AllowAutoTopicCreation {
		opts = append(opts, kgo.AllowAutoTopicCreation())
	}
	return append(opts, c.securityOpts()...)
}

// checkBrokerAddr reports why addr is not a broker address: host:port, or
// a host or bare IPv6 address alone for port 9092, as the client reads it.
func checkBrokerAddr(addr string) error {
	if strings.Contains(addr, "://") {
		return errors.New("give host:port without a scheme; TLS is --kafka-tls")
	}
	if ip, _, _ := strings.Cut(addr, "%"); net.ParseIP(ip) != nil {
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) && ae.Err == "missing port in address" {
			return nil
		}
		return fmt.Errorf("%w; write it as host:port", err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	return nil
}

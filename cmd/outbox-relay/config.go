package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/outbox-relay/outbox-relay/cdc"
	"github.com/outbox-relay/outbox-relay/internal/replayquery"
	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/schema"
	"github.com/outbox-relay/outbox-relay/sinks/kafka"
	"github.com/outbox-relay/outbox-relay/sinks/nats"
	"github.com/outbox-relay/outbox-relay/sinks/rabbitmq"
	"github.com/outbox-relay/outbox-relay/sinks/redis"
)

// envPrefix turns --pg-dsn into OUTBOX_RELAY_PG_DSN.
const envPrefix = "OUTBOX_RELAY"

// defaultMetricsAddr is where run serves /metrics, /healthz and /readyz,
// and where healthcheck asks.
const defaultMetricsAddr = ":9479"

// Config is everything the relay can be told, composed from each package's
// own Config.
type Config struct {
	CDC cdc.Config
	// Sink names the broker events go to: one of sinkNames.
	Sink        string
	Kafka       kafka.Config
	NATS        nats.Config
	RabbitMQ    rabbitmq.Config
	Redis       redis.Config
	Relay       relay.Config
	MetricsAddr string
	// PprofAddr is the loopback address serving Go profiles under
	// /debug/pprof/. Empty means none.
	PprofAddr string
	LogFormat string
	LogLevel  string
	// MemoryLimit is the Go runtime's soft memory limit in bytes; zero
	// derives it from Relay.MaxInflightBytes (see memory.go).
	MemoryLimit int64
	// MaxProcs is the Go runtime's GOMAXPROCS; zero keeps Go's default
	// (see runtime.go).
	MaxProcs int
	// OnSlotLost is what run does when its slot is lost: onSlotLostFail
	// or onSlotLostRecover (see slotlost.go).
	OnSlotLost string
	// CreatedAtColumn is the timestamp column that orders rows read from
	// the table, by replay and by recovery.
	CreatedAtColumn string

	// PruneOlderThan turns on the janitor: rows older than it and confirmed
	// are deleted every PruneInterval. Zero means off.
	PruneOlderThan time.Duration
	PruneInterval  time.Duration

	// pprof is the deprecated --pprof: PprofAddr defaultPprofAddr.
	pprof bool
	// unusedSinkFlags are the flags of sinks other than Sink that were set
	// (see sinkFlagsUnused).
	unusedSinkFlags []string

	// Raw flag values parsed by finish.
	table          string
	brokers        string
	pruneOlderThan retention
	// Files holding secrets, read by finish (see secrets.go).
	dsnFile              string
	saslPasswordFile     string
	saslTokenFile        string
	natsPasswordFile     string
	natsTokenFile        string
	natsCredsFile        string
	redisPasswordFile    string
	rabbitmqPasswordFile string
}

// bindDatabase binds the flags every subcommand needs to reach the outbox.
func bindDatabase(fs *flag.FlagSet, c *Config) {
	fs.StringVar(&c.CDC.DSN, "pg-dsn", "", "PostgreSQL connection string (URL or key=value); the replication connection is derived from it")
	fs.StringVar(&c.dsnFile, "pg-dsn-file", "", "file holding the PostgreSQL connection string, instead of --pg-dsn; read at start-up, trailing newlines ignored")
	fs.StringVar(&c.table, "table", schema.DefaultTable.String(), "outbox table, schema.name")
	fs.StringVar(&c.CDC.Publication, "publication", cdc.DefaultPublication, "publication of the outbox table")
	fs.StringVar(&c.CDC.Slot, "slot", cdc.DefaultSlot, "logical replication slot")
	d := schema.DefaultColumns
	fs.StringVar(&c.CDC.Columns.ID, "column-id", d.ID, "column holding the event ID")
	fs.StringVar(&c.CDC.Columns.AggregateType, "column-aggregate-type", d.AggregateType, "column holding the aggregate type")
	fs.StringVar(&c.CDC.Columns.AggregateID, "column-aggregate-id", d.AggregateID, "column holding the aggregate ID (the Kafka key)")
	fs.StringVar(&c.CDC.Columns.EventType, "column-event-type", d.EventType, "column holding the event type")
	fs.StringVar(&c.CDC.Columns.Payload, "column-payload", d.Payload, "column holding the payload (the Kafka value)")
	fs.StringVar(&c.CDC.Columns.Headers, "column-headers", d.Headers, "jsonb column whose top-level keys become Kafka headers; empty for none")
	fs.StringVar(&c.LogFormat, "log-format", "json", "log format: json or text")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
}

// bindRun binds the flags of the daemon.
func bindRun(fs *flag.FlagSet, c *Config) {
	bindDatabase(fs, c)
	bindSink(fs, c)
	fs.StringVar(&c.brokers, "kafka-brokers", "localhost:9092", "Kafka bootstrap brokers, comma-separated host:port")
	fs.StringVar(&c.Kafka.Topic, "topic", kafka.DefaultTopic, "topic template; {aggregate_type} and {event_type} are replaced by the row's values")
	fs.StringVar(&c.Kafka.ClientID, "kafka-client-id", kafka.DefaultClientID, "Kafka client ID")
	fs.BoolVar(&c.Kafka.AllowAutoTopicCreation, "kafka-auto-create-topics", true, "ask the broker to create missing topics (the broker must allow it)")
	fs.DurationVar(&c.Kafka.Linger, "kafka-linger", 0, "how long the producer waits to fill a batch; 0 sends at once")
	fs.IntVar(&c.Kafka.MaxMessageBytes, "kafka-max-message-bytes", kafka.DefaultMaxMessageBytes, "largest record batch the producer sends; match the broker's message.max.bytes")
	fs.StringVar((*string)(&c.Kafka.Compression), "kafka-compression", string(kafka.DefaultCompression), "codec of record batches: none, snappy, lz4 or zstd (zstd needs brokers of Kafka 2.1 or later); snappy costs incompressible payloads least and still compresses JSON well")
	fs.StringVar((*string)(&c.Relay.PoisonPolicy), "poison-policy", string(relay.DefaultPoisonPolicy), "what to do with an event Kafka can never accept: dlq (set it aside in the dead-letter topic and go on) or halt (stop before it)")
	fs.StringVar(&c.Kafka.DeadLetterTopic, "dlq-topic", kafka.DefaultDeadLetterTopic, "dead-letter topic for poison events under --poison-policy=dlq")
	fs.StringVar((*string)(&c.Relay.Delivery), "delivery", string(relay.DefaultDelivery), "at-least-once, or exactly-once: Kafka transactions of whole PostgreSQL transactions with a fence, so read_committed consumers see each event once")
	fs.DurationVar(&c.Relay.TransactionInterval, "kafka-transaction-interval", relay.DefaultTransactionInterval, "under --delivery=exactly-once, how long a Kafka transaction stays open before it commits at the next PostgreSQL commit")
	fs.StringVar(&c.Kafka.TransactionalID, "kafka-transactional-id", "", "under --delivery=exactly-once, the Kafka transactional ID; empty means outbox-relay-SLOT, so relays on one slot fence each other")
	fs.IntVar(&c.Relay.MaxInflightEvents, "max-inflight-events", relay.DefaultMaxInflightEvents, "events published and not yet acknowledged before the relay stops reading")
	fs.IntVar(&c.Relay.MaxInflightBytes, "max-inflight-bytes", relay.DefaultMaxInflightBytes, "bytes of events published and not yet acknowledged before the relay stops reading")
	fs.IntVar(&c.MaxProcs, "max-procs", DefaultMaxProcs, "cores that run the relay's Go code at once (GOMAXPROCS); 0 means every CPU available; GOMAXPROCS in the environment wins")
	fs.Int64Var(&c.MemoryLimit, "memory-limit", 0, "soft memory limit of the process in bytes, where garbage collection runs harder; 0 means 3 × --max-inflight-bytes + 16 MiB (40 MiB by default); GOMEMLIMIT in the environment wins")
	fs.DurationVar(&c.CDC.StatusInterval, "status-interval", cdc.DefaultStatusInterval, "longest time between two confirmations of the position to PostgreSQL; a position that advances is confirmed within 100ms")
	fs.DurationVar(&c.CDC.ShutdownTimeout, "shutdown-timeout", cdc.DefaultShutdownTimeout, "on SIGTERM, how long to wait for in-flight events before exiting")
	fs.BoolVar(&c.CDC.CreateSlot, "create-slot", false, "create the replication slot if it is missing at start, instead of stopping (a new slot sees only later transactions: rows written before it are not relayed); the setup command creates it too; a slot lost while running stops the relay unless --on-slot-lost=recover")
	fs.StringVar(&c.CDC.MessagePrefix, "message-prefix", schema.DefaultMessagePrefix, "prefix of the transactional logical decoding messages (pg_logical_emit_message) relayed as outbox events; other prefixes and non-transactional messages are ignored")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", defaultMetricsAddr, "address serving /metrics, /healthz and /readyz; empty disables")
	fs.StringVar(&c.PprofAddr, "pprof-addr", "", "loopback address serving Go profiles under /debug/pprof/, e.g. 127.0.0.1:6060; empty disables")
	fs.BoolVar(&c.pprof, "pprof", false, "deprecated: use --pprof-addr=127.0.0.1:6060")
	fs.Var(&c.pruneOlderThan, "prune-older-than", "delete outbox rows older than this (7d, 36h) once the relay has confirmed them, every --prune-interval; 0 means never")
	fs.DurationVar(&c.PruneInterval, "prune-interval", DefaultPruneInterval, "under --prune-older-than, how often to prune")
	fs.StringVar(&c.OnSlotLost, "on-slot-lost", onSlotLostFail, "when the slot is invalidated or disappears: fail (stop, saying since when events may be missing) or recover (recreate it and republish from the outbox table every row not confirmed, then stream on)")
	fs.StringVar(&c.CreatedAtColumn, "column-created-at", replayquery.DefaultCreatedAt, "timestamp column ordering the rows replay and recovery read from the table")
	bindKafkaSecurity(fs, c)
	bindNATS(fs, c)
	bindRabbitMQ(fs, c)
	bindRedis(fs, c)
}

// bindKafkaSecurity binds the flags of the brokers' TLS and SASL.
func bindKafkaSecurity(fs *flag.FlagSet, c *Config) {
	t, s := &c.Kafka.TLS, &c.Kafka.SASL
	fs.BoolVar(&t.Enable, "kafka-tls", false, "connect to the brokers with TLS")
	bindTLSFiles(fs, "kafka", "the brokers' certificates", "each broker's host", &t.TLSFiles)
	fs.StringVar(&s.Mechanism, "kafka-sasl-mechanism", "", "SASL mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER; empty for none")
	fs.StringVar(&s.Username, "kafka-sasl-username", "", "SASL username (PLAIN, SCRAM)")
	fs.StringVar(&s.Password, "kafka-sasl-password", "", "SASL password (PLAIN, SCRAM); prefer --kafka-sasl-password-file")
	fs.StringVar(&c.saslPasswordFile, "kafka-sasl-password-file", "", "file holding the SASL password, instead of --kafka-sasl-password; read at start-up, trailing newlines ignored")
	fs.StringVar(&s.Token, "kafka-sasl-token", "", "OAUTHBEARER token; prefer --kafka-sasl-token-file")
	fs.StringVar(&c.saslTokenFile, "kafka-sasl-token-file", "", "file holding the OAUTHBEARER token, instead of --kafka-sasl-token; read at start-up, trailing newlines ignored")
}

// finish reads the secret files, parses the raw flag values and validates
// every part.
func (c *Config) finish() error {
	if err := c.readSecrets(); err != nil {
		return usageError{err}
	}
	t, err := schema.ParseTable(c.table)
	if err != nil {
		return usageError{fmt.Errorf("--table: %w", err)}
	}
	c.CDC.Table = t
	for _, b := range strings.Split(c.brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			c.Kafka.Brokers = append(c.Kafka.Brokers, b)
		}
	}
	c.CDC.SetDefaults()
	if err := c.CDC.Validate(); err != nil {
		return usageError{withHint(err, *c)}
	}
	if err := c.Relay.Validate(); err != nil {
		return usageError{err}
	}
	switch c.LogFormat {
	case "json", "text":
	default:
		return usageError{fmt.Errorf("--log-format %q: use json or text", c.LogFormat)}
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return usageError{err}
	}
	return nil
}

// finishRun also validates the Kafka settings, which only run needs.
func (c *Config) finishRun() error {
	if err := c.finish(); err != nil {
		return err
	}
	if err := c.finishSink(); err != nil {
		return err
	}
	// The producer's buffer must hold what the relay keeps in flight, or
	// Publish blocks the stream where a signal cannot reach it.
	c.Kafka.MaxBufferedRecords = kafka.BufferFor(c.Relay.MaxInflightEvents)
	switch c.Relay.Delivery {
	case relay.DeliveryExactlyOnce:
		if c.Kafka.TransactionalID == "" {
			c.Kafka.TransactionalID = "outbox-relay-" + c.CDC.Slot
		}
		// The fence belongs to the slot whatever the transactional ID.
		c.Kafka.CheckpointKey = c.CDC.Slot
	default:
		if c.Kafka.TransactionalID != "" {
			return usageError{fmt.Errorf("--kafka-transactional-id is set but --delivery is %q; set --delivery=%s, or drop the ID", c.Relay.Delivery, relay.DeliveryExactlyOnce)}
		}
	}
	if err := c.validateSink(); err != nil {
		return usageError{err}
	}
	if c.MaxProcs < 0 {
		return usageError{fmt.Errorf("--max-procs is %d; use a positive number of cores, or 0 for every CPU available", c.MaxProcs)}
	}
	if c.MemoryLimit < 0 {
		return usageError{fmt.Errorf("--memory-limit is %d; use a positive number of bytes, or 0 for 3 × --max-inflight-bytes + 16 MiB", c.MemoryLimit)}
	}
	c.PruneOlderThan = c.pruneOlderThan.d
	if c.PruneOlderThan > 0 && c.PruneInterval <= 0 {
		return usageError{fmt.Errorf("--prune-interval is %s; use a positive duration, e.g. %s", c.PruneInterval, DefaultPruneInterval)}
	}
	switch c.OnSlotLost {
	case onSlotLostFail, onSlotLostRecover:
	default:
		return usageError{fmt.Errorf("--on-slot-lost %q: use %s or %s", c.OnSlotLost, onSlotLostFail, onSlotLostRecover)}
	}
	if c.pprof && c.PprofAddr == "" {
		c.PprofAddr = defaultPprofAddr
	}
	if err := checkPprofAddr(c.PprofAddr); err != nil {
		return usageError{err}
	}
	return nil
}

// defaultPprofAddr is where the deprecated --pprof serves profiles.
const defaultPprofAddr = "127.0.0.1:6060"

// checkPprofAddr refuses a pprof address that is not loopback: profiles
// show the process's memory, and anyone who can reach them can read it.
func checkPprofAddr(addr string) error {
	if addr == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--pprof-addr %q: %w; use host:port, e.g. %s", addr, err, defaultPprofAddr)
	}
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		return nil
	}
	return fmt.Errorf("--pprof-addr %q: pprof must listen on a loopback address; use %s, localhost:6060 or [::1]:6060, "+
		"and reach it from elsewhere through a tunnel (ssh -L, kubectl port-forward)", addr, defaultPprofAddr)
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level %q: use debug, info, warn or error", s)
	}
	return l, nil
}

// logger builds the process's logger from the log flags, writing to w.
func (c *Config) logger(w io.Writer) *slog.Logger {
	level, _ := parseLevel(c.LogLevel)
	opts := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

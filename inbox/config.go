package inbox

import (
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-relay/outbox-relay/schema"
)

// Defaults SetDefaults fills in.
const (
	// DefaultTable is the inbox table: one row per event a consumer has
	// applied. It sits next to the relay's public.outbox.
	DefaultTable = "public.outbox_inbox"
	// DefaultMaxAttempts is how many handler failures a record may have
	// before it is dead-lettered.
	DefaultMaxAttempts = 5
	// DefaultBackoffInitial is the wait after a record's first failure.
	DefaultBackoffInitial = 100 * time.Millisecond
	// DefaultBackoffMax caps the wait between two attempts.
	DefaultBackoffMax = 10 * time.Second
	// DefaultDeadLetterTopic receives the records a consumer gives up on.
	DefaultDeadLetterTopic = "inbox-dlq"
	// DefaultCommitInterval is how often the Kafka offsets of applied
	// records are committed while Run runs.
	DefaultCommitInterval = time.Second
	// DefaultShutdownTimeout is how long a stop waits for running handler
	// calls before canceling their contexts.
	DefaultShutdownTimeout = 10 * time.Second
	// DefaultMaxBuffered bounds the records of one partition fetched but
	// not yet applied.
	DefaultMaxBuffered = 1000
	// DefaultKeyConcurrency bounds the handler calls running at once for
	// one partition under OrderByKey.
	DefaultKeyConcurrency = 16
	// DefaultPruneInterval is how often Run deletes inbox rows older than
	// Config.Retention.
	DefaultPruneInterval = 10 * time.Minute
	// DefaultPruneBatch is how many rows one DELETE of Prune removes.
	DefaultPruneBatch = 1000
)

// Order says which records a failing record holds back.
type Order int

const (
	// OrderByPartition applies the records of a partition one at a time in
	// offset order: a failing record holds back every later record of its
	// partition until it succeeds or is dead-lettered. It is the zero
	// value.
	OrderByPartition Order = iota
	// OrderByKey applies the records of one key one at a time in offset
	// order, and records of different keys of a partition concurrently (up
	// to Config.KeyConcurrency): a failing record holds back only the later
	// records of its key. The committed offset of a partition never passes
	// its lowest unfinished record, so a restart re-reads the records
	// finished after it, and the inbox table skips them.
	OrderByKey
)

// String returns "partition" or "key".
func (o Order) String() string {
	switch o {
	case OrderByPartition:
		return "partition"
	case OrderByKey:
		return "key"
	}
	return fmt.Sprintf("Order(%d)", int(o))
}

// Config configures a Consumer. The zero value of every optional field means
// its default; call SetDefaults to see them, Validate to check the rest.
type Config struct {
	// Brokers are the seed brokers, host:port. Required unless
	// ClientOptions name them (kgo.SeedBrokers).
	Brokers []string
	// Group is the Kafka consumer group. Required.
	Group string
	// Topics are the topics consumed. Required.
	Topics []string
	// Name is the consumer's name in the inbox table: two consumers with
	// the same Name share their record of applied events. Empty means
	// Group.
	Name string

	// DB is the pool the handler's transactions come from. Required.
	DB *pgxpool.Pool
	// Table is the inbox table, "schema.name" or "name" (schema public);
	// Setup creates it. Empty means DefaultTable.
	Table string

	// DedupeKey returns the key an event is deduplicated by, stored as the
	// inbox row's event_id. Nil means the record's "id" header, the ID the
	// relay gives every event; a record without one is a permanent error
	// (dead-lettered, the handler never called). An error it returns is
	// permanent unless marked Retryable.
	DedupeKey func(*kgo.Record) (string, error)

	// MaxAttempts is how many handler failures a record may have before it
	// is dead-lettered; a Permanent error dead-letters it at once. Failures
	// caused by the database connection are not counted (see the package
	// documentation). Zero means DefaultMaxAttempts.
	MaxAttempts int
	// BackoffInitial is the wait after a record's first failure; later
	// waits grow exponentially (factor 2, jitter ±50%) up to BackoffMax.
	// Zero means DefaultBackoffInitial.
	BackoffInitial time.Duration
	// BackoffMax caps the wait between attempts. Zero means
	// DefaultBackoffMax.
	BackoffMax time.Duration

	// DeadLetterTopic receives the records the consumer gives up on, with
	// the HeaderDLQ* headers. Run creates it (the broker's default
	// partitions and replication) when it is missing and the broker lets
	// it. Empty means DefaultDeadLetterTopic.
	DeadLetterTopic string

	// OrderBy says which records a failing record holds back. The zero
	// value is OrderByPartition.
	OrderBy Order
	// KeyConcurrency bounds the handler calls running at once for one
	// partition under OrderByKey; OrderByPartition runs one. Zero means
	// DefaultKeyConcurrency.
	KeyConcurrency int
	// MaxBuffered bounds the records of one partition fetched but not yet
	// finished; beyond it fetching of the partition pauses. Zero means
	// DefaultMaxBuffered.
	MaxBuffered int

	// CommitInterval is how often the offsets of finished records are
	// committed to Kafka while Run runs; they are also committed when
	// partitions are revoked and when Run returns. Zero means
	// DefaultCommitInterval.
	CommitInterval time.Duration
	// ShutdownTimeout is how long a stop (ctx done, partitions revoked)
	// lets running handler calls finish before canceling their contexts.
	// Zero means DefaultShutdownTimeout.
	ShutdownTimeout time.Duration

	// Retention, when positive, makes Run delete this consumer's inbox rows
	// processed longer ago, every PruneInterval, PruneBatch rows at a time.
	// It must exceed how long a duplicate can still arrive (see the package
	// documentation). Zero means Run prunes nothing.
	Retention time.Duration
	// PruneInterval is how often Run prunes. Zero means
	// DefaultPruneInterval.
	PruneInterval time.Duration
	// PruneBatch is how many rows one DELETE removes. Zero means
	// DefaultPruneBatch.
	PruneBatch int

	// ClientOptions are appended to the options New gives kgo.NewClient
	// (TLS, SASL, a logger, timeouts); they win over New's own. Options
	// that switch autocommit back on, or replace the group, topics or
	// rebalance callbacks, break the guarantees.
	ClientOptions []kgo.Opt
}

// SetDefaults fills every zero optional field with its default.
func (c *Config) SetDefaults() { *c = c.withDefaults() }

// withDefaults returns c with every zero optional field set to its default.
func (c Config) withDefaults() Config {
	if c.Name == "" {
		c.Name = c.Group
	}
	if c.Table == "" {
		c.Table = DefaultTable
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.BackoffInitial == 0 {
		c.BackoffInitial = DefaultBackoffInitial
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = DefaultBackoffMax
	}
	if c.DeadLetterTopic == "" {
		c.DeadLetterTopic = DefaultDeadLetterTopic
	}
	if c.KeyConcurrency == 0 {
		c.KeyConcurrency = DefaultKeyConcurrency
	}
	if c.MaxBuffered == 0 {
		c.MaxBuffered = DefaultMaxBuffered
	}
	if c.CommitInterval == 0 {
		c.CommitInterval = DefaultCommitInterval
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.PruneInterval == 0 {
		c.PruneInterval = DefaultPruneInterval
	}
	if c.PruneBatch == 0 {
		c.PruneBatch = DefaultPruneBatch
	}
	return c
}

// Validate reports what is wrong with c, with its defaults applied, and how
// to fix it; several problems are joined.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("inbox: "+format, args...)) }
	if len(c.Brokers) == 0 && len(c.ClientOptions) == 0 {
		bad("no brokers: set Brokers to the seed brokers, host:port")
	}
	if c.Group == "" {
		bad("no consumer group: set Group")
	}
	if len(c.Topics) == 0 {
		bad("no topics: set Topics to the topics to consume")
	}
	for _, t := range c.Topics {
		if t == "" {
			bad("an empty topic in Topics")
		}
		if t == c.DeadLetterTopic && t != "" {
			bad("topic %q is also the dead-letter topic: consume another or set DeadLetterTopic", t)
		}
	}
	if c.Name == "" {
		bad("no consumer name: set Name or Group")
	}
	if c.DB == nil {
		bad("no database: set DB to a *pgxpool.Pool")
	}
	if _, err := schema.ParseTable(c.Table); err != nil {
		bad("Table: %w", err)
	}
	if c.DeadLetterTopic == "" {
		bad("no dead-letter topic: set DeadLetterTopic")
	}
	if c.OrderBy != OrderByPartition && c.OrderBy != OrderByKey {
		bad("OrderBy is %v: use OrderByPartition or OrderByKey", c.OrderBy)
	}
	for _, n := range []struct {
		name string
		v    int
	}{{"MaxAttempts", c.MaxAttempts}, {"KeyConcurrency", c.KeyConcurrency}, {"MaxBuffered", c.MaxBuffered}, {"PruneBatch", c.PruneBatch}} {
		if n.v < 0 {
			bad("%s is %d: want a positive number, or zero for the default", n.name, n.v)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"BackoffInitial", c.BackoffInitial}, {"BackoffMax", c.BackoffMax}, {"CommitInterval", c.CommitInterval},
		{"ShutdownTimeout", c.ShutdownTimeout}, {"Retention", c.Retention}, {"PruneInterval", c.PruneInterval}} {
		if d.v < 0 {
			bad("%s is %s: want a positive duration, or zero for the default", d.name, d.v)
		}
	}
	if c.BackoffMax > 0 && c.BackoffInitial > c.BackoffMax {
		bad("BackoffInitial %s exceeds BackoffMax %s: lower it or raise BackoffMax", c.BackoffInitial, c.BackoffMax)
	}
	return errors.Join(errs...)
}

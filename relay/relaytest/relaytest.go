package relaytest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-relay/outbox-relay/cdc"
	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/relay/pipeline"
	"github.com/outbox-relay/outbox-relay/schema"
	"github.com/outbox-relay/outbox-relay/sinks/kafka"
)

// Config says which outbox the relay reads and how it publishes. The zero
// value relays public.outbox with the default columns to one-partition
// topics named outbox.{aggregate_type}.
type Config struct {
	// Table is the outbox table; Start creates it when it is missing. Zero
	// means schema.DefaultTable, public.outbox.
	Table schema.Table
	// Columns maps the table's columns to event fields. Zero means
	// schema.DefaultColumns.
	Columns schema.Columns
	// Topic is the topic template, as kafka.Config.Topic. Zero means
	// kafka.DefaultTopic, "outbox.{aggregate_type}".
	Topic string
	// Partitions is the partition count of each topic the broker creates.
	// Zero means 1, so that Next returns a topic's records in commit order.
	Partitions int
	// PoisonPolicy says what becomes of an event Kafka can never accept,
	// as relay.Config.PoisonPolicy. Zero means relay.PolicyDLQ: the event
	// goes to kafka.DefaultDeadLetterTopic, which Next also reads.
	PoisonPolicy relay.Policy
	// Timeout bounds Start's set-up and each Expect. Zero means 30 seconds.
	Timeout time.Duration
	// Logger receives the relay's logs. Nil discards them.
	Logger *slog.Logger
}

// shutdownTimeout bounds how long the relay drains when the test ends.
const shutdownTimeout = 10 * time.Second

// Relay is a relay running in the test process, with its broker and a
// consumer of every topic on it. Its methods are safe for concurrent use.
type Relay struct {
	// Broker is the in-memory Kafka cluster the relay publishes to. Its
	// ControlKey injects broker errors and delays; Start closes it when the
	// test ends.
	Broker *kfake.Cluster
	// Slot and Publication are the replication slot and publication Start
	// made, unique to this Relay; they are dropped when the test ends.
	Slot, Publication string

	timeout  time.Duration
	log      *slog.Logger
	consumer *kgo.Client
	stopped  <-chan struct{} // closed when the relay has stopped
	wait     func() error    // the relay's error, once stopped
	seen     atomic.Bool     // Next returned the relay's error

	mu      sync.Mutex
	queue   []Record
	arrived chan struct{} // signalled when queue grows
}

// Start runs a relay from the PostgreSQL database at dsn to a new in-memory
// broker until t ends, and returns once it streams. It creates the outbox
// table if missing, and a publication and replication slot with names of
// its own, so tests may share a database; events committed after Start
// returns are published, earlier ones are not. It fails t when any of this
// fails.
//
// When t ends, Start's cleanup stops the relay (letting it deliver what is
// in flight), closes the broker, and drops the slot and publication. An
// error that stopped the relay fails t then, unless Next or Expect already
// returned it. Call Start after pgtest.NewDatabase, so that the database
// outlives the relay.
func Start(t testing.TB, dsn string, cfg Config) *Relay {
	t.Helper()
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = 1
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	name := uniqueName()
	r := &Relay{
		Slot:        name,
		Publication: name,
		timeout:     cfg.Timeout,
		log:         logger.With("component", "relaytest"),
		arrived:     make(chan struct{}, 1),
	}
	ccfg := cdc.Config{
		DSN:             dsn,
		Table:           cfg.Table,
		Columns:         cfg.Columns,
		Publication:     r.Publication,
		Slot:            r.Slot,
		ShutdownTimeout: shutdownTimeout,
	}
	ctx, cancel := context.WithTimeout(t.Context(), cfg.Timeout)
	defer cancel()

	t.Cleanup(func() {
		if err := teardown(ccfg, cfg.Timeout); err != nil {
			t.Errorf("relaytest: %v", err)
		}
	})
	if err := setup(ctx, ccfg, logger); err != nil {
		t.Fatalf("relaytest: %v", err)
	}

	broker, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(cfg.Partitions))
	if err != nil {
		t.Fatalf("relaytest: start kafka broker: %v", err)
	}
	t.Cleanup(broker.Close)
	r.Broker = broker

	sink, err := kafka.New(kafka.Config{Brokers: broker.ListenAddrs(), Topic: cfg.Topic, AllowAutoTopicCreation: true}, logger, nil)
	if err != nil {
		t.Fatalf("relaytest: %v", err)
	}
	t.Cleanup(sink.Close)
	p, err := pipeline.New(pipeline.Config{CDC: ccfg, Relay: relay.Config{PoisonPolicy: cfg.PoisonPolicy}}, sink, logger, nil)
	if err != nil {
		t.Fatalf("relaytest: %v", err)
	}
	r.consumer, err = kgo.NewClient(
		kgo.SeedBrokers(broker.ListenAddrs()...),
		kgo.ConsumeRegex(),
		kgo.ConsumeTopics(".*"), // every topic but the broker's internal ones
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// Topics appear when the relay first publishes to them: look for
		// new ones often, and do not hold a fetch open for long.
		kgo.MetadataMinAge(10*time.Millisecond),
		kgo.MetadataMaxAge(100*time.Millisecond),
		kgo.FetchMaxWait(100*time.Millisecond),
	)
	if err != nil {
		t.Fatalf("relaytest: create kafka consumer: %v", err)
	}
	t.Cleanup(r.consumer.Close)

	runCtx, stop := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	result := make(chan error, 1)
	go func() {
		err := p.Run(runCtx, r.consume)
		close(stopped)
		result <- err
	}()
	r.stopped = stopped
	r.wait = sync.OnceValue(func() error { return <-result })
	wait := r.wait
	t.Cleanup(func() {
		stop()
		if err := wait(); err != nil && !r.seen.Load() {
			t.Errorf("relaytest: %v", err)
		}
	})

	if err := waitStreaming(ctx, stopped, p.Stream); err != nil {
		select {
		case <-stopped:
			if err = wait(); err == nil {
				err = errors.New("relay stopped")
			}
		default:
		}
		r.seen.Store(true) // reported here, not again at cleanup
		t.Fatalf("relaytest: relay did not start streaming: %v", err)
	}
	return r
}

// Brokers returns the broker's addresses, for the application's own Kafka
// clients.
func (r *Relay) Brokers() []string { return r.Broker.ListenAddrs() }

// setup makes the table, publication and slot of cfg.
func setup(ctx context.Context, cfg cdc.Config, logger *slog.Logger) error {
	conn, err := pgx.Connect(ctx, cfg.DSN)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL at %s: %w", cdc.RedactDSN(cfg.DSN), err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := cdc.Setup(ctx, conn, cfg, logger); err != nil {
		return fmt.Errorf("set up outbox %s, publication %q and slot %q: %w", cfg.Table, cfg.Publication, cfg.Slot, err)
	}
	return nil
}

// waitStreaming returns nil once stream streams, or an error when ctx ends
// or the relay stops first.
func waitStreaming(ctx context.Context, stopped <-chan struct{}, stream *cdc.Stream) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for stream.State() != cdc.StateStreaming {
		select {
		case <-stopped:
			return errors.New("relay stopped")
		case <-ctx.Done():
			return fmt.Errorf("still %s: %w", stream.State(), ctx.Err())
		case <-tick.C:
		}
	}
	return nil
}

// teardown drops the slot and publication of cfg.
func teardown(cfg cdc.Config, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, cfg.DSN)
	if err != nil {
		return fmt.Errorf("drop slot %q: connect to PostgreSQL at %s: %w", cfg.Slot, cdc.RedactDSN(cfg.DSN), err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return cdc.Teardown(ctx, conn, cfg)
}

// uniqueName returns a slot and publication name no other Relay uses.
func uniqueName() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails
	return "relaytest_" + hex.EncodeToString(b[:])
}

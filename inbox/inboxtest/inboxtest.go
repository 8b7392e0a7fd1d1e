// Package inboxtest runs an inbox.Consumer inside a test process against
// the in-memory broker of a relaytest.Relay, so that an application's test
// covers its producer and its consumer in one go test: the code under test
// commits a business row and its outbox row, the in-process relay
// publishes it, and the application's own inbox.Handler applies it in the
// application's database.
//
//	func TestTransfer(t *testing.T) {
//		dsn := pgtest.NewDatabase(t)
//		pool := ... // a *pgxpool.Pool on dsn, with the handler's tables
//		relay := relaytest.Start(t, dsn, relaytest.Config{})
//		c := inboxtest.Start(t, relay, inbox.Config{Topics: []string{"outbox.account"}, DB: pool}, apply)
//
//		// ... the code under test commits a transfer and its event, ID id ...
//
//		c.Wait(t, id) // returns once the inbox recorded id: apply's effects are committed
//	}
//
// Wait reads the inbox table, which holds an event's row exactly when the
// transaction that applied it committed, so after Wait the handler's
// effects are visible to the test.
//
// Invariant: when the test that called Start ends, the consumer has stopped
// (it drains, commits its offsets and leaves its group) and its goroutine
// has returned, before the relay's broker is closed.
package inboxtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-relay/outbox-relay/inbox"
	"github.com/outbox-relay/outbox-relay/relay/relaytest"
	"github.com/outbox-relay/outbox-relay/schema"
)

// Timeout bounds Start's set-up and each Wait.
const Timeout = 30 * time.Second

// Consumer is an inbox.Consumer running in the test process. Its methods
// are safe for concurrent use.
type Consumer struct {
	// Metrics holds the consumer's metrics (outbox_inbox_processed_total,
	// outbox_inbox_duplicates_total, ...), for testutil.ToFloat64 or
	// testutil.GatherAndCount.
	Metrics *prometheus.Registry
	// Config is the configuration the consumer runs with, defaults filled.
	Config inbox.Config

	done chan struct{} // closed when Run returned
	err  error         // Run's result, once done is closed
}

// Start runs an inbox.Consumer of cfg, calling h, against relay's broker
// until t ends, and returns at once. cfg.DB and cfg.Topics are required;
// Start fills cfg.Brokers with relay's broker, cfg.Group with "inboxtest"
// when empty, and adds client options that suit a test: topics are looked
// for every 100ms (the relay creates them when it first publishes), and the
// dead-letter topic is created when first written. It creates the inbox
// table cfg.Table when missing. It fails t when any of this fails.
//
// When t ends, Start's cleanup stops the consumer, before the relay stops.
// The consumer logs its warnings and errors through t.Log. An error that
// stopped the consumer fails t then, unless Wait reported it.
// Call Start after relaytest.Start.
func Start(t testing.TB, relay *relaytest.Relay, cfg inbox.Config, h inbox.Handler) *Consumer {
	t.Helper()
	if cfg.DB == nil {
		t.Fatal("inboxtest: cfg.DB is nil: pass the *pgxpool.Pool of the database the handler writes")
	}
	cfg.Brokers = relay.Brokers()
	if cfg.Group == "" {
		cfg.Group = "inboxtest"
	}
	cfg.ClientOptions = append([]kgo.Opt{
		kgo.MetadataMinAge(10 * time.Millisecond),
		kgo.MetadataMaxAge(100 * time.Millisecond),
		kgo.FetchMaxWait(100 * time.Millisecond),
		kgo.AllowAutoTopicCreation(),
	}, cfg.ClientOptions...)
	cfg.SetDefaults()

	ctx, cancel := context.WithTimeout(t.Context(), Timeout)
	defer cancel()
	if err := inbox.Setup(ctx, cfg.DB, cfg.Table); err != nil {
		t.Fatalf("inboxtest: %v", err)
	}
	reg := prometheus.NewRegistry()
	consumer, err := inbox.New(cfg, h, slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})), reg)
	if err != nil {
		t.Fatalf("inboxtest: %v", err)
	}
	c := &Consumer{Metrics: reg, Config: cfg, done: make(chan struct{})}
	runCtx, stop := context.WithCancel(context.Background())
	go func() {
		defer close(c.done)
		c.err = consumer.Run(runCtx)
	}()
	t.Cleanup(func() {
		stop()
		<-c.done
		if c.err != nil && !errors.Is(c.err, context.Canceled) {
			t.Errorf("inboxtest: consumer stopped: %v", c.err)
		}
	})
	return c
}

// Processed returns how many events the consumer has applied, as its
// outbox_inbox_processed_total counts them.
func (c *Consumer) Processed() int { return c.count("outbox_inbox_processed_total") }

// Duplicates returns how many records the consumer has skipped because the
// inbox had recorded their event, as outbox_inbox_duplicates_total counts
// them.
func (c *Consumer) Duplicates() int { return c.count("outbox_inbox_duplicates_total") }

// count sums the counter name of c's registry; -1 when it is not there.
func (c *Consumer) count(name string) int {
	mfs, err := c.Metrics.Gather()
	if err != nil {
		return -1
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var sum float64
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return int(sum)
		}
	}
	return -1
}

// testWriter writes log lines to t.Log: the consumer's warnings and errors
// show beside the test that caused them.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// Wait returns once the inbox table records every event of ids as applied
// by this consumer, failing t if that takes longer than Timeout or the
// consumer stops first. Once it returns, the handler's effects of those
// events are committed.
func (c *Consumer) Wait(t testing.TB, ids ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), Timeout)
	defer cancel()
	if err := c.WaitContext(ctx, ids...); err != nil {
		t.Fatalf("inboxtest: %v", err)
	}
}

// WaitContext is Wait with a context instead of a test: it returns nil once
// every event of ids is recorded, or an error naming those that are not
// when ctx ends or the consumer stops.
func (c *Consumer) WaitContext(ctx context.Context, ids ...string) error {
	table, err := schema.ParseTable(c.Config.Table)
	if err != nil {
		return err
	}
	query := fmt.Sprintf(`SELECT event_id FROM %s WHERE consumer = $1 AND event_id = ANY($2)`, table.Quoted())
	pending := slices.Clone(ids)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		rows, err := c.Config.DB.Query(ctx, query, c.Config.Name, pending)
		if err == nil {
			recorded := map[string]bool{}
			for rows.Next() {
				var id string
				if err = rows.Scan(&id); err != nil {
					break
				}
				recorded[id] = true
			}
			rows.Close()
			if err == nil {
				err = rows.Err()
			}
			pending = slices.DeleteFunc(pending, func(id string) bool { return recorded[id] })
			if err == nil && len(pending) == 0 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d events not applied (%v): %w", len(pending), len(ids), pending, errors.Join(err, context.Cause(ctx)))
		case <-c.done:
			if c.err == nil {
				c.err = errors.New("inbox.Consumer.Run returned nil")
			}
			return fmt.Errorf("consumer stopped with %d of %d events not applied (%v): %w", len(pending), len(ids), pending, c.err)
		case <-tick.C:
		}
	}
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outbox-relay/outbox-relay/cdc"
	"github.com/outbox-relay/outbox-relay/internal/replayquery"
	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/schema"
	"github.com/outbox-relay/outbox-relay/sinks/kafka"
)

// replayFlags are the flags replay adds to run's.
type replayFlags struct {
	since, until  string
	aggregateType string
	rate          string
	dryRun        bool
}

// bindReplay binds run's flags, which give replay the same sink, topics
// and security, and replay's own.
func bindReplay(fs *flag.FlagSet, c *Config, r *replayFlags) {
	bindRun(fs, c)
	fs.StringVar(&r.since, "since", "", "first row to publish again: an RFC 3339 time (rows created at or after it) or an event ID (that row and those after it); required")
	fs.StringVar(&r.until, "until", "", "end of the range: an RFC 3339 time (rows created before it) or an event ID (up to and including that row); empty means to the last row")
	fs.StringVar(&r.aggregateType, "aggregate-type", "", "publish only rows of this aggregate type")
	fs.StringVar(&r.rate, "rate", "", "most rows per second, as N or N/s; empty means as fast as the brokers take them")
	fs.BoolVar(&r.dryRun, "dry-run", false, "print the rows that would be sent and count them, without connecting to Kafka")
}

// parseRate reads N or N/s.
func parseRate(s string) (float64, error) {
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseFloat(strings.TrimSuffix(s, "/s"), 64)
	if err != nil || v <= 0 {
		return 0, usageError{fmt.Errorf("--rate %q: use a positive number of rows per second, such as 500/s", s)}
	}
	return v, nil
}

// replayBound resolves a --since or --until value in the transaction: an
// RFC 3339 time, or else an event ID the table holds.
func replayBound(ctx context.Context, tx pgx.Tx, q replayquery.Query, name, v string) (replayquery.Bound, error) {
	if v == "" {
		return replayquery.Bound{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return replayquery.Bound{CreatedAt: t}, nil
	}
	b, err := q.LookupBound(ctx, tx, v)
	if errors.Is(err, replayquery.ErrNoEvent) {
		return replayquery.Bound{}, usageError{fmt.Errorf("--%s %q is neither an RFC 3339 time (such as 2026-05-01T12:00:00Z) nor the ID of a row in %s", name, v, q.Table)}
	}
	return b, withReadGrant(err, tx, q)
}

// replay publishes rows of the outbox table again, as run would have
// published them, marked as replayed.
func replay(ctx context.Context, cfg Config, rf replayFlags, stdout, stderr io.Writer) error {
	logger := cfg.logger(stderr).With("component", "replay")
	if rf.since == "" {
		return usageError{errors.New("--since is required: an RFC 3339 time or an event ID; `--since 1970-01-01T00:00:00Z` replays the whole table")}
	}
	rate, err := parseRate(rf.rate)
	if err != nil {
		return err
	}
	// Replayed rows are at-least-once by nature: no transactional producer.
	if cfg.Relay.Delivery == relay.DeliveryExactlyOnce {
		logger.Warn("replay publishes at least once, without Kafka transactions, whatever --delivery says")
	}
	cfg.Kafka.TransactionalID, cfg.Kafka.CheckpointKey = "", ""
	applyMemoryLimit(cfg.MemoryLimit, cfg.Relay.MaxInflightBytes, logger)
	applyMaxProcs(cfg.MaxProcs, logger)
	started := time.Now()

	conn, err := pgx.Connect(ctx, cfg.CDC.DSN)
	if err != nil {
		return cdc.ConnectError(cfg.CDC.DSN, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := cdc.CheckColumns(ctx, conn, cfg.CDC.Table, cfg.CDC.Columns); err != nil {
		return err
	}
	// One snapshot for the bounds, the count and every row.
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("begin replay transaction: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // read only
	q := cfg.replayQuery()
	q.AggregateType = rf.aggregateType
	if q.Since, err = replayBound(ctx, tx, q, "since", rf.since); err != nil {
		return err
	}
	if q.Until, err = replayBound(ctx, tx, q, "until", rf.until); err != nil {
		return err
	}
	total, err := countRows(ctx, tx, q)
	if err != nil {
		return err
	}
	logger.Info("replaying", "table", q.Table.String(), "rows", total, "since", rf.since, "until", rf.until,
		"aggregate_type", rf.aggregateType, "dry_run", rf.dryRun, "replay_started", started.UTC().Format(time.RFC3339Nano))

	var sink relay.Sink
	var dry *dryRun
	if rf.dryRun {
		if dry, err = newDryRun(cfg.Kafka.Topic, stdout); err != nil {
			return usageError{err}
		}
		sink = dry
	} else {
		s, err := openSink(ctx, cfg, logger, prometheus.NewRegistry())
		if err != nil {
			return err
		}
		defer s.Close()
		sink = s
	}
	st, err := republish(ctx, tx, q, sink, republishOptions{
		Started:           started,
		Rate:              rate,
		MaxInflightEvents: cfg.Relay.MaxInflightEvents,
		MaxInflightBytes:  cfg.Relay.MaxInflightBytes,
		Policy:            cfg.Relay.PoisonPolicy,
		Total:             total,
		Log:               logger,
	}, cfg.CDC.ShutdownTimeout)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	if dry != nil {
		dry.summary(stderr, st)
		return nil
	}
	fmt.Fprintf(stderr, "replayed %d rows of %s in %s (%d set aside in the dead-letter topic)\n",
		st.Rows, q.Table, st.Took.Round(time.Millisecond), st.DeadLettered)
	return nil
}

// replayQuery returns the query of every row of the configured table.
func (c *Config) replayQuery() replayquery.Query {
	return replayquery.Query{Table: c.CDC.Table, Columns: c.CDC.Columns, CreatedAt: c.CreatedAtColumn}
}

// dryRun is the sink of `replay --dry-run`: it prints each event and
// acknowledges it at once.
type dryRun struct {
	w      io.Writer
	topic  func(*schema.Event) (string, error)
	topics map[string]int64
}

func newDryRun(template string, w io.Writer) (*dryRun, error) {
	topic, err := kafka.TopicNamer(template)
	if err != nil {
		return nil, err
	}
	fmt.Fprintln(w, "topic\tkey\tid\tevent_type")
	return &dryRun{w: w, topic: topic, topics: map[string]int64{}}, nil
}

func (d *dryRun) Publish(_ context.Context, ev *schema.Event, done func(error)) {
	topic, err := d.topic(ev)
	if err == nil && ev.AggregateID == "" {
		err = fmt.Errorf("event %s: %w", ev.ID, schema.ErrNoAggregateID)
	}
	if err != nil {
		topic = "(refused: " + err.Error() + ")"
	}
	d.topics[topic]++
	fmt.Fprintf(d.w, "%s\t%s\t%s\t%s\n", topic, ev.AggregateID, ev.ID, ev.EventType)
	done(nil)
}

func (d *dryRun) Flush(context.Context) error { return nil }

func (d *dryRun) summary(w io.Writer, st republishStats) {
	fmt.Fprintf(w, "dry run: would replay %d rows\n", st.Rows)
	for _, t := range slices.Sorted(maps.Keys(d.topics)) {
		fmt.Fprintf(w, "  %s\t%d\n", t, d.topics[t])
	}
}

// countRows counts the rows q selects in tx. When the role may not read the
// table, the error names the grant.
func countRows(ctx context.Context, tx pgx.Tx, q replayquery.Query) (int64, error) {
	var n int64
	sql, args := q.CountSQL()
	if err := tx.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		return 0, withReadGrant(fmt.Errorf("count rows of %s: %w", q.Table, err), tx, q)
	}
	return n, nil
}

// withReadGrant adds to err, when PostgreSQL refused it for want of a
// privilege, the grants that let tx's role read q's table.
func withReadGrant(err error, tx pgx.Tx, q replayquery.Query) error {
	if !cdc.Refused(err) {
		return err
	}
	role := pgx.Identifier{tx.Conn().Config().User}.Sanitize()
	return fmt.Errorf("%w; GRANT SELECT ON %s TO %s, and GRANT USAGE ON SCHEMA %s TO %s if it may not use the schema",
		err, q.Table.Quoted(), role, pgx.Identifier{q.Table.Schema}.Sanitize(), role)
}

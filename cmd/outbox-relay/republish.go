package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/internal/replayquery"
	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/schema"
)

// Republishing reads rows from the outbox table, not from the replication
// stream, and publishes them through the Kafka sink of `run`: `replay` and
// the recovery of a lost slot (slotlost.go) share it.

// republishBatch is how many rows one FETCH of the cursor reads.
const republishBatch = 1000

// republishProgress is how often progress is logged, at the latest.
const republishProgress = 5 * time.Second

// republishProgressRows is how many rows go by between two progress lines,
// at most.
const republishProgressRows = 100_000

// republishOptions configures republish.
type republishOptions struct {
	// Started is the replay's start time, the records' replay_started
	// header.
	Started time.Time
	// Rate bounds rows per second; zero means no bound.
	Rate float64
	// MaxInflightEvents and MaxInflightBytes bound the events published
	// and not yet acknowledged, as relay.Config's fields do for run.
	MaxInflightEvents int
	MaxInflightBytes  int
	// Policy is what becomes of a row Kafka can never accept: under
	// relay.PolicyDLQ it goes to the dead-letter topic when the sink can set
	// events aside; otherwise republishing stops at it.
	Policy relay.Policy
	// Total is the number of rows the query selects, for progress; negative
	// means unknown.
	Total int64
	// Log receives progress at info level.
	Log *slog.Logger
	// Published, when set, is called once for each acknowledged row.
	Published func()
}

// republishStats is what republish did.
type republishStats struct {
	Rows         int64 // rows acknowledged by the sink, dead letters included
	DeadLettered int64
	Took         time.Duration
	// Last is the last row published, in replay order; zero if none.
	LastID        string
	LastCreatedAt time.Time
}

// republish publishes every row q selects through tx, in q's order, reading
// them with a server-side cursor republishBatch rows at a time, and returns
// once the sink has acknowledged all it published. tx should be REPEATABLE
// READ, so that the count and the rows agree. Per key the sink keeps
// Publish order, so each aggregate's rows reach Kafka in replay order.
//
// When ctx ends it stops reading, waits for what is in flight (bounded by
// flushTimeout), and returns an error saying where to resume.
func republish(ctx context.Context, tx pgx.Tx, q replayquery.Query, sink relay.Sink, o republishOptions, flushTimeout time.Duration) (republishStats, error) {
	if o.MaxInflightEvents <= 0 {
		o.MaxInflightEvents = relay.DefaultMaxInflightEvents
	}
	if o.MaxInflightBytes <= 0 {
		o.MaxInflightBytes = relay.DefaultMaxInflightBytes
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	sql, args := q.SelectSQL()
	// Between fetches the transaction waits on the sink and the pacer: the
	// server must not end it as idle.
	if _, err := tx.Exec(ctx, "SET LOCAL idle_in_transaction_session_timeout = 0"); err != nil {
		return republishStats{}, fmt.Errorf("keep the replay transaction open while idle: %w", err)
	}
	if _, err := tx.Exec(ctx, "DECLARE outbox_relay_replay NO SCROLL CURSOR FOR "+sql, args...); err != nil {
		return republishStats{}, fmt.Errorf("open cursor over %s: %w", q.Table, err)
	}
	defer tx.Exec(context.WithoutCancel(ctx), "CLOSE outbox_relay_replay") //nolint:errcheck // the transaction ends next

	fl := newFlights(o.MaxInflightEvents, o.MaxInflightBytes)
	dl, _ := sink.(relay.DeadLetterer)
	halter, _ := sink.(relay.Halter)
	// Records outlive ctx: an interrupted replay waits for them.
	pubCtx := context.WithoutCancel(ctx)
	pace := newPacer(o.Rate)
	began := time.Now()
	var st republishStats
	var published int64
	nextLog, nextLogRows := began.Add(republishProgress), int64(republishProgressRows)
	progress := func(final bool) {
		acked, _ := fl.counts()
		secs := time.Since(began).Seconds()
		attrs := []any{"rows", acked, "published", published, "rows_per_second", int64(float64(acked) / max(secs, 1e-3))}
		if o.Total >= 0 {
			attrs = append(attrs, "total", o.Total)
		}
		if !st.LastCreatedAt.IsZero() {
			attrs = append(attrs, "last_created_at", st.LastCreatedAt.UTC().Format(time.RFC3339Nano), "last_event_id", st.LastID)
		}
		msg := "republishing"
		if final {
			msg = "republished"
		}
		o.Log.Info(msg, attrs...)
	}

	var readErr error
read:
	for {
		rows, err := tx.Query(ctx, fmt.Sprintf("FETCH FORWARD %d FROM outbox_relay_replay", republishBatch))
		if err != nil {
			readErr = fmt.Errorf("read rows of %s: %w", q.Table, err)
			break
		}
		n := 0
		for rows.Next() {
			n++
			ev := new(schema.Event)
			at, err := q.Scan(rows, ev)
			if err != nil {
				rows.Close()
				readErr = err
				break read
			}
			ev.Replayed = o.Started
			if err := pace.wait(ctx, published); err != nil {
				rows.Close()
				break read
			}
			if err := fl.acquire(ctx, ev.Size()); err != nil {
				rows.Close()
				break read
			}
			size := ev.Size()
			var done func(error)
			done = func(err error) {
				if err == nil {
					fl.release(size, nil)
					if o.Published != nil {
						o.Published()
					}
					return
				}
				if reason, ok := poison(dl, err); ok && o.Policy == relay.PolicyDLQ {
					o.Log.Error("row set aside in the dead-letter topic", "event_id", ev.ID, "aggregate_id", ev.AggregateID, "reason", reason, "err", err)
					fl.deadLettered()
					dl.DeadLetter(pubCtx, ev, reason, err, 1, func(err error) {
						if err != nil {
							err = fmt.Errorf("set poison event %s aside: %w", ev.ID, err)
							if halter != nil {
								halter.Halt(err)
							}
						}
						fl.release(size, err)
					})
					return
				}
				err = fmt.Errorf("publish event %s (created %s): %w", ev.ID, at.UTC().Format(time.RFC3339Nano), err)
				if halter != nil {
					halter.Halt(err)
				}
				fl.release(size, err)
			}
			sink.Publish(pubCtx, ev, done)
			published++
			st.LastID, st.LastCreatedAt = ev.ID, at
			if published >= nextLogRows || time.Now().After(nextLog) {
				progress(false)
				nextLog, nextLogRows = time.Now().Add(republishProgress), published+republishProgressRows
			}
			if fl.failed() != nil {
				rows.Close()
				break read
			}
		}
		if err := rows.Err(); err != nil {
			readErr = fmt.Errorf("read rows of %s: %w", q.Table, err)
			break
		}
		if n == 0 {
			break
		}
	}

	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
	defer cancel()
	flushErr := sink.Flush(fctx)
	if flushErr == nil {
		flushErr = fl.wait(fctx)
	}
	st.Rows, st.DeadLettered = fl.counts()
	st.Took = time.Since(began)
	progress(true)
	resume := "; to go on, replay again with the same --since (rows already sent go again; consumers deduplicate by id)"
	if st.LastID != "" && st.Rows == published {
		// Every row handed to the sink was acknowledged: none before the
		// last one is missing.
		resume = fmt.Sprintf("; to go on, replay again with --since %s (that row is sent again)", st.LastID)
	}
	switch {
	case fl.failed() != nil:
		return st, fmt.Errorf("stopped after %d of %d rows: %w%s", st.Rows, published, fl.failed(), resume)
	case readErr != nil:
		return st, fmt.Errorf("stopped after %d rows: %w%s", st.Rows, readErr, resume)
	case flushErr != nil:
		return st, fmt.Errorf("%d of %d rows unacknowledged: %w%s", published-st.Rows, published, flushErr, resume)
	case ctx.Err() != nil:
		return st, fmt.Errorf("interrupted after %d rows%s: %w", st.Rows, resume, ctx.Err())
	}
	return st, nil
}

// poison reports whether err makes an event one the sink can never deliver.
func poison(dl relay.DeadLetterer, err error) (string, bool) {
	if dl == nil || errors.Is(err, context.Canceled) {
		return "", false
	}
	return dl.Poison(err)
}

// flights bounds the events published and not yet acknowledged, by count
// and by bytes, and counts what the sink acknowledged. Its methods are safe
// from any goroutine.
type flights struct {
	maxEvents, maxBytes int

	mu      sync.Mutex
	events  int
	bytes   int
	acked   int64
	letters int64
	err     error
	changed chan struct{} // receives when events drop or err is set
}

func newFlights(maxEvents, maxBytes int) *flights {
	return &flights{maxEvents: maxEvents, maxBytes: maxBytes, changed: make(chan struct{}, 1)}
}

// acquire waits for room for an event of size bytes (an event larger than
// the byte bound goes alone), or until ctx ends or an event failed.
func (f *flights) acquire(ctx context.Context, size int) error {
	for {
		f.mu.Lock()
		if f.err != nil {
			f.mu.Unlock()
			return f.err
		}
		if f.events == 0 || (f.events < f.maxEvents && f.bytes+size <= f.maxBytes) {
			f.events++
			f.bytes += size
			f.mu.Unlock()
			return nil
		}
		f.mu.Unlock()
		select {
		case <-f.changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// release ends an event's flight; a non-nil err is its failure, of which
// the first is kept.
func (f *flights) release(size int, err error) {
	f.mu.Lock()
	f.events--
	f.bytes -= size
	if err == nil {
		f.acked++
	} else if f.err == nil {
		f.err = err
	}
	f.mu.Unlock()
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

func (f *flights) deadLettered() {
	f.mu.Lock()
	f.letters++
	f.mu.Unlock()
}

func (f *flights) failed() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

func (f *flights) counts() (acked, deadLettered int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.acked, f.letters
}

// wait blocks until no event is in flight or ctx ends.
func (f *flights) wait(ctx context.Context) error {
	for {
		f.mu.Lock()
		n := f.events
		f.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-f.changed:
		case <-ctx.Done():
			return fmt.Errorf("wait for %d acknowledgements: %w", n, ctx.Err())
		}
	}
}

// pacer holds publishing to a rate: row n goes no sooner than n/rate
// seconds after the first.
type pacer struct {
	rate  float64
	start time.Time
}

func newPacer(rate float64) *pacer { return &pacer{rate: rate} }

// wait returns once row n may go, or with ctx's error.
func (p *pacer) wait(ctx context.Context, n int64) error {
	if p.rate <= 0 {
		return ctx.Err()
	}
	if p.start.IsZero() {
		p.start = time.Now()
	}
	// Sleeping below a few milliseconds costs more than it paces.
	ahead := time.Until(p.start.Add(time.Duration(float64(n) / p.rate * float64(time.Second))))
	if ahead < -time.Second {
		// Behind by more than a second (the sink stalled): start the
		// schedule again, so that the rows missed are not sent in a burst.
		p.start = p.start.Add(-ahead - time.Second)
	}
	if ahead < 2*time.Millisecond {
		return ctx.Err()
	}
	return sleep(ctx, ahead)
}

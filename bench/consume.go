package main

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// receiver counts the benchmark's rows as a consumer receives them,
// recording when row n first arrived. The consumer is the broker's own Go
// client: franz-go for Kafka (newReceiver), nats.go and go-redis for the
// other sinks (newSinkReceiver).
type receiver struct {
	what string // what the consumer reads, for messages: topic outbox.bench
	// consume reads until ctx ends, then returns nil, handing each
	// record's value to got with the time it arrived (unix nanoseconds);
	// it returns an error when it cannot go on. It releases the client.
	consume  func(ctx context.Context, got func(value []byte, at int64)) error
	received []atomic.Int64 // unix nanoseconds; 0 if not (yet)
	count    atomic.Int64   // rows received, each counted once
	last     atomic.Int64   // unix nanoseconds the last row not seen before arrived
}

// consumerFetchMaxWait is how long the broker may hold a fetch of the
// benchmark's consumer waiting for records (for Redis, XREAD's BLOCK).
const consumerFetchMaxWait = 10 * time.Millisecond

// newReceiver connects a consumer of topic from its start, for rows
// numbered 0 to rows-1; it creates the topic if the relay has not yet. It
// reads with read_committed, as a consumer of an exactly-once relay must (a
// record arrives once the broker has the commit of its transaction, not
// when it was produced), and at-least-once records, produced outside
// transactions, arrive as with read_uncommitted; the broker holds a fetch
// for at most consumerFetchMaxWait.
func newReceiver(brokers, topic string, rows int64) (*receiver, error) {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(strings.Split(brokers, ",")...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.AllowAutoTopicCreation(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(consumerFetchMaxWait),
		kgo.MetadataMinAge(250*time.Millisecond),
	)
	if err != nil {
		return nil, fmt.Errorf("create consumer of %s: %w", brokers, err)
	}
	consume := func(ctx context.Context, got func([]byte, int64)) error {
		defer cl.Close()
		for {
			fs := cl.PollFetches(ctx)
			now := time.Now().UnixNano()
			if ctx.Err() != nil {
				return nil
			}
			if err := fs.Err0(); err != nil && !fs.IsClientClosed() {
				return fmt.Errorf("consume %s: %w", topic, err)
			}
			fs.EachRecord(func(rec *kgo.Record) { got(rec.Value, now) })
		}
	}
	return &receiver{what: "topic " + topic, consume: consume, received: make([]atomic.Int64, rows)}, nil
}

// run consumes until ctx ends.
func (r *receiver) run(ctx context.Context) error {
	return r.consume(ctx, r.note)
}

// note counts the row whose payload is v, received at unix nanoseconds at,
// unless it was counted before.
func (r *receiver) note(v []byte, at int64) {
	n, ok := rowNumber(v)
	if ok && n >= 0 && n < int64(len(r.received)) {
		if r.received[n].CompareAndSwap(0, at) {
			// Before the count, so that whoever sees the count sees
			// the time.
			r.last.Store(at)
			r.count.Add(1)
		}
	}
}

// awaitCount waits until the receiver has counted rows rows, for at most
// timeout, and returns when the last of them arrived. It fails early if
// relay exits.
func (r *receiver) awaitCount(ctx context.Context, relay *process, rows int64, timeout time.Duration) (time.Time, error) {
	deadline := time.After(timeout)
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for r.count.Load() < rows {
		select {
		case <-relay.done:
			return time.Time{}, relay.exitError()
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("waiting for the consumer of %s: %w", r.what, ctx.Err())
		case <-deadline:
			return time.Time{}, fmt.Errorf("the consumer of %s counted %d of %d rows in %s", r.what, r.count.Load(), rows, timeout)
		case <-t.C:
		}
	}
	return time.Unix(0, r.last.Load()), nil
}

// rowNumber reads n from a payload {"n": 123, ...}.
func rowNumber(v []byte) (int64, bool) {
	_, rest, ok := bytes.Cut(v, []byte(`"n": `))
	if !ok {
		return 0, false
	}
	end := bytes.IndexAny(rest, ",}")
	if end < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(string(rest[:end]), 10, 64)
	return n, err == nil
}

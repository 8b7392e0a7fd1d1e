package relaytest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Record is one Kafka record the relay published, as a consumer reads it.
type Record struct {
	Topic     string
	Partition int32
	Offset    int64
	// Key is the event's aggregate ID.
	Key string
	// Value is the event's payload as PostgreSQL printed it: for jsonb,
	// canonical spacing and key order, so compare it as JSON.
	Value []byte
	// Headers holds every record header: id, event_type, aggregate_type
	// and position (see the kafka package's Header constants), then each
	// top-level key of the row's headers column, such as traceparent.
	Headers map[string]string
}

// String describes r for test failures.
func (r Record) String() string {
	return fmt.Sprintf("%s/%d@%d key=%q event_type=%q value=%s", r.Topic, r.Partition, r.Offset, r.Key, r.Headers["event_type"], r.Value)
}

// ErrStopped is what Next returns once the relay stopped without an error:
// the test that started it has ended.
var ErrStopped = errors.New("relaytest: relay stopped")

// Next returns the next record published to any topic of the broker,
// including the dead-letter topic, blocking until one arrives, ctx ends or
// the relay stops. Records of one partition come in the order they were
// published, which is commit order; records of different topics or
// partitions may come in any order relative to each other. Each record is
// returned once, to one caller.
//
// When the relay has stopped with an error (a setup problem, or a poison
// event under relay.PolicyHalt), Next returns that error, wrapped, once it
// has returned every record read before.
func (r *Relay) Next(ctx context.Context) (Record, error) {
	for {
		if rec, ok := r.pop(); ok {
			return rec, nil
		}
		select {
		case <-r.arrived:
		case <-ctx.Done():
			return Record{}, fmt.Errorf("relaytest: no record before the context ended: %w", context.Cause(ctx))
		case <-r.stopped:
			if rec, ok := r.pop(); ok {
				return rec, nil
			}
			err := r.wait()
			if err == nil {
				return Record{}, ErrStopped
			}
			r.seen.Store(true)
			return Record{}, fmt.Errorf("relaytest: %w", err)
		}
	}
}

// Expect returns the next n records (see Next), failing t if they do not all
// arrive within Config.Timeout or the relay stops first. It does not wait
// for more: a test that must see no further record writes a marker event
// and expects it to come next.
func (r *Relay) Expect(t testing.TB, n int) []Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), r.timeout)
	defer cancel()
	recs := make([]Record, 0, n)
	for len(recs) < n {
		rec, err := r.Next(ctx)
		if err != nil {
			var got strings.Builder
			for _, rec := range recs {
				got.WriteString("\n\t" + rec.String())
			}
			t.Fatalf("expected %d records, got %d: %v%s", n, len(recs), err, got.String())
		}
		recs = append(recs, rec)
	}
	return recs
}

// pop takes the oldest record read and not yet returned.
func (r *Relay) pop() (Record, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.queue) == 0 {
		return Record{}, false
	}
	rec := r.queue[0]
	r.queue[0] = Record{}
	r.queue = r.queue[1:]
	if len(r.queue) > 0 {
		r.signal() // for another Next that waits meanwhile
	}
	return rec, true
}

// consume reads every topic of the broker into the queue until ctx ends.
func (r *Relay) consume(ctx context.Context) error {
	for {
		fs := r.consumer.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var recs []Record
		fs.EachRecord(func(kr *kgo.Record) { recs = append(recs, record(kr)) })
		failed := false
		fs.EachError(func(topic string, partition int32, err error) {
			failed = true
			r.log.Warn("consume failed; retrying", "topic", topic, "partition", partition, "err", err)
		})
		if len(recs) > 0 {
			r.mu.Lock()
			r.queue = append(r.queue, recs...)
			r.signal()
			r.mu.Unlock()
		} else if failed {
			select { // do not spin on an error that repeats at once
			case <-ctx.Done():
				return nil
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

// signal wakes one Next waiting for a record.
func (r *Relay) signal() {
	select {
	case r.arrived <- struct{}{}:
	default: // a signal is pending already
	}
}

func record(kr *kgo.Record) Record {
	h := make(map[string]string, len(kr.Headers))
	for _, kh := range kr.Headers {
		h[kh.Key] = string(kh.Value)
	}
	return Record{
		Topic:     kr.Topic,
		Partition: kr.Partition,
		Offset:    kr.Offset,
		Key:       string(kr.Key),
		Value:     kr.Value,
		Headers:   h,
	}
}

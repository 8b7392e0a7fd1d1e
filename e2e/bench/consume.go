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

// receiver consumes the benchmark's topic, recording when row n arrived.
type receiver struct {
	topic    string
	cl       *kgo.Client
	received []atomic.Int64 // unix nanoseconds; 0 if not (yet)
	count    atomic.Int64
}

// newReceiver connects a consumer of topic from its start, for rows
// numbered 0 to rows-1; it creates the topic if the relay has not yet.
// With readCommitted it reads only records of committed Kafka transactions,
// as a consumer of an exactly-once relay must: a record arrives once the
// broker has the commit of its transaction, not when it was produced.
// Otherwise it reads with franz-go's default, read_uncommitted.
func newReceiver(brokers, topic string, rows int64, readCommitted bool) (*receiver, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(strings.Split(brokers, ",")...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.AllowAutoTopicCreation(),
		kgo.FetchMaxWait(time.Second),
		kgo.MetadataMinAge(250 * time.Millisecond),
	}
	if readCommitted {
		opts = append(opts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("create consumer of %s: %w", brokers, err)
	}
	return &receiver{topic: topic, cl: cl, received: make([]atomic.Int64, rows)}, nil
}

// run consumes until ctx ends.
func (r *receiver) run(ctx context.Context) error {
	defer r.cl.Close()
	for {
		fs := r.cl.PollFetches(ctx)
		now := time.Now().UnixNano()
		if ctx.Err() != nil {
			return nil
		}
		if err := fs.Err0(); err != nil && !fs.IsClientClosed() {
			return fmt.Errorf("consume %s: %w", r.topic, err)
		}
		fs.EachRecord(func(rec *kgo.Record) {
			n, ok := rowNumber(rec.Value)
			if ok && n >= 0 && n < int64(len(r.received)) {
				if r.received[n].CompareAndSwap(0, now) {
					r.count.Add(1)
				}
			}
		})
	}
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

package inbox

import (
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/twmb/franz-go/pkg/kgo"
)

// handle finishes rec: applies it, skips it as a duplicate, or dead-letters
// it, retrying with backoff in between. It returns false, with no error,
// when p halted or abandoned the record first; and an error only when Run
// cannot go on.
func (c *Consumer) handle(p *partition, rec *kgo.Record) (finished bool, err error) {
	ev := newEvent(rec)
	bo := c.backoff()
	log := c.logger.With("topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset)

	id, err := c.dedupeKey(rec)
	// A key error is permanent unless marked Retryable.
	for err != nil && !IsPermanent(err) && errors.As(err, new(*retryableError)) {
		log.Warn("deduplication key failed, retrying", "err", err)
		if !c.sleep(p, bo) {
			return false, nil
		}
		id, err = c.dedupeKey(rec)
	}
	if err != nil {
		now := time.Now()
		return c.deadLetter(p, rec, fmt.Errorf("deduplication key: %w", err), 0, now, now)
	}
	ev.ID = id
	log = log.With("event_id", id)

	var first, last time.Time
	failures := 0
	for attempt := 1; ; attempt++ {
		if p.halted() {
			return false, nil
		}
		last = time.Now()
		if first.IsZero() {
			first = last
		}
		ev.Attempt = attempt
		c.hooks.attempt(ev)
		dup, err := c.apply(p.hctx, ev)
		if p.hctx.Err() != nil {
			return false, nil // abandoned: the outcome is the next reader's to find
		}
		switch {
		case err == nil && dup:
			c.metrics.duplicates.Inc()
			log.Debug("duplicate skipped")
			return true, nil
		case err == nil:
			c.metrics.processed.Inc()
			log.Debug("event applied", "attempt", attempt)
			c.hooks.applied(ev)
			return true, nil
		}
		var fe *fatalError
		if errors.As(err, &fe) {
			return false, fe.err
		}
		if isOutage(err) {
			log.Warn("database failed, retrying; the attempt is not counted", "attempt", attempt, "err", err)
		} else {
			failures++
			if IsPermanent(err) || failures >= c.cfg.MaxAttempts {
				return c.deadLetter(p, rec, err, failures, first, last)
			}
			log.Warn("handler failed, retrying", "attempt", attempt, "failures", failures, "err", err)
		}
		c.metrics.retries.Inc()
		if !c.sleep(p, bo) {
			return false, nil
		}
	}
}

// dedupeKey returns Config.DedupeKey(rec), or rec's "id" header.
func (c *Consumer) dedupeKey(rec *kgo.Record) (string, error) {
	if c.cfg.DedupeKey != nil {
		id, err := c.cfg.DedupeKey(rec)
		if err == nil && id == "" {
			err = Permanent(errors.New("inbox: DedupeKey returned an empty key"))
		}
		return id, err
	}
	for i := len(rec.Headers) - 1; i >= 0; i-- {
		if h := rec.Headers[i]; h.Key == HeaderID && len(h.Value) > 0 {
			return string(h.Value), nil
		}
	}
	return "", Permanent(ErrNoID)
}

// backoff returns a fresh exponential backoff of the configured bounds.
func (c *Consumer) backoff() *backoff.ExponentialBackOff {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = c.cfg.BackoffInitial
	bo.MaxInterval = c.cfg.BackoffMax
	bo.Multiplier = 2
	bo.RandomizationFactor = 0.5
	bo.Reset()
	return bo
}

// sleep waits bo's next interval and reports whether p is still running.
func (c *Consumer) sleep(p *partition, bo *backoff.ExponentialBackOff) bool {
	t := time.NewTimer(bo.NextBackOff())
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-p.stop:
		return false
	}
}

// newEvent returns the Event of rec, without ID and Attempt.
func newEvent(rec *kgo.Record) Event {
	h := make(map[string]string, len(rec.Headers))
	for _, kv := range rec.Headers {
		h[kv.Key] = string(kv.Value)
	}
	return Event{
		Topic:         rec.Topic,
		Partition:     rec.Partition,
		Offset:        rec.Offset,
		Key:           rec.Key,
		Value:         rec.Value,
		Headers:       h,
		Position:      h[HeaderPosition],
		EventType:     h[HeaderEventType],
		AggregateType: h[HeaderAggregateType],
		Timestamp:     rec.Timestamp,
		Record:        rec,
	}
}

package kafka

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-relay/outbox-relay/schema"
	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// ReasonRejected: the broker refused the record for good (an invalid
// record, a policy violation).
const ReasonRejected = delivery.ReasonRejected

// Headers a dead-lettered record carries besides the event's own
// HeaderID, HeaderEventType, HeaderAggregateType and HeaderPosition: those
// of every sink (see sinks/delivery for each one's meaning). HeaderDLQTopic
// is the topic the event would have gone to.
const (
	HeaderDLQReason         = delivery.HeaderDLQReason
	HeaderDLQError          = delivery.HeaderDLQError
	HeaderDLQAttempts       = delivery.HeaderDLQAttempts
	HeaderDLQSourceLSN      = delivery.HeaderDLQSourceLSN
	HeaderDLQTime           = delivery.HeaderDLQTime
	HeaderDLQTable          = delivery.HeaderDLQTable
	HeaderDLQMessagePrefix  = delivery.HeaderDLQMessagePrefix
	HeaderDLQHeaders        = delivery.HeaderDLQHeaders
	HeaderDLQTopic          = delivery.HeaderDLQTopic
	HeaderDLQPayloadOmitted = delivery.HeaderDLQPayloadOmitted
)

// Poison reports whether err, given to an event's done, means the event can
// never be delivered, and a reason from a closed set: the Reason constants.
// It covers a *RecordError and the broker's permanent refusals of the record
// itself (too large, invalid, against a policy), which done reports only
// for a record the Sink sent alone. A refused topic (not authorized,
// unknown) is not poison: the Sink holds its events and retries. Anything
// else, such as a closed client, is not poison either: it is a reason to
// stop, and PostgreSQL sends the event again after a restart.
func (s *Sink) Poison(err error) (reason string, ok bool) {
	var re *RecordError
	if errors.As(err, &re) {
		return re.Reason, true
	}
	switch {
	case errors.Is(err, kerr.MessageTooLarge), errors.Is(err, kerr.RecordListTooLarge):
		return ReasonSize, true
	case errors.Is(err, kerr.InvalidRecord), errors.Is(err, kerr.CorruptMessage),
		errors.Is(err, kerr.PolicyViolation), errors.Is(err, kerr.InvalidRequiredAcks):
		return ReasonRejected, true
	}
	return "", false
}

// DeadLetter publishes ev to the dead-letter topic, keyed by its aggregate
// ID (no key when it has none), with its payload as the value unless reason
// is ReasonSize or the record would exceed the batch limit, and with the
// headers of delivery.DeadLetterHeaders saying why and where it was going.
// It calls done once, like Publish. It never blocks, so it may be called
// from another event's done.
func (s *Sink) DeadLetter(ctx context.Context, ev *schema.Event, reason string, cause error, attempts int, done func(error)) {
	rec := &kgo.Record{Topic: s.dlqTopic, Value: ev.Payload}
	if ev.AggregateID != "" {
		rec.Key = []byte(ev.AggregateID)
	}
	if reason == ReasonSize {
		rec.Value = nil
	}
	var dest string
	if t, err := s.mapper.topics.lookup(ev); err == nil {
		dest = t.name
	}
	hs := delivery.DeadLetterHeaders(ev, reason, cause, attempts, dest)
	rec.Headers = make([]kgo.RecordHeader, len(hs), len(hs)+1)
	for i, h := range hs {
		rec.Headers[i] = kgo.RecordHeader{Key: h.Key, Value: h.Value}
	}
	omitted := reason == ReasonSize
	if !omitted && batchBytes(rec) > s.mapper.maxBytes {
		// A malformed message's content, say, may exceed a batch: set
		// the event aside without it rather than not at all.
		omitted, rec.Value = true, nil
	}
	if omitted {
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: HeaderDLQPayloadOmitted, Value: []byte("true")})
	}

	s.inflight.add()
	// Produce blocks while the client's buffer is full, and the buffer
	// drains only as done callbacks, which may be our caller, return; so
	// produce on the letters goroutine, which keeps the order of the calls
	// and so each aggregate's dead letters in order. Close waits for it.
	s.letters.add(func() {
		s.client.Produce(ctx, rec, func(_ *kgo.Record, err error) {
			if err != nil {
				err = fmt.Errorf("produce event %s to dead-letter topic %q: %w", ev.ID, s.dlqTopic, err)
			} else {
				s.metrics.deadLettered.WithLabelValues(reason).Inc()
			}
			done(err)
			s.inflight.remove()
		})
	})
}

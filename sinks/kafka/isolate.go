package kafka

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// When the broker refuses a produce batch for good, franz-go fails every
// record buffered for that partition with the same error, and a topic-level
// refusal fails every record of the topic: neither says which event, if any,
// is at fault. The Sink sends such records again, one at a time, in the
// order they failed, on a client that never puts two records in a batch,
// and judges each by its own outcome. While any record waits to be sent
// alone, Publish queues new events behind it, so that no event of a key
// overtakes an earlier one.

// batchRefusal reports a broker error that refuses a whole batch for what
// one of its records may hold: size, content, or a broker policy. Sent alone,
// a record that gets it again is at fault.
func batchRefusal(err error) bool {
	for _, target := range []error{kerr.MessageTooLarge, kerr.RecordListTooLarge, kerr.InvalidRecord,
		kerr.CorruptMessage, kerr.PolicyViolation} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// topicRefusal reports a broker error that refuses every record of a topic,
// whatever it holds: an outage of that topic for this relay (missing, not
// authorized), never the event's fault.
func topicRefusal(err error) bool {
	return errors.Is(err, kerr.TopicAuthorizationFailed) || errors.Is(err, kerr.UnknownTopicOrPartition) ||
		errors.Is(err, kerr.InvalidTopicException) || errors.Is(err, kerr.UnknownTopicID)
}

// held is a record waiting to be sent alone, and what to call once it has
// an outcome.
type held struct {
	ctx    context.Context
	rec    *kgo.Record
	finish func(error)
}

// holdAlone queues h to be sent alone.
func (s *Sink) holdAlone(h held) {
	s.isolate.add(func() { s.sendAlone(h) })
}

// sendAlone produces h's record on the single-record client until it has an
// outcome that is the record's own: success, a refusal of the record, or any
// error but a topic-level refusal, which it retries with backoff while the
// Sink is open.
func (s *Sink) sendAlone(h held) {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 500 * time.Millisecond
	b.MaxInterval = 30 * time.Second
	for attempt := 1; ; attempt++ {
		if err := s.haltedErr(); err != nil {
			h.finish(err)
			return
		}
		s.metrics.resentAlone.Inc()
		err := s.alone.ProduceSync(h.ctx, h.rec).FirstErr()
		if err == nil || !topicRefusal(err) {
			h.finish(err)
			return
		}
		s.metrics.topicRefusals.WithLabelValues(h.rec.Topic).Inc()
		next := b.NextBackOff()
		s.log.Error("broker refuses writes to the topic; holding its events and retrying: grant the relay's principal WRITE on the topic, or create it",
			"topic", h.rec.Topic, "attempt", attempt, "retry_in", next.String(), "err", err)
		t := time.NewTimer(next)
		select {
		case <-t.C:
		case <-s.closing:
			t.Stop()
			h.finish(fmt.Errorf("sink closed while the broker refused topic %q: %w", h.rec.Topic, err))
			return
		}
	}
}

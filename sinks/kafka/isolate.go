package kafka

import (
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/twmb/franz-go/pkg/kerr"
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

// holdAlone queues f to be sent alone.
func (s *Sink) holdAlone(f *flight) {
	s.isolate.add(func() { s.sendAlone(f) })
}

// sendAlone produces f's record on the single-record client until it has an
// outcome that is the record's own: success, a refusal of the record, or any
// error but a topic-level refusal, which it retries with backoff while the
// Sink is open.
func (s *Sink) sendAlone(f *flight) {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 500 * time.Millisecond
	b.MaxInterval = 30 * time.Second
	for attempt := 1; ; attempt++ {
		if err := s.haltedErr(); err != nil {
			f.finish(err)
			return
		}
		s.metrics.resentAlone.Inc()
		err := s.alone.ProduceSync(f.ctx, &f.rec).FirstErr()
		if err == nil || !topicRefusal(err) {
			f.finish(err)
			return
		}
		s.metrics.topicRefusals.WithLabelValues(f.rec.Topic).Inc()
		next := b.NextBackOff()
		s.log.Error("broker refuses writes to the topic; holding its events and retrying: grant the relay's principal WRITE on the topic, or create it",
			"topic", f.rec.Topic, "attempt", attempt, "retry_in", next.String(), "err", err)
		t := time.NewTimer(next)
		select {
		case <-t.C:
		case <-s.closing:
			t.Stop()
			f.finish(fmt.Errorf("sink closed while the broker refused topic %q: %w", f.rec.Topic, err))
			return
		}
	}
}

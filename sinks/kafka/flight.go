package kafka

import (
	"context"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// flight is one event's record on its way to Kafka: the record, the buffer
// its key and headers live in, and what to do with its outcome. Flights are
// pooled, each with its promise bound once, so that publishing an event
// allocates nothing but what franz-go does; finish returns one to the pool
// once franz-go and the caller's done are through with it.
type flight struct {
	s     *Sink
	ctx   context.Context
	rec   kgo.Record
	buf   []byte // rec's key and header values
	id    string // the event's ID
	topic *topic
	start time.Time
	done  func(error)
	// promise is f.produced, the callback handed to franz-go.
	promise func(*kgo.Record, error)
}

var flights sync.Pool

// newFlight returns a flight from the pool, or a new one.
func (s *Sink) newFlight() *flight {
	f, ok := flights.Get().(*flight)
	if !ok {
		f = new(flight)
		f.promise = f.produced
	}
	f.s = s
	return f
}

// release returns f to the pool, keeping its buffers but no reference to
// the event.
func (f *flight) release() {
	buf, headers, promise := f.buf[:0], f.rec.Headers[:0], f.promise
	clear(headers[:cap(headers)])
	*f = flight{buf: buf, promise: promise}
	f.rec.Headers = headers
	flights.Put(f)
}

// produced takes franz-go's outcome for f's record. Outside a transaction,
// a batch or topic refusal sends the record again alone (isolate.go); in
// one, any failure dooms the transaction whole (txn.go).
func (f *flight) produced(_ *kgo.Record, err error) {
	if err != nil && f.s.txn == nil && (batchRefusal(err) || topicRefusal(err)) {
		f.s.holdAlone(f)
		return
	}
	f.finish(err)
}

// finish reports the record's outcome to done, counts it, and releases f.
func (f *flight) finish(err error) {
	s := f.s
	if err != nil {
		err = s.produceErr(f.id, f.topic.name, err)
	} else {
		f.topic.published.Inc()
		f.topic.bytes.Add(float64(len(f.rec.Value)))
		s.metrics.duration.Observe(time.Since(f.start).Seconds())
	}
	f.done(err)
	f.release()
	s.inflight.remove()
}

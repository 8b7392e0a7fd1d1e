package rabbitmq

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/outbox-relay/outbox-relay/schema"
	"github.com/outbox-relay/outbox-relay/sinks/delivery"
	"github.com/outbox-relay/outbox-relay/sinks/sinktest"
)

// waitTimeout bounds every wait of the integration tests.
const waitTimeout = 90 * time.Second

// newSink returns a Sink for cfg, logging to t, closed when t ends.
func newSink(t *testing.T, cfg Config) (*Sink, *logs) {
	t.Helper()
	logger, l := newLogs(t)
	s, err := New(cfg, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s, l
}

// setup runs s.Setup, failing t on an error.
func setup(t *testing.T, s *Sink) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Setup(ctx); err != nil {
		t.Fatalf("Setup: %v", err)
	}
}

// events returns n events of aggregate type typ over keys aggregates; the
// number after the last "-" of an ID is its index.
func events(typ string, n, keys int) []*schema.Event {
	evs := make([]*schema.Event, n)
	for i := range evs {
		evs[i] = &schema.Event{
			ID:            fmt.Sprintf("%s-%05d", typ, i),
			AggregateType: typ,
			AggregateID:   fmt.Sprintf("%s-k%d", typ, i%keys),
			EventType:     "created",
			Payload:       fmt.Appendf(nil, `{"seq":%d}`, i),
			Position:      schema.Position{CommitLSN: pglogrepl.LSN(0x1000 + i)},
		}
	}
	return evs
}

// results records what done reported for each published event.
type results struct {
	mu   sync.Mutex
	errs map[string][]error
	n    int // events with a done call
}

func newResults() *results { return &results{errs: make(map[string][]error)} }

// publish publishes evs through s, recording each done.
func (r *results) publish(s *Sink, evs ...*schema.Event) {
	for _, ev := range evs {
		s.Publish(context.Background(), ev, r.done(ev.ID))
	}
}

// done returns the done callback of the event id.
func (r *results) done(id string) func(error) {
	return func(err error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.errs[id] = append(r.errs[id], err)
		if len(r.errs[id]) == 1 {
			r.n++
		}
	}
}

// count returns how many events had a done call.
func (r *results) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// wait waits until n events had a done call, failing t after waitTimeout.
func (r *results) wait(t *testing.T, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d done calls", n), func() bool { return r.count() >= n })
}

// err returns the first error done reported for id, and whether done was
// called.
func (r *results) err(id string) (error, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	errs := r.errs[id]
	if len(errs) == 0 {
		return nil, false
	}
	return errs[0], true
}

// failures lists the events whose done was called more than once or with
// an error.
func (r *results) failures() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for id, errs := range r.errs {
		switch {
		case len(errs) > 1:
			out = append(out, fmt.Sprintf("event %s: done called %d times", id, len(errs)))
		case errs[0] != nil:
			out = append(out, fmt.Sprintf("event %s: done got %v", id, errs[0]))
		}
	}
	return out
}

// waitFor polls cond until it holds, failing t after waitTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %s", what, waitTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readAll reads queue until it holds every event of evs, failing t after
// waitTimeout, and returns what it read of them.
func readAll(t *testing.T, queue string, evs []*schema.Event) []sinktest.Message {
	t.Helper()
	want := make(map[string]bool, len(evs))
	for _, ev := range evs {
		want[ev.ID] = true
	}
	var mine []sinktest.Message
	waitFor(t, fmt.Sprintf("%d events in queue %s", len(evs), queue), func() bool {
		mine = mine[:0]
		seen := make(map[string]bool)
		for _, m := range serverFor(t).Read(t, queue) {
			if id, _ := m.Header(delivery.HeaderID); want[id] {
				mine = append(mine, m)
				seen[id] = true
			}
		}
		return len(seen) == len(want)
	})
	return mine
}

// checkOrder fails t unless each aggregate's events in msgs, counting only
// the first copy of each, come in the order of their IDs' indexes, and
// returns how many copies were duplicates.
func checkOrder(t *testing.T, msgs []sinktest.Message) (duplicates int) {
	t.Helper()
	seen := make(map[string]bool)
	last := make(map[string]int)
	for _, m := range msgs {
		id, _ := m.Header(delivery.HeaderID)
		if seen[id] {
			duplicates++
			continue
		}
		seen[id] = true
		i := indexOf(id)
		if prev, ok := last[m.Key]; ok && i < prev {
			t.Errorf("aggregate %s: event %d after event %d", m.Key, i, prev)
		}
		last[m.Key] = i
	}
	return duplicates
}

// indexOf returns the number after the last "-" of an event ID.
func indexOf(id string) int {
	n, _ := strconv.Atoi(id[strings.LastIndexByte(id, '-')+1:])
	return n
}

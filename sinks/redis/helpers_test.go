package redis_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/schema"
	"github.com/outbox-relay/outbox-relay/sinks/delivery"
	"github.com/outbox-relay/outbox-relay/sinks/redis"
	"github.com/outbox-relay/outbox-relay/sinks/redis/redistest"
	"github.com/outbox-relay/outbox-relay/sinks/sinktest"
)

func TestMain(m *testing.M) {
	redis.ClientLogger(nil) // the failed dials of outages
	goleak.VerifyTestMain(m)
}

var (
	_ sinktest.Sink      = (*redis.Sink)(nil)
	_ relay.Sink         = (*redis.Sink)(nil)
	_ relay.DeadLetterer = (*redis.Sink)(nil)
	_ relay.Halter       = (*redis.Sink)(nil)
)

// testTimeout bounds every wait on the server, so that a bug fails a test
// instead of hanging it.
const testTimeout = 60 * time.Second

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// fastRetries makes a sink retry within a tenth of a second, so that tests
// of outages end soon after the outage.
var fastRetries = delivery.Config{RetryMin: 10 * time.Millisecond, RetryMax: 100 * time.Millisecond}

// newSink returns a sink for srv with cfg (URL set to srv's when empty),
// closed when t ends.
func newSink(t *testing.T, srv *redistest.Server, cfg redis.Config, logger *slog.Logger, reg prometheus.Registerer) *redis.Sink {
	t.Helper()
	if cfg.URL == "" {
		cfg.URL = srv.URL
	}
	if cfg.Delivery == (delivery.Config{}) {
		cfg.Delivery = fastRetries
	}
	s, err := redis.New(cfg, logger, reg)
	if err != nil {
		t.Fatalf("New(%v): %v", cfg, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// events returns n events of aggregate type typ over keys aggregates, with
// positions in order.
func events(typ string, n, keys int) []*schema.Event {
	evs := make([]*schema.Event, n)
	for i := range evs {
		evs[i] = &schema.Event{
			ID:            fmt.Sprintf("%s-%06d", typ, i),
			AggregateType: typ,
			AggregateID:   fmt.Sprintf("%s-agg-%d", typ, i%keys),
			EventType:     "Changed",
			Payload:       fmt.Appendf(nil, `{"seq":%d}`, i),
			Position:      schema.Position{CommitLSN: pglogrepl.LSN(0x1000000 + i), Index: uint32(i % 3)},
		}
	}
	return evs
}

// dones records the done calls of published events.
type dones struct {
	mu   sync.Mutex
	errs map[string][]error
	acks []string // IDs done with nil, in order
	n    int      // events with a done call
	want int      // events expected
}

func newDones() *dones { return &dones{errs: make(map[string][]error)} }

// expect adds n events to those wait waits for.
func (d *dones) expect(n int) {
	d.mu.Lock()
	d.want += n
	d.mu.Unlock()
}

// publish publishes evs through s.
func (d *dones) publish(s *redis.Sink, evs []*schema.Event) {
	d.expect(len(evs))
	for _, ev := range evs {
		s.Publish(context.Background(), ev, d.done(ev.ID))
	}
}

// done returns the done of event id.
func (d *dones) done(id string) func(error) {
	return func(err error) {
		d.mu.Lock()
		defer d.mu.Unlock()
		d.errs[id] = append(d.errs[id], err)
		if len(d.errs[id]) > 1 {
			return
		}
		if err == nil {
			d.acks = append(d.acks, id)
		}
		d.n++
	}
}

// wait polls until every expected event had a done call.
func (d *dones) wait(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		d.mu.Lock()
		n, want := d.n, d.want
		d.mu.Unlock()
		if n >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events have no done call after %s", want-n, want, testTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// err returns the error of event id's first done call, and whether it had
// one.
func (d *dones) err(id string) (error, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	errs := d.errs[id]
	if len(errs) == 0 {
		return nil, false
	}
	return errs[0], true
}

// acked returns the IDs done with nil so far.
func (d *dones) acked() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.acks)
}

// failures returns what went wrong: a done called twice, or with an error.
func (d *dones) failures() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for id, errs := range d.errs {
		switch {
		case len(errs) > 1:
			out = append(out, fmt.Sprintf("event %s: done called %d times", id, len(errs)))
		case errs[0] != nil:
			out = append(out, fmt.Sprintf("event %s: done got %v", id, errs[0]))
		}
	}
	slices.Sort(out)
	return out
}

// checkStored fails t unless the streams matching pattern hold every event
// of evs at least once, and each aggregate's first copies in order.
func checkStored(t *testing.T, srv *redistest.Server, pattern string, evs []*schema.Event) {
	t.Helper()
	index := make(map[string]int, len(evs))
	for i, ev := range evs {
		index[ev.ID] = i
	}
	seen := make(map[string]bool)
	last := make(map[string]int)
	dups := 0
	for _, m := range srv.Read(t, pattern) {
		id, _ := m.Header(delivery.HeaderID)
		i, ok := index[id]
		if !ok {
			continue
		}
		if seen[id] {
			dups++
			continue
		}
		seen[id] = true
		ev := evs[i]
		if m.Key != ev.AggregateID || string(m.Payload) != string(ev.Payload) {
			t.Errorf("event %s stored with key %q and payload %q, want %q and %q", id, m.Key, m.Payload, ev.AggregateID, ev.Payload)
		}
		if prev, ok := last[ev.AggregateID]; ok && i < prev {
			t.Errorf("aggregate %s: event %d stored after event %d", ev.AggregateID, i, prev)
		}
		last[ev.AggregateID] = i
	}
	if len(seen) != len(evs) {
		t.Errorf("the streams hold %d of %d events", len(seen), len(evs))
	}
	if dups > 0 {
		t.Logf("%d duplicates (delivery is at least once)", dups)
	}
}

// logs is a slog handler that records what it handles.
type logs struct {
	mu      sync.Mutex
	records []record
}

// record is one logged record: its level, message and attributes as text.
type record struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func (l *logs) logger() *slog.Logger { return slog.New(&logsHandler{l: l}) }

// find returns the records at level whose message holds msg.
func (l *logs) find(level slog.Level, msg string) []record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []record
	for _, r := range l.records {
		if r.level == level && strings.Contains(r.msg, msg) {
			out = append(out, r)
		}
	}
	return out
}

// waitFor polls until a record at level holds msg in its message and, when
// attr is not empty, in the text of its attribute attr, and returns it.
func (l *logs) waitFor(t *testing.T, level slog.Level, msg, attr, value string) record {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		for _, r := range l.find(level, msg) {
			if attr == "" || strings.Contains(r.attrs[attr], value) {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s record %q with %s holding %q after %s", level, msg, attr, value, testTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type logsHandler struct {
	l     *logs
	attrs []slog.Attr
}

func (h *logsHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *logsHandler) Handle(_ context.Context, r slog.Record) error {
	rec := record{level: r.Level, msg: r.Message, attrs: make(map[string]string)}
	for _, a := range h.attrs {
		rec.attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value.Resolve().String()
		return true
	})
	h.l.mu.Lock()
	h.l.records = append(h.l.records, rec)
	h.l.mu.Unlock()
	return nil
}

func (h *logsHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &logsHandler{l: h.l, attrs: append(slices.Clone(h.attrs), as...)}
}

func (h *logsHandler) WithGroup(string) slog.Handler { return h }

// errTest is the cause of the dead letters tests send.
var errTest = errors.New("test")

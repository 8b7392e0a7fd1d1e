package sinktest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/outbox-relay/outbox-relay/schema"
	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// Timeout bounds each wait of the suite: for done calls, and for the broker
// to hold what was acknowledged.
const Timeout = 90 * time.Second

// Run runs the conformance suite against b, each check as a subtest. The
// checks use aggregate types of their own, so the broker may hold other
// messages, and the subtests may share it; they run one after another.
func Run(t *testing.T, b Broker) {
	t.Run("DeliversEveryEventInKeyOrder", func(t *testing.T) { testDelivers(t, b) })
	t.Run("RefusesPoison", func(t *testing.T) { testPoison(t, b) })
	t.Run("DeadLetters", func(t *testing.T) { testDeadLetters(t, b) })
	t.Run("Flush", func(t *testing.T) { testFlush(t, b) })
	t.Run("Halt", func(t *testing.T) { testHalt(t, b) })
	t.Run("SurvivesOutage", func(t *testing.T) { testOutage(t, b) })
}

// batch is a set of events of one aggregate type, and what became of them.
type batch struct {
	typ    string
	events []*schema.Event
	byID   map[string]*schema.Event
	mu     sync.Mutex
	errs   map[string][]error
	left   int
	all    chan struct{}
}

// newBatch makes n events of a new aggregate type over keys aggregates,
// every third with headers of its own and every seventh replayed.
func newBatch(n, keys int) *batch {
	var raw [4]byte
	_, _ = rand.Read(raw[:])
	typ := "st" + hex.EncodeToString(raw[:])
	b := &batch{typ: typ, byID: make(map[string]*schema.Event), errs: make(map[string][]error), all: make(chan struct{})}
	base := pglogrepl.LSN(0x1000000)
	replayed := time.Date(2026, 12, 1, 10, 0, 0, 123456789, time.UTC)
	for i := range n {
		ev := &schema.Event{
			ID:            fmt.Sprintf("%s-%05d", typ, i),
			AggregateType: typ,
			AggregateID:   fmt.Sprintf("%s-agg-%d", typ, i%keys),
			EventType:     []string{"created", "updated"}[i%2],
			Payload:       fmt.Appendf(nil, `{"seq":%d,"note":"event %d"}`, i, i),
			Position:      schema.Position{CommitLSN: base + pglogrepl.LSN(i/5)*64, Index: uint32(i % 5)},
			CommitTime:    time.Now(),
		}
		if i%3 == 0 {
			ev.Headers = fmt.Appendf(nil, `{"trace_id":"trace-%d","n":%d,"empty":null}`, i, i)
		}
		if i%7 == 0 {
			ev.Replayed = replayed
		}
		b.add(ev)
	}
	return b
}

func (b *batch) add(ev *schema.Event) {
	b.events = append(b.events, ev)
	b.byID[ev.ID] = ev
	b.left++
}

// publish publishes every event of b through s.
func (b *batch) publish(s Sink, events []*schema.Event) {
	for _, ev := range events {
		id := ev.ID
		s.Publish(context.Background(), ev, func(err error) {
			b.mu.Lock()
			defer b.mu.Unlock()
			b.errs[id] = append(b.errs[id], err)
			if len(b.errs[id]) == 1 {
				b.left--
				if b.left == 0 {
					close(b.all)
				}
			}
		})
	}
}

// wait waits until every event's done was called, failing t after Timeout.
func (b *batch) wait(t *testing.T) {
	t.Helper()
	select {
	case <-b.all:
	case <-time.After(Timeout):
		b.mu.Lock()
		defer b.mu.Unlock()
		t.Fatalf("%d of %d events still without a done call after %s", b.left, len(b.events), Timeout)
	}
}

// failures returns, for each event whose done was called more than once or
// with an error, what happened.
func (b *batch) failures() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, ev := range b.events {
		errs := b.errs[ev.ID]
		switch {
		case len(errs) > 1:
			out = append(out, fmt.Sprintf("event %s: done called %d times", ev.ID, len(errs)))
		case len(errs) == 1 && errs[0] != nil:
			out = append(out, fmt.Sprintf("event %s: done got %v", ev.ID, errs[0]))
		}
	}
	return out
}

// reportFailures fails t with the first few failures, and their count.
func (b *batch) reportFailures(t *testing.T) {
	t.Helper()
	f := b.failures()
	for _, line := range f[:min(5, len(f))] {
		t.Error(line)
	}
	if len(f) > 5 {
		t.Errorf("and %d more failures", len(f)-5)
	}
}

// checkStored reads the broker until it holds every event of b or Timeout
// passes, then checks each event's messages and each aggregate's order.
func (b *batch) checkStored(t *testing.T, br Broker) {
	t.Helper()
	var mine []Message
	deadline := time.Now().Add(Timeout)
	for {
		mine = mine[:0]
		seen := make(map[string]bool)
		for _, m := range br.Read(t) {
			id, _ := m.Header(delivery.HeaderID)
			if b.byID[id] != nil {
				mine = append(mine, m)
				seen[id] = true
			}
		}
		if len(seen) == len(b.events) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the broker holds %d of %d acknowledged events after %s", len(seen), len(b.events), Timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}

	dests := make(map[string]bool)
	last := make(map[string]int) // per aggregate, the index of the last first copy
	first := make(map[string]bool)
	for _, m := range mine {
		id, _ := m.Header(delivery.HeaderID)
		ev := b.byID[id]
		dests[m.Destination] = true
		if diff := compare(m, ev); diff != "" {
			t.Errorf("event %s: %s", id, diff)
		}
		if first[id] {
			continue // a duplicate: at least once
		}
		first[id] = true
		i := index(ev)
		if prev, ok := last[ev.AggregateID]; ok && i < prev {
			t.Errorf("aggregate %s: event %d stored after event %d", ev.AggregateID, i, prev)
		}
		last[ev.AggregateID] = i
	}
	if len(dests) != 1 {
		t.Errorf("events of aggregate type %s went to %d destinations %v, want one", b.typ, len(dests), dests)
	}
}

// index returns the number in ev's ID.
func index(ev *schema.Event) int {
	n, _ := strconv.Atoi(ev.ID[len(ev.ID)-5:])
	return n
}

// compare returns how m differs from the message of ev, or "".
func compare(m Message, ev *schema.Event) string {
	var diffs []string
	if m.Key != ev.AggregateID {
		diffs = append(diffs, fmt.Sprintf("key %q, want %q", m.Key, ev.AggregateID))
	}
	if string(m.Payload) != string(ev.Payload) {
		diffs = append(diffs, fmt.Sprintf("payload %q, want %q", m.Payload, ev.Payload))
	}
	want, err := delivery.AppendHeaders(nil, ev)
	if err != nil {
		return err.Error()
	}
	own := 4
	if !ev.Replayed.IsZero() {
		own = 6
	}
	if len(m.Headers) < own {
		return fmt.Sprintf("%d headers %v, want at least %d", len(m.Headers), m.Headers, own)
	}
	for i, h := range want[:own] {
		if got := m.Headers[i]; got.Key != h.Key || string(got.Value) != string(h.Value) {
			diffs = append(diffs, fmt.Sprintf("header %d is %s=%q, want %s=%q", i, got.Key, got.Value, h.Key, h.Value))
		}
	}
	gotUser := make(map[string]string)
	for _, h := range m.Headers[own:] {
		gotUser[h.Key] = string(h.Value)
	}
	wantUser := make(map[string]string)
	for _, h := range want[own:] {
		wantUser[h.Key] = string(h.Value)
	}
	if fmt.Sprint(gotUser) != fmt.Sprint(wantUser) {
		diffs = append(diffs, fmt.Sprintf("event headers %v, want %v", gotUser, wantUser))
	}
	if len(diffs) == 0 {
		return ""
	}
	return fmt.Sprint(diffs)
}

func testDelivers(t *testing.T, br Broker) {
	s := br.NewSink(t)
	b := newBatch(1200, 20)
	b.publish(s, b.events)
	b.wait(t)
	b.reportFailures(t)
	b.checkStored(t, br)
}

func testPoison(t *testing.T, br Broker) {
	s := br.NewSink(t)
	b := newBatch(4, 1)
	noKey, malformed, badHeaders, good := b.events[0], b.events[1], b.events[2], b.events[3]
	noKey.AggregateID = ""
	malformed.Malformed = fmt.Errorf("%w: not JSON", schema.ErrContent)
	badHeaders.Headers = []byte(`["not", "an", "object"]`)
	b.publish(s, b.events)
	b.wait(t)
	for _, tt := range []struct {
		ev     *schema.Event
		reason string
	}{
		{noKey, delivery.ReasonAggregateID},
		{malformed, delivery.ReasonContent},
		{badHeaders, delivery.ReasonHeaders},
	} {
		err := b.errs[tt.ev.ID][0]
		if reason, ok := s.Poison(err); !ok || reason != tt.reason {
			t.Errorf("event %s: done got %v, poison %q %v; want poison %q", tt.ev.ID, err, reason, ok, tt.reason)
		}
	}
	if err := b.errs[good.ID][0]; err != nil {
		t.Errorf("event %s after the poison ones: done got %v, want nil", good.ID, err)
	}
	for _, m := range br.Read(t) {
		if id, _ := m.Header(delivery.HeaderID); id != good.ID && b.byID[id] != nil {
			t.Errorf("poison event %s was stored", id)
		}
	}
}

func testDeadLetters(t *testing.T, br Broker) {
	s := br.NewSink(t)
	b := newBatch(3, 1)
	cause := errors.New("the broker refused it for good")
	var wg sync.WaitGroup
	errs := make([]error, len(b.events))
	for i, ev := range b.events {
		wg.Add(1)
		s.DeadLetter(context.Background(), ev, delivery.ReasonRejected, cause, 1, func(err error) {
			errs[i] = err
			wg.Done()
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("dead letter of %s: done got %v", b.events[i].ID, err)
		}
	}
	deadline := time.Now().Add(Timeout)
	for {
		var got []string
		for _, m := range br.ReadDeadLetters(t) {
			id, _ := m.Header(delivery.HeaderID)
			if b.byID[id] == nil {
				continue
			}
			got = append(got, id)
			if r, _ := m.Header(delivery.HeaderDLQReason); r != delivery.ReasonRejected {
				t.Errorf("dead letter %s: reason %q, want %q", id, r, delivery.ReasonRejected)
			}
			if e, _ := m.Header(delivery.HeaderDLQError); e != cause.Error() {
				t.Errorf("dead letter %s: error %q, want %q", id, e, cause)
			}
		}
		if len(got) >= len(b.events) {
			want := []string{b.events[0].ID, b.events[1].ID, b.events[2].ID}
			if fmt.Sprint(got[:3]) != fmt.Sprint(want) {
				t.Errorf("dead letters in order %v, want %v", got, want)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d dead letters stored after %s", len(got), len(b.events), Timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func testFlush(t *testing.T, br Broker) {
	s := br.NewSink(t)
	b := newBatch(300, 30)
	b.publish(s, b.events)
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	b.mu.Lock()
	left := b.left
	b.mu.Unlock()
	if left != 0 {
		t.Errorf("Flush returned with %d events without a done call", left)
	}
	b.reportFailures(t)
}

func testHalt(t *testing.T, br Broker) {
	s := br.NewSink(t)
	b := newBatch(10, 2)
	s.Halt(errors.New("an earlier event failed"))
	b.publish(s, b.events)
	b.wait(t)
	for _, ev := range b.events {
		err := b.errs[ev.ID][0]
		if err == nil {
			t.Errorf("event %s published after Halt: done got nil", ev.ID)
		} else if _, poison := s.Poison(err); poison {
			t.Errorf("event %s published after Halt: done got poison %v, want a reason to stop", ev.ID, err)
		}
	}
	for _, m := range br.Read(t) {
		if id, _ := m.Header(delivery.HeaderID); b.byID[id] != nil {
			t.Errorf("event %s published after Halt was stored", id)
		}
	}
}

func testOutage(t *testing.T, br Broker) {
	s := br.NewSink(t)
	b := newBatch(600, 12)
	before, during := b.events[:200], b.events[200:]
	b.publish(s, before)
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("Flush before the outage: %v", err)
	}

	br.Stop(t)
	pctx, pcancel := context.WithTimeout(context.Background(), 5*time.Second)
	err := s.Ping(pctx)
	pcancel()
	if err == nil {
		t.Error("Ping succeeded with the broker stopped")
	} else {
		t.Logf("Ping with the broker stopped: %v", err)
	}
	b.publish(s, during)
	// Held, not failed: no done may report an error during the outage.
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if f := b.failures(); len(f) > 0 {
			t.Fatalf("during the outage, %d events failed, such as: %v", len(f), f[:min(3, len(f))])
		}
	}
	br.Start(t)
	b.wait(t)
	b.reportFailures(t)
	b.checkStored(t, br)
}

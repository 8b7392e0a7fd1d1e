package relay

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/outbox-relay/outbox-relay/schema"
)

// TestReplayAfterReconnect feeds the relay what PostgreSQL sends after the
// stream reconnects: every transaction after the confirmed position again,
// possibly starting with ones already relayed, and the transaction that was
// open when the connection broke, from its first row.
func TestReplayAfterReconnect(t *testing.T) {
	h := &held{}
	r, _ := newTestRelay(t, Config{}, h.sink())
	insert := func(txn, row int) {
		t.Helper()
		if err := r.Insert(t.Context(), newEvent(fmt.Sprintf("t%d-e%d", txn, row), 10)); err != nil {
			t.Fatalf("Insert = %v", err)
		}
	}
	// Session 1: transaction 0 complete, transaction 1 broken after 2 of 4 rows.
	r.Begin(commitLSN(0), commitTime)
	insert(0, 0)
	insert(0, 1)
	r.Commit(endLSN(0))
	r.Begin(commitLSN(1), commitTime)
	insert(1, 0)
	insert(1, 1)
	if got := h.len(); got != 4 {
		t.Fatalf("published %d events in session 1, want 4", got)
	}

	// Session 2 starts from the confirmed position, before transaction 0.
	r.Begin(commitLSN(0), commitTime)
	insert(0, 0)
	insert(0, 1)
	r.Commit(endLSN(0))
	r.Keepalive(endLSN(0)) // ignored: transaction 1 is open
	r.Begin(commitLSN(1), commitTime)
	for row := range 4 {
		insert(1, row)
	}
	r.Commit(endLSN(1))
	r.Begin(commitLSN(2), commitTime)
	insert(2, 0)
	r.Commit(endLSN(2))

	evs := h.published()
	var got []string
	for _, ev := range evs {
		got = append(got, fmt.Sprintf("%s@%d", ev.ID, ev.Position.Index))
	}
	want := []string{"t0-e0@0", "t0-e1@1", "t1-e0@0", "t1-e1@1", "t1-e2@2", "t1-e3@3", "t2-e0@0"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("published %v, want %v (replays read past, the open transaction resumed)", got, want)
	}
	h.ackAll(t)
	if got := r.Flushed(); got != endLSN(2) {
		t.Errorf("Flushed() = %s after all acks, want %s", got, endLSN(2))
	}
	if r.wm.open {
		t.Error("watermark still has an open transaction")
	}
}

// TestReplaySkipsOpenTransaction fails the relay when a reconnected stream
// goes past the open transaction without sending it: its end could never be
// confirmed.
func TestReplaySkipsOpenTransaction(t *testing.T) {
	h := &held{}
	r, _ := newTestRelay(t, Config{}, h.sink())
	r.Begin(commitLSN(1), commitTime)
	if err := r.Insert(t.Context(), newEvent("a", 1)); err != nil {
		t.Fatal(err)
	}
	r.Begin(commitLSN(2), commitTime)
	if err := r.Insert(t.Context(), newEvent("b", 1)); err == nil {
		t.Error("Insert after a lost open transaction = nil, want the relay's failure")
	}
	if err := r.Run(t.Context()); err == nil {
		t.Error("Run() = nil, want the failure")
	}
	if h.len() != 1 {
		t.Errorf("published %d events, want only the first", h.len())
	}
}

// TestReplayTwoReconnectsInOpenTransaction reconnects twice while one
// transaction is open; the second reconnect comes before the replay has
// reached the rows published in the first session. No row is published
// twice, and every row is published once.
func TestReplayTwoReconnectsInOpenTransaction(t *testing.T) {
	var mu sync.Mutex
	count := map[string]int{}
	var order []string
	sink := &fakeSink{publish: func(_ context.Context, ev *schema.Event, done func(error)) {
		mu.Lock()
		count[ev.ID]++
		order = append(order, fmt.Sprintf("%s@%d", ev.ID, ev.Position.Index))
		mu.Unlock()
		done(nil)
	}}
	r, _ := newTestRelay(t, Config{}, sink)
	insert := func(row int) {
		t.Helper()
		if err := r.Insert(t.Context(), newEvent(fmt.Sprintf("e%d", row), 10)); err != nil {
			t.Fatalf("Insert(row %d) = %v", row, err)
		}
	}
	sessions := []struct {
		name string
		rows int  // rows of the transaction the session reads
		end  bool // the session reads the commit
	}{
		{"first session, broken after 3 rows", 3, false},
		{"second session, broken after 1 row", 1, false},
		{"third session, reads the whole transaction", 5, true},
	}
	for _, s := range sessions {
		r.Begin(commitLSN(0), commitTime)
		for row := range s.rows {
			insert(row)
		}
		if s.end {
			r.Commit(endLSN(0))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for id, n := range count {
		if n != 1 {
			t.Errorf("event %s published %d times, want once (published %v)", id, n, order)
		}
	}
	want := []string{"e0@0", "e1@1", "e2@2", "e3@3", "e4@4"}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Errorf("published %v, want %v", order, want)
	}
	if got := r.Flushed(); got != endLSN(0) {
		t.Errorf("Flushed() = %s, want %s", got, endLSN(0))
	}
}

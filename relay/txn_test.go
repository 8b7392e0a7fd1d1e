package relay

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/outbox-relay/outbox-relay/schema"
)

// txnSink is a Transactor that acknowledges each event at once and records
// the calls, with the events each committed transaction held.
type txnSink struct {
	mu        sync.Mutex
	fence     pglogrepl.LSN // what ReadFence returns
	open      bool
	pending   []string
	committed [][]string
	fences    []pglogrepl.LSN
	calls     []string
	commitErr error
}

func (s *txnSink) Publish(_ context.Context, ev *schema.Event, done func(error)) {
	s.mu.Lock()
	if !s.open {
		s.calls = append(s.calls, "publish outside a transaction: "+ev.ID)
	}
	s.pending = append(s.pending, ev.ID)
	s.mu.Unlock()
	done(nil)
}

func (s *txnSink) Flush(context.Context) error { return nil }

func (s *txnSink) ReadFence(context.Context) (pglogrepl.LSN, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "read fence")
	return s.fence, nil
}

func (s *txnSink) BeginTxn() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open {
		return fmt.Errorf("begin: already open")
	}
	s.open = true
	s.calls = append(s.calls, "begin")
	return nil
}

func (s *txnSink) CommitTxn(_ context.Context, fence pglogrepl.LSN) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.commitErr != nil {
		s.open, s.pending = false, nil
		return s.commitErr
	}
	s.open = false
	s.committed = append(s.committed, s.pending)
	s.fences = append(s.fences, fence)
	s.pending = nil
	s.calls = append(s.calls, fmt.Sprintf("commit %s", fence))
	return nil
}

func (s *txnSink) AbortTxn(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open {
		s.calls = append(s.calls, "abort")
	}
	s.open, s.pending = false, nil
	return nil
}

var _ Transactor = (*txnSink)(nil)

// TestExactlyOnceCommitsWholeTransactions: with a transaction interval of
// zero length, every PostgreSQL commit commits the Sink transaction with its
// end as the fence, and the position to confirm is the committed fence,
// never one inside an open Sink transaction.
func TestExactlyOnceCommitsWholeTransactions(t *testing.T) {
	s := &txnSink{}
	r, _ := newTestRelay(t, Config{Delivery: DeliveryExactlyOnce, TransactionInterval: time.Nanosecond}, s)
	if err := r.Resume(t.Context(), 0); err != nil {
		t.Fatal(err)
	}
	for txn := range 3 {
		r.Begin(commitLSN(txn), commitTime)
		for row := range 2 {
			if err := r.Insert(t.Context(), newEvent(fmt.Sprintf("t%d-e%d", txn, row), 10)); err != nil {
				t.Fatal(err)
			}
			if got, want := r.Flushed(), endLSN(txn-1); txn > 0 && got != want {
				t.Errorf("Flushed inside transaction %d = %s, want the last fence %s", txn, got, want)
			}
		}
		r.Commit(endLSN(txn))
		if got := r.Flushed(); got != endLSN(txn) {
			t.Errorf("Flushed after transaction %d = %s, want its end %s", txn, got, endLSN(txn))
		}
	}
	want := [][]string{{"t0-e0", "t0-e1"}, {"t1-e0", "t1-e1"}, {"t2-e0", "t2-e1"}}
	if fmt.Sprint(s.committed) != fmt.Sprint(want) {
		t.Errorf("committed transactions %v, want %v", s.committed, want)
	}
	if !slices.Equal(s.fences, []pglogrepl.LSN{endLSN(0), endLSN(1), endLSN(2)}) {
		t.Errorf("fences %v, want the end of each transaction", s.fences)
	}
	for _, c := range s.calls {
		if len(c) > 7 && c[:7] == "publish" {
			t.Error(c)
		}
	}
}

// TestExactlyOnceBatchesUntilInterval: within the interval, several
// PostgreSQL transactions share one Sink transaction, and Drain commits it
// with the last one's end.
func TestExactlyOnceBatchesUntilInterval(t *testing.T) {
	s := &txnSink{}
	r, _ := newTestRelay(t, Config{Delivery: DeliveryExactlyOnce, TransactionInterval: time.Hour}, s)
	for txn := range 3 {
		r.Begin(commitLSN(txn), commitTime)
		if err := r.Insert(t.Context(), newEvent(fmt.Sprintf("t%d", txn), 10)); err != nil {
			t.Fatal(err)
		}
		r.Commit(endLSN(txn))
	}
	if len(s.committed) != 0 || r.Flushed() != 0 {
		t.Fatalf("committed %v, Flushed %s before the interval; want nothing and 0", s.committed, r.Flushed())
	}
	if err := r.Drain(t.Context()); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(s.committed) != "[[t0 t1 t2]]" || !slices.Equal(s.fences, []pglogrepl.LSN{endLSN(2)}) {
		t.Errorf("after Drain: committed %v with fences %v, want one transaction [t0 t1 t2] with fence %s", s.committed, s.fences, endLSN(2))
	}
	if got := r.Flushed(); got != endLSN(2) {
		t.Errorf("Flushed after Drain = %s, want %s", got, endLSN(2))
	}
}

// TestExactlyOnceDrainInsideTransactionAborts: stopping inside a
// PostgreSQL transaction aborts the Sink transaction holding its first rows
// and confirms only the last fence.
func TestExactlyOnceDrainInsideTransactionAborts(t *testing.T) {
	s := &txnSink{}
	r, _ := newTestRelay(t, Config{Delivery: DeliveryExactlyOnce, TransactionInterval: time.Nanosecond}, s)
	r.Begin(commitLSN(0), commitTime)
	_ = r.Insert(t.Context(), newEvent("t0", 10))
	r.Commit(endLSN(0))
	r.Begin(commitLSN(1), commitTime)
	_ = r.Insert(t.Context(), newEvent("t1-e0", 10))
	if err := r.Drain(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(s.calls, "abort") || fmt.Sprint(s.committed) != "[[t0]]" {
		t.Errorf("calls %v, committed %v; want the open transaction aborted and only [t0] committed", s.calls, s.committed)
	}
	if got := r.Flushed(); got != endLSN(0) {
		t.Errorf("Flushed = %s, want the last fence %s", got, endLSN(0))
	}
}

// TestExactlyOnceResumeSkipsBelowFence: after a restart the relay reads
// the fence and reads past transactions that commit before it, publishing
// the first one at or after it; the fence may be confirmed at once.
func TestExactlyOnceResumeSkipsBelowFence(t *testing.T) {
	s := &txnSink{fence: endLSN(1)}
	r, _ := newTestRelay(t, Config{Delivery: DeliveryExactlyOnce, TransactionInterval: time.Nanosecond}, s)
	if err := r.Resume(t.Context(), commitLSN(0)); err != nil {
		t.Fatal(err)
	}
	if got := r.Flushed(); got != endLSN(1) {
		t.Errorf("Flushed after Resume = %s, want the fence %s", got, endLSN(1))
	}
	for txn := range 3 {
		r.Begin(commitLSN(txn), commitTime)
		_ = r.Insert(t.Context(), newEvent(fmt.Sprintf("t%d", txn), 10))
		r.Commit(endLSN(txn))
	}
	if fmt.Sprint(s.committed) != "[[t2]]" {
		t.Errorf("committed %v, want only [t2]: t0 and t1 commit before the fence", s.committed)
	}
	// Another relay may have held the slot since: a new session with no
	// transaction open reads the fence again, one with a transaction open
	// does not (reading it would abort that transaction).
	s.fence = endLSN(4)
	if err := r.Resume(t.Context(), endLSN(2)); err != nil {
		t.Fatal(err)
	}
	for txn := 3; txn < 6; txn++ {
		r.Begin(commitLSN(txn), commitTime)
		_ = r.Insert(t.Context(), newEvent(fmt.Sprintf("t%d", txn), 10))
		if txn == 5 {
			if err := r.Resume(t.Context(), endLSN(4)); err != nil { // inside the open transaction
				t.Fatal(err)
			}
		}
		r.Commit(endLSN(txn))
	}
	if fmt.Sprint(s.committed) != "[[t2] [t5]]" {
		t.Errorf("committed %v, want [[t2] [t5]]: t3 and t4 commit before the second fence", s.committed)
	}
	var reads int
	for _, c := range s.calls {
		if c == "read fence" {
			reads++
		}
	}
	if reads != 2 {
		t.Errorf("calls %v, want the fence read twice (not inside the open transaction)", s.calls)
	}
}

// TestExactlyOnceCommitFailureStops: a failed commit stops the relay, and
// the position stays at the last committed fence.
func TestExactlyOnceCommitFailureStops(t *testing.T) {
	s := &txnSink{commitErr: fmt.Errorf("broker said no")}
	r, _ := newTestRelay(t, Config{Delivery: DeliveryExactlyOnce, TransactionInterval: time.Nanosecond}, s)
	r.Begin(commitLSN(0), commitTime)
	_ = r.Insert(t.Context(), newEvent("t0", 10))
	r.Commit(endLSN(0))
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if err := r.Run(ctx); err == nil {
		t.Fatal("Run = nil after a failed commit, want the failure")
	}
	if got := r.Flushed(); got != 0 {
		t.Errorf("Flushed = %s after a failed commit, want 0", got)
	}
}

// TestExactlyOnceNeedsTransactor: New refuses exactly-once over a Sink
// without transactions.
func TestExactlyOnceNeedsTransactor(t *testing.T) {
	if _, err := New(Config{Delivery: DeliveryExactlyOnce}, (&held{}).sink(), nil, nil); err == nil {
		t.Error("New(exactly-once, plain sink) = nil error, want a refusal")
	}
}

// TestExactlyOnceIdleCommit: Run commits a due transaction while the stream
// is between PostgreSQL transactions.
func TestExactlyOnceIdleCommit(t *testing.T) {
	s := &txnSink{}
	r, _ := newTestRelay(t, Config{Delivery: DeliveryExactlyOnce, TransactionInterval: 20 * time.Millisecond}, s)
	r.Begin(commitLSN(0), commitTime)
	_ = r.Insert(t.Context(), newEvent("t0", 10))
	r.Commit(endLSN(0)) // not yet due
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	giveUp := time.After(10 * time.Second)
	for r.Flushed() != endLSN(0) {
		select {
		case err := <-done:
			t.Fatalf("Run = %v before committing", err)
		case <-giveUp:
			cancel()
			<-done
			t.Fatalf("Run did not commit the due transaction within 10s; calls %v", s.calls)
		case <-time.After(5 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(s.committed) != "[[t0]]" {
		t.Errorf("committed %v, want [[t0]]", s.committed)
	}
}

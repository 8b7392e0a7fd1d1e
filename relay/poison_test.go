package relay

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/outbox-relay/outbox-relay/schema"
)

var errPoison = errors.New("record too large")

// dlqSink fails events whose ID starts with "bad" with errPoison, and
// records dead letters; deadLetterErr fails them too.
type dlqSink struct {
	mu            sync.Mutex
	deadLetters   []string
	reasons       []string
	deadLetterErr error
}

func (s *dlqSink) Publish(_ context.Context, ev *schema.Event, done func(error)) {
	if strings.HasPrefix(ev.ID, "bad") {
		go done(errPoison)
		return
	}
	go done(nil)
}

func (s *dlqSink) Flush(context.Context) error { return nil }

func (s *dlqSink) Poison(err error) (string, bool) {
	if errors.Is(err, errPoison) {
		return "size", true
	}
	return "", false
}

func (s *dlqSink) DeadLetter(_ context.Context, ev *schema.Event, reason string, cause error, attempts int, done func(error)) {
	s.mu.Lock()
	s.deadLetters = append(s.deadLetters, ev.ID)
	s.reasons = append(s.reasons, reason)
	err := s.deadLetterErr
	s.mu.Unlock()
	go done(err)
}

func runPoison(t *testing.T, policy Policy, sink *dlqSink, ids ...string) *Relay {
	t.Helper()
	r, _ := newTestRelay(t, Config{PoisonPolicy: policy}, sink)
	for i, id := range ids {
		r.Begin(commitLSN(i), commitTime)
		if err := r.Insert(t.Context(), newEvent(id, 10)); err != nil {
			break
		}
		r.Commit(endLSN(i))
	}
	if err := r.Drain(t.Context()); err != nil {
		t.Fatalf("Drain = %v", err)
	}
	return r
}

func TestPoisonDLQGoesOn(t *testing.T) {
	sink := &dlqSink{}
	r := runPoison(t, PolicyDLQ, sink, "a", "bad1", "b")
	if got := r.Flushed(); got != endLSN(2) {
		t.Errorf("Flushed() = %s, want %s: a dead-lettered event counts as delivered", got, endLSN(2))
	}
	if strings.Join(sink.deadLetters, ",") != "bad1" || sink.reasons[0] != "size" {
		t.Errorf("dead letters %v reasons %v, want [bad1] [size]", sink.deadLetters, sink.reasons)
	}
	select {
	case <-r.failed:
		t.Errorf("relay failed under dlq: %v", r.err)
	default:
	}
}

func TestPoisonDLQFailureHalts(t *testing.T) {
	sink := &dlqSink{deadLetterErr: errors.New("dlq topic unauthorized")}
	r := runPoison(t, PolicyDLQ, sink, "a", "bad1", "b")
	err := r.Run(t.Context())
	if err == nil || !strings.Contains(err.Error(), "dlq topic unauthorized") {
		t.Fatalf("Run() = %v, want the dead-letter failure", err)
	}
	if got := r.Flushed(); got != endLSN(0) {
		t.Errorf("Flushed() = %s, want %s: not past the event that could not be set aside", got, endLSN(0))
	}
}

func TestPoisonHaltStops(t *testing.T) {
	sink := &dlqSink{}
	r := runPoison(t, PolicyHalt, sink, "a", "bad1", "b")
	err := r.Run(t.Context())
	if !errors.Is(err, errPoison) || !errors.Is(err, ErrSinkFailed) || !errors.As(err, new(*PoisonError)) {
		t.Fatalf("Run() = %v, want the poison error with the way out", err)
	}
	var pe *PoisonError
	if !errors.As(err, &pe) || pe.Reason != "size" || pe.Err != errPoison {
		t.Errorf("Run() = %v, want a *PoisonError with reason size and the Sink's error; got %+v", err, pe)
	}
	if got := r.Flushed(); got != endLSN(0) {
		t.Errorf("Flushed() = %s, want %s: nothing past the poison event", got, endLSN(0))
	}
	if len(sink.deadLetters) != 0 {
		t.Errorf("dead letters %v under halt, want none", sink.deadLetters)
	}
}

// TestNonPoisonErrorHalts checks that an error the Sink does not call poison
// stops the relay under dlq too: PostgreSQL sends the event again later.
func TestNonPoisonErrorHalts(t *testing.T) {
	h := &held{}
	r, _ := newTestRelay(t, Config{PoisonPolicy: PolicyDLQ}, h.sink())
	r.Begin(commitLSN(0), commitTime)
	if err := r.Insert(t.Context(), newEvent("a", 1)); err != nil {
		t.Fatal(err)
	}
	r.Commit(endLSN(0))
	h.ack(t, 0, errors.New("client closed"))
	err := r.Run(t.Context())
	if err == nil {
		t.Fatal("Run() = nil, want the failure")
	}
	if pe := (*PoisonError)(nil); errors.As(err, &pe) {
		t.Errorf("Run() = %v, a *PoisonError; want a plain failure: the event is not poison", err)
	}
	if r.Flushed() != 0 {
		t.Errorf("Flushed() = %s, want 0", r.Flushed())
	}
}

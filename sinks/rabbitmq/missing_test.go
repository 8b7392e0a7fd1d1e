package rabbitmq

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// gate is the Sink's broker with a gate in front of Send, so that a test
// can hold every Send while it changes the server.
type gate struct {
	*broker
	mu     sync.Mutex
	open   chan struct{} // closed while Sends may go
	active int           // Sends past the gate
	errs   []error       // every error Send set, in turn
}

func (g *gate) Send(ctx context.Context, msgs []*message, errs []error) {
	for {
		g.mu.Lock()
		open := g.open
		select {
		case <-open:
			g.active++
			g.mu.Unlock()
			g.broker.Send(ctx, msgs, errs)
			g.mu.Lock()
			g.active--
			for _, err := range errs {
				if err != nil {
					g.errs = append(g.errs, err)
				}
			}
			g.mu.Unlock()
			return
		default:
		}
		g.mu.Unlock()
		select {
		case <-open:
		case <-ctx.Done():
			fill(errs, ctx.Err())
			return
		}
	}
}

// hold closes the gate and waits until no Send is past it.
func (g *gate) hold(t *testing.T) {
	t.Helper()
	g.mu.Lock()
	g.open = make(chan struct{})
	g.mu.Unlock()
	waitFor(t, "Sends to end", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.active == 0
	})
}

// release opens the gate.
func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	close(g.open)
}

// failed returns how many of the errors Send set match is.
func (g *gate) failed(is func(error) bool) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, err := range g.errs {
		if is(err) {
			n++
		}
	}
	return n
}

// newGatedSink returns a Sink for cfg whose broker is behind an open gate.
func newGatedSink(t *testing.T, cfg Config) (*Sink, *gate, *logs) {
	t.Helper()
	logger, l := newLogs(t)
	cfg = cfg.withDefaults()
	b, err := newBroker(cfg, logger.With("component", Name))
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{broker: b, open: make(chan struct{})}
	close(g.open)
	ds, err := delivery.New(cfg.Delivery, g, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &Sink{Sink: ds, broker: b}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s, g, l
}

// TestMissing checks that events to an exchange that does not exist, and
// dead letters to a dead-letter queue that does not exist, are held (never
// failed) until Setup makes them, then flow in order; both when they are
// missing from the start and when the exchange is deleted while the Sink
// publishes on an open connection.
func TestMissing(t *testing.T) {
	cfg := testConfig(t)
	s, g, l := newGatedSink(t, cfg)
	queue := unique("missing")
	isExchange := func(err error) bool {
		var xe *exchangeError
		return errors.As(err, &xe) && xe.exchange == cfg.Exchange && xe.setup
	}
	isDLQ := func(err error) bool { return errors.Is(err, errDeadLetterQueueMissing) }

	t.Run("from the start", func(t *testing.T) {
		evs := events("missing", 200, 20)
		letter := events("letter", 1, 1)[0]
		r := newResults()
		r.publish(s, evs...)
		s.DeadLetter(context.Background(), letter, delivery.ReasonRejected, errors.New("refused"), 1, r.done(letter.ID))
		waitFor(t, "Sends to fail twice on the missing exchange and queue", func() bool {
			return g.failed(isExchange) >= 2*20 && g.failed(isDLQ) >= 2
		})
		if n := r.count(); n != 0 {
			t.Fatalf("%d events had a done call while held: %v", n, r.failures())
		}
		if !slices.Contains(l.at(slog.LevelError), "events are held: their exchange does not exist") {
			t.Errorf("no error logged about the missing exchange; error logs: %v", l.at(slog.LevelError))
		}

		g.hold(t)
		setup(t, s)
		serverFor(t).Bind(t, cfg.Exchange, queue)
		g.release()
		r.wait(t, len(evs)+1)
		if f := r.failures(); len(f) > 0 {
			t.Fatal(f)
		}
		checkOrder(t, readAll(t, queue, evs))
		if letters := serverFor(t).ReadDeadLetters(t, cfg.DeadLetterQueue); len(letters) != 1 || letters[0].Key != letter.AggregateID {
			t.Errorf("dead letters %+v, want the one of %s", letters, letter.ID)
		}
	})

	t.Run("deleted", func(t *testing.T) {
		ch, err := serverFor(t).Dial(t).Channel()
		if err != nil {
			t.Fatal(err)
		}
		if err := ch.ExchangeDelete(cfg.Exchange, false, false); err != nil {
			t.Fatal(err)
		}
		before := g.failed(isExchange)
		evs := events("deleted", 200, 20)
		r := newResults()
		r.publish(s, evs...)
		waitFor(t, "Sends to fail on the deleted exchange", func() bool { return g.failed(isExchange) >= before+2*20 })
		if n := r.count(); n != 0 {
			t.Fatalf("%d events had a done call while held: %v", n, r.failures())
		}

		// Deleting the exchange dropped its bindings.
		g.hold(t)
		setup(t, s)
		serverFor(t).Bind(t, cfg.Exchange, queue)
		g.release()
		r.wait(t, len(evs))
		if f := r.failures(); len(f) > 0 {
			t.Fatal(f)
		}
		checkOrder(t, readAll(t, queue, evs))
	})
}

// TestNack fills a queue that refuses publishes when full
// (x-overflow=reject-publish): the server nacks what it cannot take, the
// Sink sends it again, failing nothing, and every event gets in, in order,
// as a consumer makes room.
func TestNack(t *testing.T) {
	cfg := testConfig(t)
	s, g, _ := newGatedSink(t, cfg)
	setup(t, s)
	queue := unique("full")
	ch, err := serverFor(t).Dial(t).Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, amqp.Table{"x-max-length": 10, "x-overflow": "reject-publish"}); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(queue, "#", cfg.Exchange, false, nil); err != nil {
		t.Fatal(err)
	}
	evs := events("full", 60, 12)
	r := newResults()
	r.publish(s, evs...)
	waitFor(t, "nacks", func() bool { return g.failed(func(err error) bool { return errors.Is(err, errNacked) }) >= 10 })
	if f := r.failures(); len(f) > 0 {
		t.Fatalf("while the queue is full: %v", f)
	}
	got := readAll(t, queue, evs) // each read makes room for 10 more
	r.wait(t, len(evs))
	if f := r.failures(); len(f) > 0 {
		t.Fatal(f)
	}
	if dups := checkOrder(t, got); dups != 0 {
		t.Errorf("%d duplicates; a nacked message is not stored", dups)
	}
}

package rabbitmq

import (
	"fmt"
	"sync"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
	"github.com/outbox-relay/outbox-relay/sinks/sinktest"
)

// consumed is what the consumers of one queue processed, in turn.
type consumed struct {
	mu   sync.Mutex
	msgs []sinktest.Message
	by   map[string]int // per consumer, how many it processed
}

// consume processes deliveries on a channel of its own, acknowledging each
// after recording it, until it processed stopAfter (if positive); then it
// closes the channel, and the server puts back what it had not processed.
func (c *consumed) consume(t *testing.T, conn *amqp.Connection, queue, name string, stopAfter int) (done chan struct{}) {
	t.Helper()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Qos(20, 0, false); err != nil {
		t.Fatal(err)
	}
	deliveries, err := ch.Consume(queue, name, false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	done = make(chan struct{})
	go func() {
		defer close(done)
		n := 0
		for d := range deliveries {
			key, _ := d.Headers[delivery.HeaderAggregateID].(string)
			id, _ := d.Headers[delivery.HeaderID].(string)
			c.mu.Lock()
			c.msgs = append(c.msgs, sinktest.Message{Key: key, Headers: []delivery.Header{{Key: delivery.HeaderID, Value: []byte(id)}}})
			c.by[name]++
			c.mu.Unlock()
			if err := d.Ack(false); err != nil {
				t.Errorf("consumer %s: ack: %v", name, err)
				return
			}
			if n++; n == stopAfter {
				_ = ch.Close() // the server requeues the unacknowledged rest
			}
		}
	}()
	return done
}

// distinct returns the number of distinct event IDs c processed.
func (c *consumed) distinct() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := make(map[string]bool)
	for _, m := range c.msgs {
		id, _ := m.Header(delivery.HeaderID)
		seen[id] = true
	}
	return len(seen)
}

// TestSingleActiveConsumer checks the first way doc.go gives to keep each
// aggregate's order across competing consumers: one queue with
// x-single-active-consumer. Two consumers attach; the first processes part
// of the events and goes away; the second takes over; together they
// process every aggregate's events in order.
func TestSingleActiveConsumer(t *testing.T) {
	cfg := testConfig(t)
	s, _ := newSink(t, cfg)
	setup(t, s)
	queue := unique("sac")
	node := serverFor(t)
	ch, err := node.Dial(t).Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, amqp.Table{amqp.SingleActiveConsumerArg: true}); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(queue, "#", cfg.Exchange, false, nil); err != nil {
		t.Fatal(err)
	}
	c := &consumed{by: make(map[string]int)}
	first := c.consume(t, node.Dial(t), queue, "first", 300)
	second := c.consume(t, node.Dial(t), queue, "second", 0)

	evs := events("sac", 1000, 20)
	r := newResults()
	r.publish(s, evs...)
	r.wait(t, len(evs))
	if f := r.failures(); len(f) > 0 {
		t.Fatal(f)
	}
	waitFor(t, "every event processed", func() bool { return c.distinct() == len(evs) })
	<-first
	c.mu.Lock()
	msgs, by, byFirst, bySecond := c.msgs, fmt.Sprint(c.by), c.by["first"], c.by["second"]
	c.mu.Unlock()
	if byFirst != 300 || bySecond < len(evs)-300 {
		t.Errorf("processed by consumer: %s; want 300 by the first, the rest by the second", by)
	}
	if dups := checkOrder(t, msgs); dups != 0 {
		t.Errorf("%d events processed twice", dups)
	}
	_ = second // stops when the test's connections close
}

// TestConsistentHash checks the second way doc.go gives: an
// x-consistent-hash exchange (which Setup declares hashing the
// aggregate_id header) spreads aggregates over several queues, each
// aggregate's events all in one queue, in order.
func TestConsistentHash(t *testing.T) {
	cfg := testConfig(t)
	cfg.ExchangeType = "x-consistent-hash"
	s, _ := newSink(t, cfg)
	setup(t, s)
	node := serverFor(t)
	ch, err := node.Dial(t).Channel()
	if err != nil {
		t.Fatal(err)
	}
	queues := []string{unique("hash"), unique("hash")}
	for _, q := range queues {
		if _, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{amqp.SingleActiveConsumerArg: true}); err != nil {
			t.Fatal(err)
		}
		if err := ch.QueueBind(q, "1", cfg.Exchange, false, nil); err != nil { // the binding key is the queue's weight
			t.Fatal(err)
		}
	}

	evs := events("hash", 1000, 40)
	r := newResults()
	r.publish(s, evs...)
	r.wait(t, len(evs))
	if f := r.failures(); len(f) > 0 {
		t.Fatal(f)
	}
	where := make(map[string]string) // aggregate to queue
	total := 0
	for _, q := range queues {
		msgs := node.Read(t, q)
		if len(msgs) == 0 {
			t.Errorf("queue %s got no event; want the aggregates spread over both", q)
		}
		total += len(msgs)
		checkOrder(t, msgs)
		for _, m := range msgs {
			if other, ok := where[m.Key]; ok && other != q {
				t.Errorf("aggregate %s in queues %s and %s", m.Key, other, q)
			}
			where[m.Key] = q
		}
	}
	if total != len(evs) {
		t.Errorf("queues hold %d events, want %d", total, len(evs))
	}
}

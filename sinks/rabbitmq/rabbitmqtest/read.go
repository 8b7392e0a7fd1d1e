package rabbitmqtest

import (
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
	"github.com/outbox-relay/outbox-relay/sinks/sinktest"
)

// eventOrder is the order of the relay's own headers on an event; the
// event's own follow, by name, as an AMQP table keeps no order.
var eventOrder = []string{
	delivery.HeaderID, delivery.HeaderEventType, delivery.HeaderAggregateType, delivery.HeaderPosition,
	delivery.HeaderReplayed, delivery.HeaderReplayStarted,
}

// deadLetterOrder is the order of delivery.DeadLetterHeaders.
var deadLetterOrder = []string{
	delivery.HeaderID, delivery.HeaderEventType, delivery.HeaderAggregateType, delivery.HeaderPosition,
	delivery.HeaderDLQReason, delivery.HeaderDLQError, delivery.HeaderDLQAttempts, delivery.HeaderDLQSourceLSN,
	delivery.HeaderDLQTime, delivery.HeaderDLQTable, delivery.HeaderDLQTopic, delivery.HeaderDLQMessagePrefix,
	delivery.HeaderDLQHeaders, delivery.HeaderDLQPayloadOmitted,
}

// reader is the Server's client: one connection, dialed on first use and
// again after the node went away, and what each queue gave so far.
type reader struct {
	mu   sync.Mutex
	conn *amqp.Connection
	ch   *amqp.Channel
	read map[string][]sinktest.Message
}

// drop closes the reader's connection, if any.
func (r *reader) drop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn != nil {
		_ = r.conn.CloseDeadline(time.Now().Add(time.Second)) // the node may be gone
		r.conn, r.ch = nil, nil
	}
}

// channelLocked returns the reader's channel, dialing if needed.
func (s *Server) channelLocked() (*amqp.Channel, error) {
	r := &s.rd
	if r.ch != nil && !r.ch.IsClosed() {
		return r.ch, nil
	}
	if r.conn == nil || r.conn.IsClosed() {
		conn, err := dial(s.URL, 5*time.Second)
		if err != nil {
			return nil, fmt.Errorf("connect to %s: %w", s.URL, err)
		}
		r.conn = conn
	}
	ch, err := r.conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open a channel: %w", err)
	}
	r.ch = ch
	return ch, nil
}

// Dial returns a connection to the node of its own, closed when t ends.
func (s *Server) Dial(t testing.TB) *amqp.Connection {
	t.Helper()
	conn, err := dial(s.URL, 5*time.Second)
	if err != nil {
		t.Fatalf("rabbitmqtest: connect to %s: %v", s.URL, err)
	}
	t.Cleanup(func() { _ = conn.CloseDeadline(time.Now().Add(time.Second)) }) // the node may be gone
	return conn
}

// Bind declares queue, a durable classic queue, and binds it to exchange
// with the binding key "#": every message of a topic or fanout exchange
// then reaches it. The exchange must exist (the sink's Setup declares it).
// Call it before publishing: a queue holds only what arrives once bound.
func (s *Server) Bind(t testing.TB, exchange, queue string) {
	t.Helper()
	s.rd.mu.Lock()
	defer s.rd.mu.Unlock()
	ch, err := s.channelLocked()
	if err == nil {
		err = BindQueue(ch, exchange, queue)
	}
	if err != nil {
		t.Fatalf("rabbitmqtest: %v", err)
	}
}

// BindQueue is Bind on the channel ch, for programs: it declares queue,
// durable, and binds it to exchange with the binding key "#".
func BindQueue(ch *amqp.Channel, exchange, queue string) error {
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare queue %s: %w", queue, err)
	}
	if err := ch.QueueBind(queue, "#", exchange, false, nil); err != nil {
		return fmt.Errorf("bind queue %s to exchange %s: %w", queue, exchange, err)
	}
	return nil
}

// Read takes every message ready in queue, acknowledging it, and returns
// every message read from queue so far, in the queue's order, as
// sinktest.Message: Destination is "exchange/routing key" as published,
// Key the aggregate_id header, Headers the relay's own in their order
// (id, event_type, aggregate_type, position, then replayed and
// replay_started when present) and then the event's own by name, without
// aggregate_id, and Payload the body.
func (s *Server) Read(t testing.TB, queue string) []sinktest.Message {
	t.Helper()
	return s.take(t, queue, eventOrder)
}

// ReadDeadLetters is Read for the dead-letter queue queue: Destination is
// the queue, and Headers are in the order of delivery.DeadLetterHeaders.
func (s *Server) ReadDeadLetters(t testing.TB, queue string) []sinktest.Message {
	t.Helper()
	return s.take(t, queue, deadLetterOrder)
}

// take is Read with the headers in order.
func (s *Server) take(t testing.TB, queue string, order []string) []sinktest.Message {
	t.Helper()
	s.rd.mu.Lock()
	defer s.rd.mu.Unlock()
	got, err := s.getAll(queue)
	if err != nil {
		// The node may have restarted since the last read: once more, on
		// a new connection. What was taken but not acknowledged is
		// delivered again.
		got, err = s.getAll(queue)
	}
	if err != nil {
		t.Fatalf("rabbitmqtest: read queue %q: %v", queue, err)
	}
	if s.rd.read == nil {
		s.rd.read = make(map[string][]sinktest.Message)
	}
	for _, d := range got {
		s.rd.read[queue] = append(s.rd.read[queue], convert(d, order))
	}
	return slices.Clone(s.rd.read[queue])
}

// getAll takes every ready message of queue and acknowledges them.
func (s *Server) getAll(queue string) ([]amqp.Delivery, error) {
	ch, err := s.channelLocked()
	if err != nil {
		return nil, err
	}
	var got []amqp.Delivery
	for {
		d, ok, err := ch.Get(queue, false)
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		got = append(got, d)
	}
	if len(got) > 0 {
		if err := ch.Ack(got[len(got)-1].DeliveryTag, true); err != nil {
			return nil, err
		}
	}
	return got, nil
}

// convert returns d as a sinktest.Message, headers named in order first.
func convert(d amqp.Delivery, order []string) sinktest.Message {
	m := sinktest.Message{Destination: d.RoutingKey, Payload: d.Body}
	if d.Exchange != "" {
		m.Destination = d.Exchange + "/" + d.RoutingKey
	}
	if k, ok := d.Headers[delivery.HeaderAggregateID]; ok {
		m.Key = HeaderText(k)
	}
	for _, k := range order {
		if v, ok := d.Headers[k]; ok {
			m.Headers = append(m.Headers, delivery.Header{Key: k, Value: []byte(HeaderText(v))})
		}
	}
	var rest []string
	for k := range d.Headers {
		if k != delivery.HeaderAggregateID && !slices.Contains(order, k) {
			rest = append(rest, k)
		}
	}
	sort.Strings(rest)
	for _, k := range rest {
		m.Headers = append(m.Headers, delivery.Header{Key: k, Value: []byte(HeaderText(d.Headers[k]))})
	}
	return m
}

// HeaderText returns a header value as text ("" for none): the relay
// sends its headers as strings.
func HeaderText(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case []byte:
		return string(v)
	default:
		return fmt.Sprint(v)
	}
}

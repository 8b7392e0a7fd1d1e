package rabbitmq

import (
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/outbox-relay/outbox-relay/schema"
	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// Properties of every message the Sink publishes.
const (
	// AppID is the app_id property of every message.
	AppID = "outbox-relay"
	// ContentType is the content_type property of every event message:
	// the payload is the outbox row's JSON.
	ContentType = "application/json"
)

// contentTypeRaw is the content type of a dead letter whose payload is a
// malformed message's content, which need not be JSON.
const contentTypeRaw = "application/octet-stream"

// routingHeaders are the headers RabbitMQ reads as lists of extra routing
// keys (sender-selected distribution); a message with either as a string is
// refused with a channel error.
var routingHeaders = []string{"CC", "BCC"}

// message is one publishing on its way.
type message struct {
	exchange string
	key      string
	pub      amqp.Publishing
	// deadLetter marks a dead letter: returned unroutable, it means the
	// dead-letter queue is missing, an outage rather than the event's
	// fault.
	deadLetter bool
	id         string // the event's ID, for errors
	// returned is when the server first returned the message unroutable;
	// zero until then. Only the Send that holds the message touches it.
	returned time.Time
}

// mapper turns events into messages. It holds no connection, so tests use
// it alone. It is safe for concurrent use.
type mapper struct {
	exchange   delivery.Template
	routingKey delivery.Template
	dlq        string
	maxBytes   int
}

// newMapper returns the mapper of cfg, which must have its defaults and be
// valid.
func newMapper(cfg Config) (*mapper, error) {
	ex, err := parseTemplate(cfg.Exchange, exchangePlaceholders)
	if err != nil {
		return nil, fmt.Errorf("rabbitmq: exchange %w", err)
	}
	rk, err := parseTemplate(cfg.RoutingKey, routingKeyPlaceholders)
	if err != nil {
		return nil, fmt.Errorf("rabbitmq: routing key %w", err)
	}
	return &mapper{exchange: ex, routingKey: rk, dlq: cfg.DeadLetterQueue, maxBytes: cfg.MaxMessageBytes}, nil
}

// destination returns ev's exchange and routing key, or a *PermanentError
// of ReasonDestination when RabbitMQ would not accept them.
func (m *mapper) destination(ev *schema.Event) (exchange, key string, err error) {
	if err := m.exchange.Unfilled(ev, "exchange"); err != nil {
		return "", "", &delivery.PermanentError{Reason: delivery.ReasonDestination, Err: err}
	}
	exchange = m.exchange.Render(ev)
	if !legalName(exchange) {
		return "", "", &delivery.PermanentError{Reason: delivery.ReasonDestination, Err: fmt.Errorf(
			"event %s: exchange %q from template %q is not a name RabbitMQ accepts (1 to %d bytes of UTF-8); fix the event's aggregate_type %q or event_type %q, or change the exchange template",
			ev.ID, exchange, m.exchange.String(), maxName, ev.AggregateType, ev.EventType)}
	}
	key = m.routingKey.Render(ev)
	if !legalRoutingKey(key) {
		return "", "", &delivery.PermanentError{Reason: delivery.ReasonDestination, Err: fmt.Errorf(
			"event %s: routing key of %d bytes from template %q is not one RabbitMQ accepts (at most %d bytes of UTF-8); fix the event's fields or change the routing key template",
			ev.ID, len(key), m.routingKey.String(), maxName)}
	}
	return exchange, key, nil
}

// label returns ev's destination as the metrics name it: the exchange and
// the routing key with "*" for the aggregate ID.
func (m *mapper) label(exchange string, ev *schema.Event) string {
	return exchange + "/" + m.routingKey.Label(ev)
}

// Map returns ev's message: persistent, mandatory, to the exchange and with
// the routing key the templates give, message_id the event's ID, type its
// event type, app_id AppID, content_type ContentType, the payload as body,
// and headers delivery.AppendHeaders's plus delivery.HeaderAggregateID. It
// returns a *PermanentError when RabbitMQ could never take the message: a
// name it refuses (ReasonDestination), headers that are not a JSON object
// or that it cannot carry (ReasonHeaders), more than Config.MaxMessageBytes
// (ReasonSize), an ID or event type longer than a property holds
// (ReasonRejected). Header values are strings, whatever the JSON type of
// the event's own; of two headers with one name the last one wins.
func (m *mapper) Map(ev *schema.Event) (*message, string, error) {
	exchange, key, err := m.destination(ev)
	if err != nil {
		return nil, "", err
	}
	if err := properties(ev); err != nil {
		return nil, "", err
	}
	hs, err := delivery.AppendHeaders(make([]delivery.Header, 0, 8), ev)
	if err != nil {
		return nil, "", err
	}
	table := make(amqp.Table, len(hs)+1)
	size := len(ev.Payload)
	for _, h := range hs {
		if err := headerName(ev, h.Key); err != nil {
			return nil, "", err
		}
		table[h.Key] = string(h.Value)
		size += len(h.Key) + len(h.Value)
	}
	table[delivery.HeaderAggregateID] = ev.AggregateID
	size += len(delivery.HeaderAggregateID) + len(ev.AggregateID)
	if size > m.maxBytes {
		return nil, "", &delivery.PermanentError{Reason: delivery.ReasonSize, Err: fmt.Errorf(
			"event %s: its message is %d bytes (payload and headers), more than the maximum of %d; raise the sink's max message bytes (at most the server's max_message_size), or make the event smaller",
			ev.ID, size, m.maxBytes)}
	}
	msg := &message{
		exchange: exchange,
		key:      key,
		id:       ev.ID,
		pub: amqp.Publishing{
			Headers:      table,
			ContentType:  ContentType,
			DeliveryMode: amqp.Persistent,
			MessageId:    ev.ID,
			Type:         ev.EventType,
			AppId:        AppID,
			Body:         ev.Payload,
		},
	}
	return msg, m.label(exchange, ev), nil
}

// properties checks that ev's ID and event type fit the short-string
// properties message_id and type.
func properties(ev *schema.Event) error {
	if len(ev.ID) > maxName {
		return &delivery.PermanentError{Reason: delivery.ReasonRejected, Err: fmt.Errorf(
			"event %.40q...: its ID is %d bytes, more than the %d the message_id property holds; use shorter IDs", ev.ID, len(ev.ID), maxName)}
	}
	if len(ev.EventType) > maxName {
		return &delivery.PermanentError{Reason: delivery.ReasonRejected, Err: fmt.Errorf(
			"event %s: its event type is %d bytes, more than the %d the type property holds; use shorter event types", ev.ID, len(ev.EventType), maxName)}
	}
	return nil
}

// headerName checks that RabbitMQ can carry a header named name.
func headerName(ev *schema.Event, name string) error {
	if len(name) > maxName {
		return &delivery.PermanentError{Reason: delivery.ReasonHeaders, Err: fmt.Errorf(
			"event %s: header name %.40q... is %d bytes, more than the %d AMQP allows; shorten it", ev.ID, name, len(name), maxName)}
	}
	for _, r := range routingHeaders {
		if name == r {
			return &delivery.PermanentError{Reason: delivery.ReasonHeaders, Err: fmt.Errorf(
				"event %s: header %q is RabbitMQ's sender-selected distribution header, which must be a list of routing keys; rename it in the event's headers", ev.ID, name)}
		}
	}
	return nil
}

// DeadLetter returns ev's dead letter: published through the default
// exchange to the dead-letter queue, persistent and mandatory, with the
// headers of delivery.DeadLetterHeaders (naming the exchange and routing
// key ev was going to, when they are legal) plus delivery.HeaderAggregateID
// when ev has one, and ev's payload as body unless reason is ReasonSize or
// the payload would make the message larger than Config.MaxMessageBytes
// (then delivery.HeaderDLQPayloadOmitted is "true"). It never fails.
func (m *mapper) DeadLetter(ev *schema.Event, reason string, cause error, attempts int) (*message, string, error) {
	var dest string
	if exchange, key, err := m.destination(ev); err == nil {
		dest = exchange + "/" + key
	}
	hs := delivery.DeadLetterHeaders(ev, reason, cause, attempts, dest)
	table := make(amqp.Table, len(hs)+2)
	size := 0
	for _, h := range hs {
		table[h.Key] = string(h.Value)
		size += len(h.Key) + len(h.Value)
	}
	if ev.AggregateID != "" {
		table[delivery.HeaderAggregateID] = ev.AggregateID
	}
	pub := amqp.Publishing{
		Headers:      table,
		ContentType:  ContentType,
		DeliveryMode: amqp.Persistent,
		AppId:        AppID,
		Body:         ev.Payload,
	}
	if ev.Malformed != nil {
		pub.ContentType = contentTypeRaw
	}
	// The ID and the event type are in the headers whatever their length.
	if len(ev.ID) <= maxName {
		pub.MessageId = ev.ID
	}
	if len(ev.EventType) <= maxName {
		pub.Type = ev.EventType
	}
	if reason == delivery.ReasonSize || size+len(ev.Payload) > m.maxBytes {
		// A malformed message's content, say, may exceed the maximum: set
		// the event aside without it rather than not at all.
		pub.Body, pub.ContentType = nil, ""
		table[delivery.HeaderDLQPayloadOmitted] = "true"
	}
	return &message{key: m.dlq, pub: pub, deadLetter: true, id: ev.ID}, m.dlq, nil
}

package rabbitmq

import (
	"context"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// consistentHash is the exchange type of the rabbitmq_consistent_hash_exchange
// plugin, which Setup declares hashing the aggregate_id header.
const consistentHash = "x-consistent-hash"

// setup is Sink.Setup.
func (b *broker) setup(ctx context.Context) error {
	s, err := b.session(ctx)
	if err != nil {
		return err
	}
	defer s.guard(ctx)()
	ch, err := s.conn.Channel()
	if err != nil {
		return b.setupError(ctx, "open a channel", err)
	}
	defer func() { _ = ch.Close() }() // nothing to do about a close that fails

	if b.setupExchange {
		name := b.exchange.String()
		err := ch.ExchangeDeclarePassive(name, b.exchangeType, true, false, false, false, nil)
		if ae := serverError(err); ae != nil && ae.Code == amqp.NotFound {
			// The failed passive declare closed the channel.
			if ch, err = s.conn.Channel(); err != nil {
				return b.setupError(ctx, "open a channel", err)
			}
			var args amqp.Table
			if b.exchangeType == consistentHash {
				args = amqp.Table{"hash-header": delivery.HeaderAggregateID}
			}
			err = ch.ExchangeDeclare(name, b.exchangeType, true, false, false, false, args)
			if err == nil {
				attrs := []any{"exchange", name, "type", b.exchangeType, "durable", true}
				if args != nil {
					attrs = append(attrs, "hash_header", delivery.HeaderAggregateID)
				}
				b.log.Info("declared exchange", attrs...)
			}
		}
		if err != nil {
			return b.setupError(ctx, fmt.Sprintf("declare exchange %q (durable, type %s)", name, b.exchangeType), err)
		}
		s.remember(name, true)
	} else {
		b.log.Info("the exchange template has placeholders, so setup declares no exchange; declare each exchange events go to (durable, type "+b.exchangeType+")",
			"exchange", b.exchange.String())
	}

	_, err = ch.QueueDeclarePassive(b.dlq, true, false, false, false, nil)
	if ae := serverError(err); ae != nil && ae.Code == amqp.NotFound {
		if ch, err = s.conn.Channel(); err != nil {
			return b.setupError(ctx, "open a channel", err)
		}
		_, err = ch.QueueDeclare(b.dlq, true, false, false, false, amqp.Table{amqp.QueueTypeArg: b.dlqType})
		if err == nil {
			b.log.Info("declared dead-letter queue", "queue", b.dlq, "type", b.dlqType, "durable", true)
		}
	}
	if err != nil {
		return b.setupError(ctx, fmt.Sprintf("declare dead-letter queue %q (durable, type %s)", b.dlq, b.dlqType), err)
	}
	return nil
}

// setupError returns err, from doing what, with what to check.
func (b *broker) setupError(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return explain(b.dialer.uri, fmt.Errorf("%s: %w", what, ctx.Err()))
	}
	if ae := serverError(err); ae != nil && ae.Code == amqp.AccessRefused {
		return fmt.Errorf("rabbitmq setup: %s: user %q may not (%w); run setup as a user with configure rights on vhost %q, or declare it yourself with the settings named",
			what, b.dialer.uri.Username, err, b.dialer.uri.Vhost)
	}
	if ae := serverError(err); ae != nil && ae.Code == amqp.PreconditionFailed {
		return fmt.Errorf("rabbitmq setup: %s: %w; setup never changes what exists: delete it, or change the sink's settings to match", what, err)
	}
	return fmt.Errorf("rabbitmq setup: %s: %w", what, err)
}

package rabbitmq

import (
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

// declared reports whether an active declare of exchange (of kind and
// durability) and of queue (with args) as an independent client makes them
// succeeds, which RabbitMQ allows only when what exists is the same; an
// empty name is not checked.
func declared(t *testing.T, exchange, kind string, durable bool, queue string, args amqp.Table) (exchangeOK, queueOK bool) {
	t.Helper()
	conn := serverFor(t).Dial(t)
	if exchange != "" {
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		exchangeOK = ch.ExchangeDeclare(exchange, kind, durable, false, false, false, nil) == nil
	}
	if queue != "" {
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		_, err = ch.QueueDeclare(queue, true, false, false, false, args)
		queueOK = err == nil
	}
	return exchangeOK, queueOK
}

// exists reports whether exchange and queue exist, by passive declares.
func exists(t *testing.T, exchange, queue string) (exchangeOK, queueOK bool) {
	t.Helper()
	conn := serverFor(t).Dial(t)
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	exchangeOK = ch.ExchangeDeclarePassive(exchange, "topic", true, false, false, false, nil) == nil
	if ch, err = conn.Channel(); err != nil {
		t.Fatal(err)
	}
	_, err = ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	return exchangeOK, err == nil
}

func TestSetup(t *testing.T) {
	t.Run("declares", func(t *testing.T) {
		cfg := testConfig(t)
		s, _ := newSink(t, cfg)
		setup(t, s)
		setup(t, s) // again: nothing to do
		if ex, q := exists(t, cfg.Exchange, cfg.DeadLetterQueue); !ex || !q {
			t.Fatalf("after Setup, the exchange exists: %v; the queue: %v; want both", ex, q)
		}
		ex, q := declared(t, cfg.Exchange, "topic", true, cfg.DeadLetterQueue, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeClassic})
		if !ex || !q {
			t.Errorf("after Setup, a durable topic exchange: %v; a durable classic queue: %v; want both", ex, q)
		}
	})

	t.Run("types", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.ExchangeType, cfg.DeadLetterQueueType = "fanout", QueueQuorum
		s, _ := newSink(t, cfg)
		setup(t, s)
		if ex, q := exists(t, cfg.Exchange, cfg.DeadLetterQueue); !ex || !q {
			t.Fatalf("after Setup, the exchange exists: %v; the queue: %v; want both", ex, q)
		}
		ex, q := declared(t, cfg.Exchange, "fanout", true, cfg.DeadLetterQueue, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum})
		if !ex || !q {
			t.Errorf("after Setup, a durable fanout exchange: %v; a quorum queue: %v; want both", ex, q)
		}
	})

	t.Run("leaves what exists", func(t *testing.T) {
		cfg := testConfig(t)
		// A transient direct exchange and a quorum queue, unlike what
		// Setup would make.
		if ex, q := declared(t, cfg.Exchange, "direct", false, cfg.DeadLetterQueue, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum}); !ex || !q {
			t.Fatal("could not declare the exchange and the queue")
		}
		s, _ := newSink(t, cfg)
		setup(t, s)
		if ex, q := declared(t, cfg.Exchange, "direct", false, cfg.DeadLetterQueue, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum}); !ex || !q {
			t.Errorf("after Setup, the transient direct exchange is the same: %v; the quorum queue: %v; want both unchanged", ex, q)
		}
	})

	t.Run("templated exchange", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Exchange = unique("tmpl") + ".{aggregate_type}"
		s, _ := newSink(t, cfg)
		setup(t, s)
		ex, q := exists(t, cfg.Exchange, cfg.DeadLetterQueue)
		if ex || !q {
			t.Errorf("after Setup, an exchange named %q: %v (want none); the dead-letter queue: %v (want it)", cfg.Exchange, ex, q)
		}
	})
}

package e2e

import (
	"testing"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
	"github.com/outbox-relay/outbox-relay/sinks/nats"
	"github.com/outbox-relay/outbox-relay/sinks/nats/natstest"
	"github.com/outbox-relay/outbox-relay/sinks/rabbitmq"
	"github.com/outbox-relay/outbox-relay/sinks/rabbitmq/rabbitmqtest"
	"github.com/outbox-relay/outbox-relay/sinks/redis"
	"github.com/outbox-relay/outbox-relay/sinks/redis/redistest"
	"github.com/outbox-relay/outbox-relay/sinks/sinktest"
)

// sinkCases are the brokers TestSinks runs the relay against.
var sinkCases = []sinkCase{
	{"nats", startNATS},
	{"rabbitmq", startRabbitMQ},
	{"redis", startRedis},
}

// startNATS starts a NATS server with JetStream in the test process; the
// relay makes its stream at start. JetStream's duplicate window drops the
// relay's re-sends by their Nats-Msg-Id.
func startNATS(t *testing.T) *sinkBroker {
	s := natstest.Start(t)
	return &sinkBroker{
		env:  []string{"OUTBOX_RELAY_SINK=nats", "OUTBOX_RELAY_NATS_URL=" + s.URL},
		read: func(t *testing.T) []sinktest.Message { return s.Read(t, nats.DefaultStream) },
		readDeadLetters: func(t *testing.T) []sinktest.Message {
			return s.ReadDeadLetters(t, nats.DefaultDeadLetterStream)
		},
		maxBytes: "OUTBOX_RELAY_NATS_MAX_MESSAGE_BYTES",
		dest: func(m sinktest.Message) string {
			return "outbox." + field(m, delivery.HeaderAggregateType) + "." + m.Key
		},
		stop:    s.Stop,
		start:   s.Start,
		dropped: "outbox_relay_nats_duplicates_total",
	}
}

// startRedis starts a redis-server with appendfsync always.
func startRedis(t *testing.T) *sinkBroker {
	s := redistest.Start(t)
	return &sinkBroker{
		env:  []string{"OUTBOX_RELAY_SINK=redis", "OUTBOX_RELAY_REDIS_URL=" + s.URL},
		read: func(t *testing.T) []sinktest.Message { return s.Read(t, "outbox.*") },
		readDeadLetters: func(t *testing.T) []sinktest.Message {
			return s.ReadDeadLetters(t, redis.DefaultDeadLetterStream)
		},
		maxBytes: "OUTBOX_RELAY_REDIS_MAX_MESSAGE_BYTES",
		dest:     func(m sinktest.Message) string { return "outbox." + field(m, delivery.HeaderAggregateType) },
		stop:     s.Stop,
		start:    s.Start,
	}
}

// startRabbitMQ starts a rabbitmq-server, declares the relay's exchange as
// setup would, and binds a durable queue to it with "#" before the relay
// publishes: RabbitMQ keeps only what reaches a bound queue.
func startRabbitMQ(t *testing.T) *sinkBroker {
	s := rabbitmqtest.Start(t)
	conn := s.Dial(t)
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclare(rabbitmq.DefaultExchange, rabbitmq.DefaultExchangeType, true, false, false, false, nil); err != nil {
		t.Fatalf("declare exchange: %v", err)
	}
	_ = ch.Close()
	const queue = "e2e-outbox"
	s.Bind(t, rabbitmq.DefaultExchange, queue)
	return &sinkBroker{
		env:  []string{"OUTBOX_RELAY_SINK=rabbitmq", "OUTBOX_RELAY_RABBITMQ_URL=" + s.URL},
		read: func(t *testing.T) []sinktest.Message { return s.Read(t, queue) },
		readDeadLetters: func(t *testing.T) []sinktest.Message {
			return s.ReadDeadLetters(t, rabbitmq.DefaultDeadLetterQueue)
		},
		maxBytes: "OUTBOX_RELAY_RABBITMQ_MAX_MESSAGE_BYTES",
		dest: func(m sinktest.Message) string {
			return rabbitmq.DefaultExchange + "/" + field(m, delivery.HeaderAggregateType) + "." + field(m, delivery.HeaderEventType)
		},
		stop:  s.Stop,
		start: s.Start,
	}
}

// field returns the value of m's header key, or "".
func field(m sinktest.Message, key string) string {
	v, _ := m.Header(key)
	return v
}

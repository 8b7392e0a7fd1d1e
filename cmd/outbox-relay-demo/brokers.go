package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os/exec"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/outbox-relay/outbox-relay/sinks/nats/natstest"
	"github.com/outbox-relay/outbox-relay/sinks/rabbitmq/rabbitmqtest"
	"github.com/outbox-relay/outbox-relay/sinks/redis/redistest"
)

// The brokers -sink names, as the relay's --sink names them.
const (
	sinkKafka    = "kafka"
	sinkNATS     = "nats"
	sinkRabbitMQ = "rabbitmq"
	sinkRedis    = "redis"
)

// sinkNames lists what -sink accepts.
var sinkNames = []string{sinkKafka, sinkNATS, sinkRabbitMQ, sinkRedis}

// broker is the broker of one sink, private to the demo, with a consumer
// that prints what it holds.
type broker struct {
	// env is the relay's settings for the broker: OUTBOX_RELAY_SINK and
	// the broker's address.
	env []string
	// prepare, if set, makes what the consumer reads from, once the
	// relay's setup has made the sink's part and before the relay and the
	// writer start: RabbitMQ's demo queue, bound to the relay's exchange,
	// since RabbitMQ keeps only what reaches a queue.
	prepare func() error
	// consume prints every event the broker holds, from the first, and
	// counts it in st, until ctx ends; it returns ctx's error then.
	consume func(ctx context.Context, out *printer, st *stats) error
	// close stops the broker and removes what it stored.
	close func() error
}

// startBroker starts the broker of sink on a free port of 127.0.0.1, with
// its data, if it keeps any, in a new temporary directory. The Kafka
// broker (franz-go's kfake) and the NATS server run in the demo's process;
// redis-server and rabbitmq-server (with its own epmd) run as child
// processes, each in a process group of its own (so that Ctrl-C does not
// stop them before the relay has drained), which the kernel kills if the
// demo dies without closing them.
func startBroker(sink string, out *printer) (*broker, error) {
	switch sink {
	case sinkKafka:
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(3))
		if err != nil {
			return nil, err
		}
		addrs := c.ListenAddrs()
		out.say("demo", "Kafka-protocol broker (kfake, in-process) at %s", strings.Join(addrs, ","))
		return &broker{
			env: []string{"OUTBOX_RELAY_SINK=" + sinkKafka, "OUTBOX_RELAY_KAFKA_BROKERS=" + strings.Join(addrs, ",")},
			consume: func(ctx context.Context, out *printer, st *stats) error {
				return consumeKafka(ctx, addrs, out, st)
			},
			close: func() error { c.Close(); return nil },
		}, nil
	case sinkNATS:
		s, err := natstest.New(natstest.Options{})
		if err != nil {
			return nil, err
		}
		out.say("demo", "NATS server with JetStream (in-process, store in a temporary directory) at %s", s.URL)
		return &broker{
			env: []string{"OUTBOX_RELAY_SINK=" + sinkNATS, "OUTBOX_RELAY_NATS_URL=" + s.URL},
			consume: func(ctx context.Context, out *printer, st *stats) error {
				return consumeNATS(ctx, s.URL, out, st)
			},
			close: s.Close,
		}, nil
	case sinkRabbitMQ:
		out.say("demo", "a RabbitMQ node takes 4 to 10 seconds to start here; waiting...")
		began := time.Now()
		s, err := rabbitmqtest.New(rabbitmqtest.Options{})
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("rabbitmq-server is not installed; install the rabbitmq-server package, or use -sink kafka: %w", err)
		}
		if err != nil {
			return nil, err
		}
		out.say("demo", "rabbitmq-server node %s (pid %d, data in a temporary directory) started in %.1fs at %s",
			s.Node, s.PID(), time.Since(began).Seconds(), s.URL)
		return &broker{
			env: []string{"OUTBOX_RELAY_SINK=" + sinkRabbitMQ, "OUTBOX_RELAY_RABBITMQ_URL=" + s.URL},
			prepare: func() error {
				if err := bindRabbitMQ(s.URL); err != nil {
					return err
				}
				out.say("demo", "durable queue %s bound to exchange %s with binding key #", rabbitmqQueue, rabbitmqExchange)
				return nil
			},
			consume: func(ctx context.Context, out *printer, st *stats) error {
				return consumeRabbitMQ(ctx, s.URL, out, st)
			},
			close: s.Close,
		}, nil
	case sinkRedis:
		s, err := redistest.New(redistest.Options{})
		if errors.Is(err, exec.ErrNotFound) {
			return nil, fmt.Errorf("redis-server is not installed; install the redis-server package, or use -sink kafka: %w", err)
		}
		if err != nil {
			return nil, err
		}
		out.say("demo", "redis-server (pid %d, appendonly yes, appendfsync always, data in %s) at %s", s.PID(), s.Dir, s.URL)
		return &broker{
			env: []string{"OUTBOX_RELAY_SINK=" + sinkRedis, "OUTBOX_RELAY_REDIS_URL=" + s.URL},
			consume: func(ctx context.Context, out *printer, st *stats) error {
				return consumeRedis(ctx, s.URL, out, st)
			},
			close: s.Close,
		}, nil
	}
	return nil, fmt.Errorf("-sink %q: use one of %s", sink, strings.Join(sinkNames, ", "))
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os/exec"
	"strings"
	"sync/atomic"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	goredis "github.com/redis/go-redis/v9"

	"github.com/outbox-relay/outbox-relay/sinks/rabbitmq/rabbitmqtest"
	"github.com/outbox-relay/outbox-relay/sinks/redis/redistest"
)

// The brokers --sinks names. Kafka runs every workload; the others run W1
// and W2 (workload.perSink), each broker in a process of its own, fresh for
// every run, with a consumer here reading with the broker's own client.
const (
	sinkKafka    = "kafka"
	sinkNATS     = "nats"
	sinkRabbitMQ = "rabbitmq"
	sinkRedis    = "redis"
)

// sinkNames lists what --sinks accepts, in the order the report shows them.
var sinkNames = []string{sinkKafka, sinkNATS, sinkRabbitMQ, sinkRedis}

// sinkTitle names sink in text.
func sinkTitle(sink string) string {
	switch sink {
	case sinkNATS:
		return "NATS JetStream"
	case sinkRabbitMQ:
		return "RabbitMQ"
	case sinkRedis:
		return "Redis Streams"
	}
	return "Kafka"
}

// The relay's defaults that the consumers read: the JetStream stream of
// --nats-stream, the subjects of --nats-subject
// (outbox.{aggregate_type}.{aggregate_id}), the stream key of
// --redis-stream (outbox.{aggregate_type}) and the field of an entry that
// holds the payload, and the exchange of --rabbitmq-exchange, which setup
// declares.
const (
	natsStream       = "OUTBOX"
	redisPayload     = "payload"
	rabbitmqExchange = "outbox"
)

// rabbitmqQueue is the durable classic queue the benchmark binds to
// rabbitmqExchange with the binding key "#" before the relay starts:
// RabbitMQ keeps only what reaches a queue, and the relay holds an event
// that reaches none.
const rabbitmqQueue = "outbox-relay-bench"

// The RabbitMQ consumer's flow control: the broker sends it up to
// rabbitmqPrefetch unacknowledged messages ahead, and it acknowledges them
// rabbitmqAckEvery at a time (basic.ack with multiple), or whatever it
// holds once no message came for consumerFetchMaxWait.
const (
	rabbitmqPrefetch = 2000
	rabbitmqAckEvery = 500
)

// redisReadCount is how many entries one XREAD of the consumer may return.
const redisReadCount = 10_000

// brokerProc is a broker the benchmark started in a process of its own:
// bench/broker (kfake, or the NATS server), a RabbitMQ node, or
// redis-server.
type brokerProc interface {
	// pid is the broker's process, to read its CPU time.
	pid() int
	// stop ends the broker, within timeout, and removes what it stored.
	stop(timeout time.Duration) error
}

// redisServer is a redis-server from redistest as a brokerProc.
type redisServer struct{ s *redistest.Server }

func (r redisServer) pid() int                 { return r.s.PID() }
func (r redisServer) stop(time.Duration) error { return r.s.Close() }

// rabbitmqNode is a RabbitMQ node from rabbitmqtest as a brokerProc: its
// pid is the node's Erlang VM.
type rabbitmqNode struct{ s *rabbitmqtest.Server }

func (r rabbitmqNode) pid() int                 { return r.s.PID() }
func (r rabbitmqNode) stop(time.Duration) error { return r.s.Close() }

// startBroker starts a fresh broker for w and returns it with the address
// the relay and the consumer take: bench/broker's kfake (unless --brokers
// names Kafka brokers; then the process is nil), bench/broker's NATS
// server, a node of the installed rabbitmq-server with its own epmd
// (rabbitmqtest's, 4 to 10 seconds to start, not timed), or redis-server
// with appendonly yes and appendfsync always (redistest's settings); the
// last two die with the benchmark.
func (b *bench) startBroker(ctx context.Context, w workload) (brokerProc, string, error) {
	switch w.sinkName() {
	case sinkNATS:
		p, url, err := startBroker(ctx, b.brokerBin, "--kind", sinkNATS)
		if err != nil {
			return nil, "", err
		}
		return p, url, nil
	case sinkRabbitMQ:
		s, err := rabbitmqtest.New(rabbitmqtest.Options{})
		if err != nil {
			return nil, "", fmt.Errorf("start rabbitmq-server: %w", err)
		}
		return rabbitmqNode{s}, s.URL, nil
	case sinkRedis:
		s, err := redistest.New(redistest.Options{})
		if err != nil {
			return nil, "", fmt.Errorf("start redis-server: %w", err)
		}
		return redisServer{s}, s.URL, nil
	}
	if b.o.brokers != "" {
		return nil, b.o.brokers, nil
	}
	p, addr, err := startBroker(ctx, b.brokerBin, "--partitions", fmt.Sprint(b.o.partitions))
	if err != nil {
		return nil, "", err
	}
	return p, addr, nil
}

// sinkEnv is the relay's setting of its sink: --sink and the broker's
// address.
func sinkEnv(sink, addr string) []string {
	switch sink {
	case sinkNATS:
		return []string{"OUTBOX_RELAY_SINK=" + sinkNATS, "OUTBOX_RELAY_NATS_URL=" + addr}
	case sinkRabbitMQ:
		return []string{"OUTBOX_RELAY_SINK=" + sinkRabbitMQ, "OUTBOX_RELAY_RABBITMQ_URL=" + addr}
	case sinkRedis:
		return []string{"OUTBOX_RELAY_SINK=" + sinkRedis, "OUTBOX_RELAY_REDIS_URL=" + addr}
	}
	return []string{"OUTBOX_RELAY_SINK=" + sinkKafka, "OUTBOX_RELAY_KAFKA_BROKERS=" + addr}
}

// prepareSink makes what the consumer reads from in sink's broker at addr,
// once the relay's setup has made the sink's part and before the relay
// starts, whether a consumer reads or not: for RabbitMQ the queue
// rabbitmqQueue, durable, bound to rabbitmqExchange with the binding key
// "#". The other sinks need nothing.
func prepareSink(sink, addr string) error {
	if sink != sinkRabbitMQ {
		return nil
	}
	conn, err := rabbitmqtest.DialAs(addr, "outbox-relay-bench")
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open a channel to %s: %w", addr, err)
	}
	return rabbitmqtest.BindQueue(ch, rabbitmqExchange, rabbitmqQueue)
}

// newSinkReceiver connects a consumer of the rows of aggregate type
// aggType in sink's broker at addr, for rows numbered 0 to rows-1: for
// NATS an ordered JetStream consumer of the stream natsStream filtered to
// the subjects outbox.<aggType>.>, created here (the relay's setup must
// have made the stream); for RabbitMQ a consumer of rabbitmqQueue (which
// prepareSink made) with a prefetch of rabbitmqPrefetch, acknowledging
// rabbitmqAckEvery messages at a time; for Redis a client that reads the
// stream outbox.<aggType> from its start with XREAD BLOCK
// (consumerFetchMaxWait) COUNT redisReadCount. The NATS and Redis
// consumers acknowledge nothing. Each counts.
func newSinkReceiver(ctx context.Context, sink, addr, aggType string, rows int64) (*receiver, error) {
	switch sink {
	case sinkNATS:
		return natsReceiver(ctx, addr, "outbox."+aggType+".>", rows)
	case sinkRabbitMQ:
		return rabbitmqReceiver(addr, rows)
	case sinkRedis:
		return redisReceiver(ctx, addr, "outbox."+aggType, rows)
	}
	return nil, fmt.Errorf("no consumer for sink %q", sink)
}

// natsReceiver is newSinkReceiver's NATS consumer of subject.
func natsReceiver(ctx context.Context, url, subject string, rows int64) (*receiver, error) {
	nc, err := natsgo.Connect(url, natsgo.Name("outbox-relay-bench"))
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream client of %s: %w", url, err)
	}
	cons, err := js.OrderedConsumer(ctx, natsStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("ordered consumer of stream %s: %w", natsStream, err)
	}
	consume := func(ctx context.Context, got func([]byte, int64)) error {
		defer nc.Close()
		cc, err := cons.Consume(func(m jetstream.Msg) { got(m.Data(), time.Now().UnixNano()) })
		if err != nil {
			return fmt.Errorf("consume stream %s: %w", natsStream, err)
		}
		<-ctx.Done()
		cc.Stop()
		return nil
	}
	return &receiver{what: "stream " + natsStream + " (" + subject + ")", consume: consume, received: make([]atomic.Int64, rows)}, nil
}

// rabbitmqReceiver is newSinkReceiver's RabbitMQ consumer of
// rabbitmqQueue.
func rabbitmqReceiver(url string, rows int64) (*receiver, error) {
	conn, err := rabbitmqtest.DialAs(url, "outbox-relay-bench")
	if err != nil {
		return nil, err
	}
	// Consuming before the relay starts: the clock does not count it.
	ch, err := conn.Channel()
	if err == nil {
		err = ch.Qos(rabbitmqPrefetch, 0, false)
	}
	var msgs <-chan amqp.Delivery
	if err == nil {
		msgs, err = ch.Consume(rabbitmqQueue, "outbox-relay-bench", false, false, false, false, nil)
	}
	if err != nil {
		_ = conn.CloseDeadline(time.Now().Add(time.Second))
		return nil, fmt.Errorf("consume queue %s of %s: %w", rabbitmqQueue, url, err)
	}
	consume := func(ctx context.Context, got func([]byte, int64)) error {
		// The node may be gone already when the run failed.
		defer func() { _ = conn.CloseDeadline(time.Now().Add(time.Second)) }()
		idle := time.NewTicker(consumerFetchMaxWait)
		defer idle.Stop()
		var last, acked uint64 // delivery tags
		for {
			select {
			case <-ctx.Done():
				return nil
			case m, ok := <-msgs:
				if !ok {
					if ctx.Err() != nil {
						return nil
					}
					return fmt.Errorf("consume queue %s: the connection or the consumer was closed", rabbitmqQueue)
				}
				got(m.Body, time.Now().UnixNano())
				last = m.DeliveryTag
				if last-acked < rabbitmqAckEvery {
					continue
				}
			case <-idle.C:
				if last == acked {
					continue
				}
			}
			if err := ch.Ack(last, true); err != nil {
				return fmt.Errorf("acknowledge queue %s up to delivery %d: %w", rabbitmqQueue, last, err)
			}
			acked = last
		}
	}
	return &receiver{what: "queue " + rabbitmqQueue, consume: consume, received: make([]atomic.Int64, rows)}, nil
}

// redisReceiver is newSinkReceiver's Redis consumer of the stream key.
func redisReceiver(ctx context.Context, url, key string, rows int64) (*receiver, error) {
	opt, err := goredis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", url, err)
	}
	opt.DisableIdentity = true
	c := goredis.NewClient(opt)
	// Connected before the relay starts: the clock does not count it.
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		return nil, fmt.Errorf("ping %s: %w", url, err)
	}
	consume := func(ctx context.Context, got func([]byte, int64)) error {
		defer c.Close()
		after := "0"
		for {
			res, err := c.XRead(ctx, &goredis.XReadArgs{Streams: []string{key, after}, Count: redisReadCount, Block: consumerFetchMaxWait}).Result()
			now := time.Now().UnixNano()
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, goredis.Nil) {
				continue // nothing new within the block
			}
			if err != nil {
				return fmt.Errorf("read stream %s: %w", key, err)
			}
			for _, st := range res {
				for _, m := range st.Messages {
					after = m.ID
					if v, ok := m.Values[redisPayload].(string); ok {
						got([]byte(v), now)
					}
				}
			}
		}
	}
	return &receiver{what: "stream " + key, consume: consume, received: make([]atomic.Int64, rows)}, nil
}

// describeSinks says in m which NATS server, RabbitMQ node and Redis
// server the runs through those sinks use, for the report. It starts each
// once, as the runs do, to ask its version, so that a broker that cannot
// start (no redis-server or rabbitmq-server installed) stops the benchmark
// before its first run rather than in the middle.
func describeSinks(ctx context.Context, sinks []string, brokerBin string, m *machine) error {
	for _, sink := range sinks {
		switch sink {
		case sinkNATS:
			v, err := natsVersion(ctx, brokerBin)
			if err != nil {
				return err
			}
			m.NATS = "nats-server " + v + " embedded in bench/broker (--kind nats), in its own process, JetStream with file storage in a temporary directory and its default syncing (no fsync per message)"
		case sinkRabbitMQ:
			v, err := rabbitmqVersion()
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("--sinks names rabbitmq: %w; install the rabbitmq-server package, or leave rabbitmq out of --sinks", err)
			}
			if err != nil {
				return err
			}
			m.RabbitMQ = "rabbitmq-server " + v + " (rabbitmqtest's node: an Erlang VM, beam.smp, whose CPU is the broker's, and an epmd of its own), in its own processes with its data in a temporary directory; persistent messages, confirmed once every queue they reach has them on disk"
		case sinkRedis:
			v, err := redisVersion(ctx)
			if errors.Is(err, exec.ErrNotFound) {
				return fmt.Errorf("--sinks names redis: %w; install the redis-server package, or leave redis out of --sinks", err)
			}
			if err != nil {
				return err
			}
			m.Redis = "redis-server " + v + " in its own process, appendonly yes, appendfsync always (a sync before each reply), no RDB snapshots"
		}
	}
	return nil
}

// rabbitmqVersion starts a RabbitMQ node as the runs do and returns its
// version and its Erlang's, as it tells a client.
func rabbitmqVersion() (string, error) {
	s, err := rabbitmqtest.New(rabbitmqtest.Options{})
	if err != nil {
		return "", fmt.Errorf("start rabbitmq-server: %w", err)
	}
	defer s.Close()
	conn, err := rabbitmqtest.DialAs(s.URL, "outbox-relay-bench")
	if err != nil {
		return "", err
	}
	defer conn.Close()
	v := fmt.Sprint(conn.Properties["version"])
	if p, ok := conn.Properties["platform"].(string); ok {
		v += " on " + p
	}
	return v, nil
}

// natsVersion starts bench/broker's NATS server as the runs do and returns
// its version.
func natsVersion(ctx context.Context, brokerBin string) (string, error) {
	p, url, err := startBroker(ctx, brokerBin, "--kind", sinkNATS)
	if err != nil {
		return "", err
	}
	defer p.stop(10 * time.Second)
	nc, err := natsgo.Connect(url, natsgo.Name("outbox-relay-bench"))
	if err != nil {
		return "", fmt.Errorf("connect to %s: %w", url, err)
	}
	defer nc.Close()
	return nc.ConnectedServerVersion(), nil
}

// redisVersion starts a redis-server as the runs do and returns its
// redis_version.
func redisVersion(ctx context.Context) (string, error) {
	s, err := redistest.New(redistest.Options{})
	if err != nil {
		return "", fmt.Errorf("start redis-server: %w", err)
	}
	defer s.Close()
	opt, err := goredis.ParseURL(s.URL)
	if err != nil {
		return "", err
	}
	opt.DisableIdentity = true
	c := goredis.NewClient(opt)
	defer c.Close()
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		return "", fmt.Errorf("INFO server of redis-server: %w", err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			return v, nil
		}
	}
	return "unknown", nil
}

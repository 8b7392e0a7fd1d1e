package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
	"github.com/outbox-relay/outbox-relay/sinks/rabbitmq/rabbitmqtest"
)

// The consumers read with each broker's own Go client, none of the relay's
// code, and print each event as
//
//	<destination> <where in it> key=<aggregate id> <event type> position=<position> value=<payload>

// consumeKafka prints every record of the outbox.* topics.
func consumeKafka(ctx context.Context, brokers []string, out *printer, st *stats) error {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ConsumeRegex(),
		kgo.ConsumeTopics(`^outbox\..*`),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.MetadataMinAge(250*time.Millisecond),
		kgo.MetadataMaxAge(time.Second),
	)
	if err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		fs.EachRecord(func(r *kgo.Record) {
			var et, pos string
			for _, h := range r.Headers {
				switch h.Key {
				case delivery.HeaderEventType:
					et = string(h.Value)
				case delivery.HeaderPosition:
					pos = string(h.Value)
				}
			}
			st.consume()
			out.say("consumer", "%s p%d key=%s %-9s position=%s value=%s", r.Topic, r.Partition, r.Key, et, pos, r.Value)
		})
	}
}

// natsStream is the JetStream stream the relay's setup makes for the
// events: --nats-stream's default.
const natsStream = "OUTBOX"

// consumeNATS prints every message of the stream natsStream, with an
// ordered consumer from its first message.
func consumeNATS(ctx context.Context, url string, out *printer, st *stats) error {
	nc, err := natsgo.Connect(url, natsgo.Name("outbox-relay-demo"))
	if err != nil {
		return fmt.Errorf("consumer: connect to %s: %w", url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	cons, err := js.OrderedConsumer(ctx, natsStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("consumer: ordered consumer of stream %s: %w", natsStream, err)
	}
	msgs, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("consumer: read stream %s: %w", natsStream, err)
	}
	defer msgs.Stop()
	for {
		m, err := msgs.Next(jetstream.NextContext(ctx))
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			return fmt.Errorf("consumer: read stream %s: %w", natsStream, err)
		}
		var seq uint64
		if meta, err := m.Metadata(); err == nil {
			seq = meta.Sequence.Stream
		}
		h := m.Headers()
		st.consume()
		out.say("consumer", "%s seq=%d key=%s %-9s position=%s value=%s", m.Subject(), seq,
			h.Get(delivery.HeaderAggregateID), h.Get(delivery.HeaderEventType), h.Get(delivery.HeaderPosition), m.Data())
	}
}

// rabbitmqExchange is the exchange the relay's setup declares and
// publishes every event to: --rabbitmq-exchange's default.
const rabbitmqExchange = "outbox"

// rabbitmqQueue is the durable queue the demo binds to rabbitmqExchange
// and reads.
const rabbitmqQueue = "outbox-relay-demo"

// rabbitmqPrefetch is how many unacknowledged messages the broker may send
// the demo's consumer ahead.
const rabbitmqPrefetch = 100

// bindRabbitMQ declares rabbitmqQueue, durable, and binds it to
// rabbitmqExchange, which the relay's setup declared, with the binding key
// "#", so that it receives every event: RabbitMQ drops what reaches no
// queue, and the relay holds an event no queue is bound for. It must run
// before the writer starts.
func bindRabbitMQ(url string) error {
	conn, err := rabbitmqtest.DialAs(url, "outbox-relay-demo")
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open a channel: %w", err)
	}
	return rabbitmqtest.BindQueue(ch, rabbitmqExchange, rabbitmqQueue)
}

// consumeRabbitMQ prints every message of rabbitmqQueue, acknowledging
// each once printed.
func consumeRabbitMQ(ctx context.Context, url string, out *printer, st *stats) error {
	conn, err := rabbitmqtest.DialAs(url, "outbox-relay-demo")
	if err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("consumer: open a channel: %w", err)
	}
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	if err := ch.Qos(rabbitmqPrefetch, 0, false); err != nil {
		return fmt.Errorf("consumer: set the prefetch to %d: %w", rabbitmqPrefetch, err)
	}
	msgs, err := ch.Consume(rabbitmqQueue, "outbox-relay-demo", false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consumer: consume queue %s: %w", rabbitmqQueue, err)
	}
	for {
		var m amqp.Delivery
		var ok bool
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m, ok = <-msgs:
		}
		if !ok {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			select {
			case e := <-closed:
				if e != nil {
					return fmt.Errorf("consumer: read queue %s: %w", rabbitmqQueue, e)
				}
			default:
			}
			return fmt.Errorf("consumer: read queue %s: the server ended the consumer", rabbitmqQueue)
		}
		st.consume()
		out.say("consumer", "%s/%s tag=%d key=%s %-9s position=%s value=%s", m.Exchange, m.RoutingKey, m.DeliveryTag,
			rabbitmqtest.HeaderText(m.Headers[delivery.HeaderAggregateID]), rabbitmqtest.HeaderText(m.Headers[delivery.HeaderEventType]),
			rabbitmqtest.HeaderText(m.Headers[delivery.HeaderPosition]), m.Body)
		if err := m.Ack(false); err != nil {
			return fmt.Errorf("consumer: acknowledge message %d of queue %s: %w", m.DeliveryTag, rabbitmqQueue, err)
		}
	}
}

// redisPattern matches the keys of the streams the relay writes to with
// its default --redis-stream, outbox.{aggregate_type}.
const redisPattern = "outbox.*"

// redisScanEvery is how often consumeRedis looks for new streams once it
// reads some; until then it looks every redisBlock.
const redisScanEvery = time.Second

// redisBlock is how long an XREAD waits for new entries, and so how long
// consumeRedis may take to return once its context ends: go-redis does not
// interrupt a blocked read.
const redisBlock = 250 * time.Millisecond

// consumeRedis prints every entry of the streams whose keys match
// redisPattern, with XREAD BLOCK from each stream's first entry.
func consumeRedis(ctx context.Context, url string, out *printer, st *stats) error {
	opt, err := goredis.ParseURL(url)
	if err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	opt.DisableIdentity = true
	c := goredis.NewClient(opt)
	defer c.Close()
	var keys []string
	after := map[string]string{} // stream key -> ID of the last entry read
	var scanned time.Time
	for {
		if len(keys) == 0 || time.Since(scanned) >= redisScanEvery {
			found, err := streamKeys(ctx, c, redisPattern)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				return fmt.Errorf("consumer: %w", err)
			}
			for _, k := range found {
				if _, ok := after[k]; !ok {
					after[k] = "0"
					keys = append(keys, k)
				}
			}
			scanned = time.Now()
		}
		if len(keys) == 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(redisBlock):
			}
			continue
		}
		args := slices.Clone(keys)
		for _, k := range keys {
			args = append(args, after[k])
		}
		res, err := c.XRead(ctx, &goredis.XReadArgs{Streams: args, Count: 100, Block: redisBlock}).Result()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, goredis.Nil) {
			continue // nothing new within the block
		}
		if err != nil {
			return fmt.Errorf("consumer: XREAD %v: %w", keys, err)
		}
		for _, s := range res {
			for _, m := range s.Messages {
				after[s.Stream] = m.ID
				st.consume()
				out.say("consumer", "%s id=%s key=%v %-9v position=%v value=%v", s.Stream, m.ID,
					m.Values[delivery.HeaderAggregateID], m.Values[delivery.HeaderEventType], m.Values[delivery.HeaderPosition], m.Values[redisPayload])
			}
		}
	}
}

// redisPayload is the field of a stream entry that holds the payload.
const redisPayload = "payload"

// streamKeys returns the keys of the streams that match pattern, with SCAN.
func streamKeys(ctx context.Context, c *goredis.Client, pattern string) ([]string, error) {
	var keys []string
	var cursor uint64
	for {
		page, next, err := c.ScanType(ctx, cursor, pattern, 100, "stream").Result()
		if err != nil {
			return nil, fmt.Errorf("scan for streams %s: %w", pattern, err)
		}
		keys = append(keys, page...)
		if cursor = next; cursor == 0 {
			slices.Sort(keys)
			return slices.Compact(keys), nil // SCAN may return a key twice
		}
	}
}

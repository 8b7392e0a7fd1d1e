package main

import (
	"flag"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
	"github.com/outbox-relay/outbox-relay/sinks/nats"
	"github.com/outbox-relay/outbox-relay/sinks/rabbitmq"
	"github.com/outbox-relay/outbox-relay/sinks/redis"
)

// The flags of the brokers other than Kafka: --nats-*, --rabbitmq-*,
// --redis-*. Each
// secret has a -file twin (secrets.go); TLS files are read by the sinks.

// bindNATS binds the flags of --sink=nats.
func bindNATS(fs *flag.FlagSet, c *Config) {
	n := &c.NATS
	fs.StringVar(&n.URL, "nats-url", nats.DefaultURL, "NATS servers, comma-separated nats://host:port (tls:// for TLS); may carry user:password@, never logged")
	fs.StringVar(&n.Subject, "nats-subject", nats.DefaultSubject, "subject template; {aggregate_type}, {event_type} and {aggregate_id} are replaced by the event's values")
	fs.StringVar(&n.Stream, "nats-stream", nats.DefaultStream, "JetStream stream of the events, made by setup and at start when missing (never changed when it exists)")
	fs.StringVar(&n.DeadLetterSubject, "nats-dlq-subject", nats.DefaultDeadLetterSubject, "subject of the dead letters under --poison-policy=dlq")
	fs.StringVar(&n.DeadLetterStream, "nats-dlq-stream", nats.DefaultDeadLetterStream, "JetStream stream of the dead letters")
	fs.DurationVar(&n.DuplicateWindow, "nats-duplicate-window", nats.DefaultDuplicateWindow, "duplicate window of the streams setup makes: JetStream drops a re-sent event (same Nats-Msg-Id, the event id) within it; must outlast a relay restart")
	fs.IntVar(&n.Replicas, "nats-replicas", nats.DefaultReplicas, "replicas of the streams setup makes (1 to 5)")
	fs.IntVar(&n.MaxMessageBytes, "nats-max-message-bytes", nats.DefaultMaxMessageBytes, "largest message (payload and headers); larger events are poison; keep it at or below the servers' max_payload")
	fs.DurationVar(&n.AckTimeout, "nats-ack-timeout", nats.DefaultAckTimeout, "how long a message waits for the stream's acknowledgement before it is sent again")
	fs.StringVar(&n.Auth.Username, "nats-user", "", "NATS user, with --nats-password")
	fs.StringVar(&n.Auth.Password, "nats-password", "", "NATS password; prefer --nats-password-file")
	fs.StringVar(&c.natsPasswordFile, "nats-password-file", "", "file holding the NATS password, instead of --nats-password")
	fs.StringVar(&n.Auth.Token, "nats-token", "", "NATS token; prefer --nats-token-file")
	fs.StringVar(&c.natsTokenFile, "nats-token-file", "", "file holding the NATS token, instead of --nats-token")
	fs.StringVar(&c.natsCredsFile, "nats-creds-file", "", "NATS credentials file (user JWT and nkey seed) of a decentralized account")
	t := &n.TLS
	fs.BoolVar(&t.Enable, "nats-tls", false, "connect to NATS with TLS (also implied by a tls:// URL)")
	bindTLSFiles(fs, "nats", "the servers' certificates", "each server's host", &t.TLSFiles)
}

// defaultRedisURL is --redis-url's default: a server on this host. The
// sink itself has no default URL: an empty one is an error.
const defaultRedisURL = "redis://127.0.0.1:6379/0"

// bindRedis binds the flags of --sink=redis.
func bindRedis(fs *flag.FlagSet, c *Config) {
	r := &c.Redis
	fs.StringVar(&r.URL, "redis-url", defaultRedisURL, "Redis server, redis://[user[:password]@]host[:port][/db] (rediss:// for TLS); the password is never logged")
	fs.StringVar(&r.Stream, "redis-stream", redis.DefaultStream, "stream key template; {aggregate_type}, {event_type} and {aggregate_id} are replaced by the event's values")
	fs.StringVar(&r.DeadLetterStream, "redis-dlq-stream", redis.DefaultDeadLetterStream, "stream of the dead letters under --poison-policy=dlq")
	fs.Int64Var(&r.MaxLen, "redis-maxlen", 0, "trim each event stream to about this many entries (XADD MAXLEN ~); 0 never trims; trimmed entries are gone even if no consumer read them")
	fs.IntVar(&r.MaxMessageBytes, "redis-max-message-bytes", redis.DefaultMaxMessageBytes, "largest entry (payload and fields); larger events are poison")
	fs.StringVar(&r.Username, "redis-user", "", "Redis ACL user; empty means the URL's, or the default user")
	fs.StringVar(&r.Password, "redis-password", "", "Redis password, instead of the URL's; prefer --redis-password-file")
	fs.StringVar(&c.redisPasswordFile, "redis-password-file", "", "file holding the Redis password, instead of --redis-password")
	t := &r.TLS
	bindTLSFiles(fs, "redis", "the server's certificate (rediss:// URLs)", "the URL's host", t)
}

// defaultRabbitMQURL is --rabbitmq-url's default: a server on this host.
const defaultRabbitMQURL = "amqp://127.0.0.1:5672/"

// bindRabbitMQ binds the flags of --sink=rabbitmq.
func bindRabbitMQ(fs *flag.FlagSet, c *Config) {
	r := &c.RabbitMQ
	fs.StringVar(&r.URL, "rabbitmq-url", defaultRabbitMQURL, "RabbitMQ server, amqp://[user[:password]@]host[:port]/[vhost] (amqps:// for TLS); the password is never logged")
	fs.StringVar(&r.Exchange, "rabbitmq-exchange", rabbitmq.DefaultExchange, "exchange template; {aggregate_type} and {event_type} are replaced by the event's values; setup declares it when it has none")
	fs.StringVar(&r.ExchangeType, "rabbitmq-exchange-type", rabbitmq.DefaultExchangeType, "type setup declares the exchange with: topic, direct, fanout, headers or a plugin's (x-consistent-hash hashes the aggregate_id header)")
	fs.StringVar(&r.RoutingKey, "rabbitmq-routing-key", rabbitmq.DefaultRoutingKey, "routing key template; {aggregate_type}, {event_type} and {aggregate_id} are replaced by the event's values")
	fs.StringVar(&r.DeadLetterQueue, "rabbitmq-dlq-queue", rabbitmq.DefaultDeadLetterQueue, "queue of the dead letters under --poison-policy=dlq, published through the default exchange; setup declares it")
	fs.StringVar(&r.DeadLetterQueueType, "rabbitmq-dlq-queue-type", rabbitmq.DefaultDeadLetterQueueType, "type setup declares the dead-letter queue with: classic or quorum")
	fs.IntVar(&r.MaxMessageBytes, "rabbitmq-max-message-bytes", rabbitmq.DefaultMaxMessageBytes, "largest message (body and headers); larger events are poison; keep it at or below the server's max_message_size")
	fs.DurationVar(&r.UnroutableGrace, "rabbitmq-unroutable-grace", rabbitmq.DefaultUnroutableGrace, "how long an event no queue is bound for is sent again before it is poison (its aggregate waits meanwhile); negative makes the first return poison")
	fs.StringVar(&r.Username, "rabbitmq-user", "", "RabbitMQ user, instead of the URL's")
	fs.StringVar(&r.Password, "rabbitmq-password", "", "RabbitMQ password, instead of the URL's; prefer --rabbitmq-password-file")
	fs.StringVar(&c.rabbitmqPasswordFile, "rabbitmq-password-file", "", "file holding the RabbitMQ password, instead of --rabbitmq-password")
	t := &r.TLS
	bindTLSFiles(fs, "rabbitmq", "the server's certificate (amqps:// URLs)", "the URL's host", t)
}

// bindTLSFiles binds --<broker>-tls-ca-file, -cert-file, -key-file,
// -server-name and -insecure-skip-verify to t; certs names what the CAs
// sign, and host what the certificate must name by default.
func bindTLSFiles(fs *flag.FlagSet, broker, certs, host string, t *delivery.TLSFiles) {
	fs.StringVar(&t.CAFile, broker+"-tls-ca-file", "", "PEM file of the CAs that sign "+certs+"; empty trusts the system's")
	fs.StringVar(&t.CertFile, broker+"-tls-cert-file", "", "PEM client certificate, for servers that require one (mutual TLS)")
	fs.StringVar(&t.KeyFile, broker+"-tls-key-file", "", "PEM private key of --"+broker+"-tls-cert-file")
	fs.StringVar(&t.ServerName, broker+"-tls-server-name", "", "host name the certificate must hold; empty means "+host)
	fs.BoolVar(&t.InsecureSkipVerify, broker+"-tls-insecure-skip-verify", false, "accept any server certificate (tests only: anyone on the path can read and change the traffic)")
}

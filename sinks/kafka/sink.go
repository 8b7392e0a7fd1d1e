package kafka

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"
	"github.com/twmb/franz-go/plugin/kslog"

	"github.com/outbox-relay/outbox-relay/schema"
)

// Sink publishes events to Kafka through one franz-go producer; it
// implements relay.Sink. Create it with New, and Close it when done.
// Publish, Flush, Ping and Close are safe for concurrent use.
//
// Each record is keyed by the event's aggregate ID and goes to partition
// toPositive(murmur2(key)) % partitions (franz-go's StickyKeyPartitioner
// with its default hasher), the partition the Java client's default
// partitioner picks for the same key, so JVM producers and consumers that
// rely on it agree with the relay. Adding partitions to a topic moves keys.
//
// The producer is idempotent with acks=all and retries retriable errors
// without limit, so records of one partition are written in Publish order,
// once each, however often a request is retried. Delivery is at least
// once: an event published again after a restart is a new record.
type Sink struct {
	client   *kgo.Client
	brokers  []string
	mapper   *mapper
	metrics  *metrics
	inflight inflight
	dlqTopic string
}

// New returns a Sink for cfg. It starts the client's background goroutines,
// which Close stops, but dials no broker: the first Publish or Ping does.
// logger receives franz-go's logs under component=kafka; nil discards them.
// The Sink's metrics and franz-go's (outbox_relay_kafka_*) are registered
// with reg and unregistered by Close; nil reg registers nothing. New fails
// if cfg is not valid or reg holds the metrics of another open Sink.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	tmpl, err := parseTopicTemplate(cfg.Topic)
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err) // unreachable after Validate
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "kafka")
	// franz-go logs every connection, metadata refresh and flush at info:
	// below debug, only its warnings and errors reach the relay's log.
	if !logger.Enabled(context.Background(), slog.LevelDebug) {
		logger = slog.New(minLevel{Handler: logger.Handler(), min: slog.LevelWarn})
	}

	opts := append(cfg.opts(), kgo.WithLogger(kslog.New(logger)))
	metricsReg := reg
	if reg == nil {
		// Nothing reads this registry; it only keeps the counters
		// working the same way.
		metricsReg = prometheus.NewRegistry()
	} else {
		opts = append(opts, kgo.WithHooks(kprom.NewMetrics("outbox_relay",
			kprom.Subsystem("kafka"), kprom.Registerer(reg))))
	}
	m, err := newMetrics(metricsReg)
	if err != nil {
		return nil, err
	}
	client, err := kgo.NewClient(opts...)
	if err != nil {
		m.unregister()
		return nil, fmt.Errorf("create kafka client for brokers %s: %w", strings.Join(cfg.Brokers, ","), err)
	}
	return &Sink{
		client:   client,
		brokers:  cfg.Brokers,
		mapper:   &mapper{topics: newTopicCache(tmpl, m), maxBytes: cfg.MaxMessageBytes},
		metrics:  m,
		dlqTopic: cfg.DeadLetterTopic,
	}, nil
}

// Publish produces ev's record and returns without waiting for Kafka. It
// calls done exactly once: with nil when all in-sync replicas have the
// record, or with an error. It blocks only while the client buffers its
// maximum of 50,000 records, until there is room or ctx ends.
//
// An event that cannot become a record (see RecordError) is not produced:
// done gets the *RecordError before Publish returns, which may be before
// done of earlier events with the same key. Otherwise done is called in
// Publish order for events with the same key and topic, from a franz-go
// goroutine that calls every done in turn: done must be quick and must not
// call Publish, Flush or Close.
//
// ctx also travels with the record: once it ends, franz-go fails the record
// if no request carries it yet (and the later buffered records of its
// partition, to keep order). Pass a context that outlives draining.
func (s *Sink) Publish(ctx context.Context, ev *schema.Event, done func(error)) {
	start := time.Now()
	rec, t, err := s.mapper.record(ev)
	if err != nil {
		done(err)
		return
	}
	id := ev.ID
	s.inflight.add()
	s.client.Produce(ctx, rec, func(r *kgo.Record, err error) {
		if err != nil {
			err = fmt.Errorf("produce event %s to topic %q: %w", id, t.name, err)
		} else {
			t.published.Inc()
			t.bytes.Add(float64(len(r.Value)))
			s.metrics.duration.Observe(time.Since(start).Seconds())
		}
		done(err)
		s.inflight.remove()
	})
}

// Flush sends buffered records at once, ignoring Linger, and blocks until
// every published event has had its done called, or ctx ends; then it
// returns ctx's error, wrapped. Events published while Flush waits delay
// it. Events that failed do not make Flush fail: their done got the error.
func (s *Sink) Flush(ctx context.Context) error {
	if err := s.client.Flush(ctx); err != nil {
		return fmt.Errorf("flush %d buffered kafka records: %w", s.client.BufferedProduceRecords(), err)
	}
	// franz-go's Flush waits for buffered records; this also covers those
	// failed before they were buffered, whose done may still be queued.
	if err := s.inflight.wait(ctx); err != nil {
		return fmt.Errorf("wait for %d kafka acknowledgements: %w", s.inflight.len(), err)
	}
	return nil
}

// Ping checks that a broker answers a metadata request, trying each known
// broker once; it blocks until one answers, all have failed, or ctx ends.
// Give ctx a deadline: franz-go gives up on a broker that drops packets or
// never answers only after about 10s. The error names the seed brokers.
func (s *Sink) Ping(ctx context.Context) error {
	err := s.client.Ping(ctx)
	var certErr *tls.CertificateVerificationError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, kerr.SaslAuthenticationFailed):
		return fmt.Errorf("kafka brokers %s rejected the SASL credentials; check the mechanism, username, password or token: %w",
			strings.Join(s.brokers, ","), err)
	case errors.As(err, &certErr):
		return fmt.Errorf("kafka brokers %s presented a certificate this relay does not trust; set the CA file, or the TLS server name: %w",
			strings.Join(s.brokers, ","), err)
	}
	if err != nil {
		return fmt.Errorf("no kafka broker answered (seed brokers %s); check that they are running and reachable from this host on the listed host:port, and that the addresses they advertise resolve here: %w",
			strings.Join(s.brokers, ","), err)
	}
	return nil
}

// Close closes the client and unregisters the Sink's metrics. Records not
// yet acknowledged fail, their done getting an error that wraps
// kgo.ErrClientClosed, and Close returns once every done has been called;
// Flush first to deliver them. Publish after Close fails the same way.
func (s *Sink) Close() {
	s.client.Close()
	_ = s.inflight.wait(context.Background()) // the client failed every record; their done calls are queued
	s.metrics.unregister()
}

// inflight counts records whose done has not been called.
type inflight struct {
	mu   sync.Mutex
	n    int
	zero chan struct{} // closed when n drops to 0; nil while n is 0
}

func (f *inflight) add() {
	f.mu.Lock()
	if f.n == 0 {
		f.zero = make(chan struct{})
	}
	f.n++
	f.mu.Unlock()
}

func (f *inflight) remove() {
	f.mu.Lock()
	f.n--
	if f.n == 0 {
		close(f.zero)
		f.zero = nil
	}
	f.mu.Unlock()
}

func (f *inflight) len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

// wait blocks until n is 0 or ctx ends.
func (f *inflight) wait(ctx context.Context) error {
	f.mu.Lock()
	zero := f.zero
	f.mu.Unlock()
	if zero == nil {
		return nil
	}
	select {
	case <-zero:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

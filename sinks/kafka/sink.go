package kafka

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
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
//
// A batch the broker refuses for good (too large, invalid, against a
// policy) fails every record buffered for its partition: the Sink sends
// those records again one at a time, so that done reports an error only for
// an event that is itself refused. A topic the broker refuses (not
// authorized, unknown) holds its events and is retried with backoff: it is
// an outage, never an event's fault. See isolate.go.
//
// With Config.TransactionalID set, the Sink is in exactly-once mode instead:
// see BeginTxn, CommitTxn, ReadFence and txn.go.
type Sink struct {
	client   *kgo.Client
	alone    *kgo.Client // one record per batch, for records sent alone
	brokers  []string
	mapper   *mapper
	metrics  *metrics
	log      *slog.Logger
	inflight inflight
	dlqTopic string
	isolate  queue         // records sent alone, then events published meanwhile
	letters  queue         // dead letters, in the order DeadLetter was called
	closing  chan struct{} // closed by Close
	halted   atomic.Pointer[error]
	txn      *txnState // nil in at-least-once mode; see txn.go
}

// ErrHalted wraps the error done gets for an event the Sink did not send
// because Halt was called.
var ErrHalted = errors.New("kafka sink halted")

// Halt makes the Sink fail, instead of sending, every event it has not yet
// handed to the client: those Publish gets from now on and those waiting to
// be sent alone. Records the client already buffers are sent as usual; a
// partition's records after one the broker refused are among those waiting.
// The relay calls it when it stops on a failed event; Halt is safe from any
// goroutine, done callbacks included, and later calls keep the first cause.
func (s *Sink) Halt(cause error) {
	err := fmt.Errorf("%w after an earlier event failed: %w", ErrHalted, cause)
	s.halted.CompareAndSwap(nil, &err)
}

// haltedErr returns the error of a halted Sink, or nil.
func (s *Sink) haltedErr() error {
	if p := s.halted.Load(); p != nil {
		return *p
	}
	return nil
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
	s := &Sink{brokers: cfg.Brokers, log: logger, dlqTopic: cfg.DeadLetterTopic, closing: make(chan struct{})}
	s.isolate.idle.Store(true)
	m, err := newMetrics(metricsReg, s.isolate.len)
	if err != nil {
		return nil, err
	}
	if cfg.TransactionalID != "" {
		tm, err := newTxnMetrics(metricsReg)
		if err != nil {
			m.unregister()
			return nil, err
		}
		s.txn = newTxnState(cfg, tm)
		opts = append(opts, append(cfg.txnOpts(), kgo.WithHooks(s.txn))...)
	}
	client, err := kgo.NewClient(opts...)
	if err != nil {
		m.unregister()
		if s.txn != nil {
			s.txn.metrics.unregister()
		}
		return nil, fmt.Errorf("create kafka client for brokers %s: %w", strings.Join(cfg.Brokers, ","), err)
	}
	// With one record buffered at a time, every batch holds one record;
	// it waits for no other, so it does not linger.
	alone, err := kgo.NewClient(append(cfg.opts(), kgo.WithLogger(kslog.New(logger)),
		kgo.MaxBufferedRecords(1), kgo.ProducerLinger(0), kgo.ClientID(cfg.ClientID+"-alone"))...)
	if err != nil {
		client.Close()
		m.unregister()
		if s.txn != nil {
			s.txn.metrics.unregister()
		}
		return nil, fmt.Errorf("create kafka client for brokers %s: %w", strings.Join(cfg.Brokers, ","), err)
	}
	s.client, s.alone, s.metrics = client, alone, m
	s.mapper = &mapper{topics: newTopicCache(tmpl, m), maxBytes: cfg.MaxMessageBytes}
	return s, nil
}

// Publish produces ev's record and returns without waiting for Kafka. It
// calls done exactly once: with nil when all in-sync replicas have the
// record, or with an error. It blocks only while the client buffers
// Config.MaxBufferedRecords records, until there is room or ctx ends: keep
// the caller's own in-flight bound below it.
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
	f, ok := s.prepare(ev, done)
	if !ok {
		return
	}
	f.ctx, f.id, f.start, f.done = ctx, ev.ID, start, done
	// The record's timestamp, which franz-go would otherwise read the
	// clock for again.
	f.rec.Timestamp = start
	s.inflight.add()
	// While records wait to be sent alone, events queue behind them. (The
	// idle check first spares the closure on the hot path.)
	if s.txn == nil && !s.isolate.idle.Load() && s.isolate.addIfBusy(func() { s.sendAlone(f) }) {
		return
	}
	s.client.Produce(ctx, &f.rec, f.promise)
}

// produceErr wraps the error franz-go gave the record of event id.
func (s *Sink) produceErr(id, topic string, err error) error {
	if s.txn != nil {
		return s.txn.recordErr(id, topic, err)
	}
	return fmt.Errorf("produce event %s to topic %q: %w", id, topic, err)
}

// prepare maps ev to its record in a flight, or calls done with why it is
// not sent: the Sink halted or, in exactly-once mode, can start no
// transaction, or the event cannot become a record (a *RecordError).
func (s *Sink) prepare(ev *schema.Event, done func(error)) (*flight, bool) {
	err := s.haltedErr()
	if err == nil && s.txn != nil {
		err = s.txn.usable()
	}
	if err != nil {
		done(fmt.Errorf("event %s not sent: %w", ev.ID, err))
		return nil, false
	}
	f := s.newFlight()
	if f.topic, err = s.mapper.fill(&f.rec, &f.buf, ev); err != nil {
		f.release()
		done(err)
		return nil, false
	}
	return f, true
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
	// failed before they were buffered, whose done may still be queued,
	// and those being sent alone. Records produced meanwhile, such as dead
	// letters of events refused alone, are flushed too instead of
	// lingering.
	for {
		wctx, cancel := context.WithTimeout(ctx, flushRecheck)
		err := s.inflight.wait(wctx)
		cancel()
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return fmt.Errorf("wait for %d kafka acknowledgements: %w", s.inflight.len(), ctx.Err())
		}
		if err := s.client.Flush(ctx); err != nil {
			return fmt.Errorf("flush %d buffered kafka records: %w", s.client.BufferedProduceRecords(), err)
		}
	}
}

// flushRecheck is how often Flush flushes again while it waits.
const flushRecheck = 20 * time.Millisecond

// Ping checks that a broker answers a metadata request, trying each known
// broker once; it blocks until one answers, all have failed, or ctx ends.
// Give ctx a deadline: franz-go gives up on a broker that drops packets or
// never answers only after about 10s. The error names the seed brokers.
func (s *Sink) Ping(ctx context.Context) error {
	return pingError(s.brokers, s.client.Ping(ctx))
}

// pingError is err, from a request to brokers, saying what to check.
func pingError(brokers []string, err error) error {
	var certErr *tls.CertificateVerificationError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, kerr.SaslAuthenticationFailed):
		return fmt.Errorf("kafka brokers %s rejected the SASL credentials; check the mechanism, username, password or token: %w",
			strings.Join(brokers, ","), err)
	case errors.As(err, &certErr):
		return fmt.Errorf("kafka brokers %s presented a certificate this relay does not trust; set the CA file, or the TLS server name: %w",
			strings.Join(brokers, ","), err)
	}
	return fmt.Errorf("no kafka broker answered (seed brokers %s); check that they are running and reachable from this host on the listed host:port, and that the addresses they advertise resolve here: %w",
		strings.Join(brokers, ","), err)
}

// Close closes the client and unregisters the Sink's metrics. Records not
// yet acknowledged fail, their done getting an error that wraps
// kgo.ErrClientClosed, and Close returns once every done has been called;
// Flush first to deliver them. Publish after Close fails the same way.
func (s *Sink) Close() {
	close(s.closing)
	s.client.Close()
	s.alone.Close()
	_ = s.inflight.wait(context.Background()) // the clients failed every record; their done calls are queued
	s.isolate.wait()
	s.letters.wait()
	s.metrics.unregister()
	if s.txn != nil {
		s.txn.metrics.unregister()
	}
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

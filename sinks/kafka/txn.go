package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Exactly-once mode (Config.TransactionalID set). The Sink's producer is
// transactional; the caller brackets events with BeginTxn and CommitTxn,
// and CommitTxn writes the fence (the end LSN of the last PostgreSQL
// transaction the Kafka transaction holds) to CheckpointTopic inside the
// same Kafka transaction. A read_committed consumer sees every event of a
// committed Kafka transaction, and the fence with them, or none of them.
//
// In this mode done(nil) means the broker holds the record in the open
// transaction: it is neither durable nor visible to read_committed
// consumers until CommitTxn returns nil. Records the broker refuses are
// not sent again one at a time (isolate.go): any failure dooms the whole
// transaction, whose done errors wrap ErrTxnAborted (or ErrFenced), and
// which CommitTxn then aborts. Dead letters go into the open transaction.

// ErrTxnAborted wraps the error of CommitTxn when the Kafka transaction
// did not commit and never will: none of its records nor its fence is
// visible to read_committed consumers. It also wraps done's error for an
// event whose record failed in a transaction, which dooms it. The caller
// resends from the last committed fence (ReadFence).
var ErrTxnAborted = errors.New("kafka transaction aborted")

// ErrCommitUnknown wraps the error of CommitTxn when the commit request was
// sent but its outcome is unknown (a broken connection, a timeout): the
// transaction may have committed. The Sink has aborted whatever was still
// open; ReadFence tells which fence is committed.
var ErrCommitUnknown = errors.New("kafka transaction commit outcome unknown")

// ErrFenced wraps the errors of a Sink whose transactional ID another
// producer (a second relay on the same slot) has taken over. The broker
// aborted this Sink's open transaction; the Sink refuses every later call,
// and the relay must stop: the other one carries on.
var ErrFenced = errors.New("kafka producer fenced")

// errNotTransactional is returned by the transaction methods of a Sink in
// at-least-once mode.
var errNotTransactional = errors.New("kafka sink is not transactional; set a transactional ID for exactly-once mode")

// fenced reports whether err is the broker's refusal of an older epoch of
// the transactional ID: PRODUCER_FENCED (InitProducerID, AddPartitionsToTxn,
// EndTxn) or INVALID_PRODUCER_EPOCH (Produce). See kfake_test.go.
func fenced(err error) bool {
	return errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch)
}

// txnState is the transaction state of a Sink in exactly-once mode.
type txnState struct {
	id      string
	key     []byte // the fence record's key
	metrics *txnMetrics

	mu     sync.Mutex
	open   bool
	failed error // the first record failure of the open transaction
	fence  error // non-nil once fenced, for good
	broken error // non-nil once CommitTxn failed, for good
}

func newTxnState(cfg Config, m *txnMetrics) *txnState {
	return &txnState{id: cfg.TransactionalID, key: []byte(cfg.CheckpointKey), metrics: m}
}

// setFenced records that the transactional ID was taken over, and returns
// the error every later call gets.
func (t *txnState) setFenced(cause error) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.fence == nil {
		t.fence = fmt.Errorf("another relay with transactional ID %q took over (%v); this one stops: %w", t.id, cause, ErrFenced)
	}
	t.open = false
	return t.fence
}

// usable returns why the Sink can start no transaction: it was fenced, or
// a CommitTxn failed; or nil.
func (t *txnState) usable() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.fence != nil {
		return t.fence
	}
	if t.broken != nil {
		return fmt.Errorf("a kafka transaction of %q failed earlier; close this Sink, make a new one and resume from its ReadFence: %w", t.id, t.broken)
	}
	return nil
}

// breaks records that CommitTxn failed with err, and returns err.
func (t *txnState) breaks(err error) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.open = false
	if t.broken == nil {
		t.broken = err
	}
	return err
}

// OnProduceRecordUnbuffered implements kgo.HookProduceRecordUnbuffered: a
// record that fails, whichever path produced it (event, dead letter,
// fence), dooms the open transaction.
func (t *txnState) OnProduceRecordUnbuffered(r *kgo.Record, err error) {
	if err == nil {
		return
	}
	t.mu.Lock()
	if t.failed == nil {
		t.failed = fmt.Errorf("record to topic %q failed: %w", r.Topic, err)
	}
	t.mu.Unlock()
}

// failure returns the first record failure of the open transaction.
func (t *txnState) failure() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failed
}

// recordErr returns the error done gets for a record that failed in a
// transaction. The cause is kept as text only, so that Poison never takes
// the transaction's failure for the event's: the whole transaction is
// resent.
func (t *txnState) recordErr(id, topic string, err error) error {
	if fenced(err) {
		return fmt.Errorf("produce event %s to topic %q: %w", id, topic, t.setFenced(err))
	}
	return fmt.Errorf("produce event %s to topic %q in transaction %q: %v: %w", id, topic, t.id, err, ErrTxnAborted)
}

// txnState returns the Sink's transaction state and whether a transaction
// is open, or why no transaction call may be made: the Sink is not
// transactional, was fenced, or a commit failed.
func (s *Sink) txnState() (*txnState, bool, error) {
	t := s.txn
	if t == nil {
		return nil, false, errNotTransactional
	}
	if err := t.usable(); err != nil {
		return nil, false, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t, t.open, nil
}

// BeginTxn opens a Kafka transaction; Publish and DeadLetter then produce
// into it until CommitTxn. The relay calls it before the first event of a
// PostgreSQL transaction when no Kafka transaction is open, from the
// goroutine that calls Publish, never concurrently with Publish, ReadFence
// or CommitTxn. It contacts no broker. It fails if a transaction is open,
// if the Sink is not transactional, or with an error wrapping ErrFenced.
func (s *Sink) BeginTxn() error {
	t, open, err := s.txnState()
	if err != nil {
		return err
	}
	if open {
		return fmt.Errorf("begin kafka transaction %q: one is already open; commit it first", t.id)
	}
	if err := s.client.BeginTransaction(); err != nil {
		if fenced(err) {
			return t.setFenced(err)
		}
		return fmt.Errorf("begin kafka transaction %q: %w", t.id, err)
	}
	t.mu.Lock()
	t.open, t.failed = true, nil
	t.mu.Unlock()
	return nil
}

// CommitTxn commits the open Kafka transaction with fence, the end LSN of
// the last PostgreSQL transaction it holds (the end relay.Relay.Commit
// gets). It waits for every event and dead letter published into the
// transaction, produces the fence record to CheckpointTopic, and ends the
// transaction with a commit; it blocks until then or ctx ends. Give ctx a
// deadline, but do not cancel it otherwise: an ended context may leave the
// commit's outcome unknown.
//
// On nil, every record of the transaction and the fence are durable and
// visible to read_committed consumers, and the relay may confirm fence to
// PostgreSQL. Otherwise it returns an error wrapping ErrTxnAborted (nothing
// committed; the Sink aborted the transaction), ErrCommitUnknown (it may
// have committed) or ErrFenced (the Sink is done). After any error the
// Sink starts no more transactions (franz-go may hold its producer ID
// failed): BeginTxn, ReadFence and Publish fail with an error wrapping the
// first. To go on after ErrTxnAborted or ErrCommitUnknown, Close the Sink,
// make a new one, and resend from its ReadFence. Call CommitTxn from the
// goroutine that calls Publish, never concurrently with it.
func (s *Sink) CommitTxn(ctx context.Context, fence pglogrepl.LSN) error {
	t, open, err := s.txnState()
	if err != nil {
		return err
	}
	if !open {
		return fmt.Errorf("commit kafka transaction %q with fence %s: no transaction is open; call BeginTxn first", t.id, fence)
	}
	start := time.Now()
	if err := s.Flush(ctx); err != nil {
		return s.abortTxn(ctx, fence, err)
	}
	if err := t.failure(); err != nil {
		return s.abortTxn(ctx, fence, err)
	}
	rec := &kgo.Record{Topic: CheckpointTopic, Key: t.key, Value: encodeFence(fence)}
	if err := s.client.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return s.abortTxn(ctx, fence, fmt.Errorf("produce the fence to topic %q: %w", CheckpointTopic, err))
	}
	err = s.client.EndTransaction(ctx, kgo.TryCommit)
	var ke *kerr.Error
	switch {
	case err == nil:
		t.mu.Lock()
		t.open = false
		t.mu.Unlock()
		t.metrics.committed.Inc()
		t.metrics.commitDuration.Observe(time.Since(start).Seconds())
		t.metrics.fence.Set(float64(fence))
		return nil
	case fenced(err):
		t.metrics.aborted.Inc()
		return fmt.Errorf("commit kafka transaction with fence %s: %w", fence, t.setFenced(err))
	case errors.Is(err, kerr.OperationNotAttempted), errors.As(err, &ke) && !ke.Retriable && ke.Code != kerr.UnknownServerError.Code:
		// The client did not send the commit, or the broker refused
		// it for good.
		return s.abortTxn(ctx, fence, fmt.Errorf("commit: %w", err))
	}
	// Sent, but unconfirmed: franz-go's documented recovery is an
	// abort, which bumps the epoch and aborts whatever is still open.
	abortErr := s.client.EndTransaction(ctx, kgo.TryAbort)
	t.metrics.aborted.Inc()
	if abortErr != nil && fenced(abortErr) {
		return fmt.Errorf("commit kafka transaction with fence %s: %w", fence, t.setFenced(abortErr))
	}
	return t.breaks(fmt.Errorf("commit kafka transaction %q with fence %s: %w (abort after it: %v); read the fence to learn whether it committed: %w",
		t.id, fence, err, abortErr, ErrCommitUnknown))
}

// abortTxn aborts the open transaction, whose commit was never sent, for
// cause, and returns the error CommitTxn reports.
func (s *Sink) abortTxn(ctx context.Context, fence pglogrepl.LSN, cause error) error {
	t := s.txn
	t.metrics.aborted.Inc()
	if fenced(cause) {
		// The broker aborted the transaction when the other producer
		// took over; an abort from this one would be refused.
		return fmt.Errorf("kafka transaction with fence %s: %w", fence, t.setFenced(cause))
	}
	// Fail what is still buffered, then end the transaction.
	var errs []error
	if err := s.client.AbortBufferedRecords(ctx); err != nil {
		errs = append(errs, fmt.Errorf("abort buffered records: %w", err))
	}
	if err := s.client.EndTransaction(ctx, kgo.TryAbort); err != nil {
		if fenced(err) {
			return fmt.Errorf("kafka transaction with fence %s: %w", fence, t.setFenced(err))
		}
		// Never committed: the broker aborts it on its timeout, or
		// when the transactional ID is next initialized.
		errs = append(errs, fmt.Errorf("abort: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		cause = fmt.Errorf("%w (then %v)", cause, err)
	}
	return t.breaks(fmt.Errorf("kafka transaction %q with fence %s: %w; nothing of it is visible to read_committed consumers: %w", t.id, fence, cause, ErrTxnAborted))
}

// txnMetrics are the series of exactly-once mode, registered only in it,
// so that at-least-once mode exposes what it always did.
type txnMetrics struct {
	reg            prometheus.Registerer
	committed      prometheus.Counter
	aborted        prometheus.Counter
	commitDuration prometheus.Histogram
	fence          prometheus.Gauge
}

func newTxnMetrics(reg prometheus.Registerer) (*txnMetrics, error) {
	m := &txnMetrics{
		reg: reg,
		committed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_relay_kafka_transactions_committed_total",
			Help: "Kafka transactions committed, each with its fence.",
		}),
		aborted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_relay_kafka_transactions_aborted_total",
			Help: "Kafka transactions that did not commit (aborted, fenced, or with an unknown outcome).",
		}),
		commitDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "outbox_relay_kafka_transaction_commit_duration_seconds",
			Help:    "Time CommitTxn took for committed transactions: the flush, the fence record and EndTxn.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		fence: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_relay_kafka_fence_lsn",
			Help: "The last committed fence: the end LSN of the last PostgreSQL transaction in Kafka, as a number.",
		}),
	}
	for i, c := range m.collectors() {
		if err := reg.Register(c); err != nil {
			for _, done := range m.collectors()[:i] {
				reg.Unregister(done)
			}
			return nil, fmt.Errorf("register kafka transaction metrics: %w", err)
		}
	}
	return m, nil
}

func (m *txnMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.committed, m.aborted, m.commitDuration, m.fence}
}

func (m *txnMetrics) unregister() {
	for _, c := range m.collectors() {
		m.reg.Unregister(c)
	}
}

// txnOpts returns the franz-go options of exactly-once mode for c, which
// has its defaults; none in at-least-once mode.
func (c Config) txnOpts() []kgo.Opt {
	if c.TransactionalID == "" {
		return nil
	}
	return []kgo.Opt{kgo.TransactionalID(c.TransactionalID), kgo.TransactionTimeout(c.TransactionTimeout)}
}

// AbortTxn aborts the open Kafka transaction, if any, so that
// read_committed consumers need not wait for the broker's transaction
// timeout. The relay calls it when it stops inside a PostgreSQL
// transaction, whose events must not commit. It returns nil when no
// transaction is open; otherwise the Sink, as after a failed CommitTxn,
// starts no more transactions. Call it from the goroutine that calls
// Publish.
func (s *Sink) AbortTxn(ctx context.Context) error {
	t := s.txn
	if t == nil {
		return errNotTransactional
	}
	t.mu.Lock()
	open := t.open
	t.mu.Unlock()
	if !open {
		return nil
	}
	err := s.abortTxn(ctx, 0, errors.New("the relay stopped inside a PostgreSQL transaction"))
	if errors.Is(err, ErrTxnAborted) {
		return nil // what was asked
	}
	return err
}

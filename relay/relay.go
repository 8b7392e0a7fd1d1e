package relay

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outbox-relay/outbox-relay/schema"
)

// Relay hands the events of committed transactions to a Sink in commit order
// and tracks which position may be confirmed. Begin, Insert, Commit,
// Keepalive and Room are called by the stream's goroutine only; Flushed,
// Drain and Run are safe from any goroutine; Sink acknowledgements may
// arrive on any goroutine.
type Relay struct {
	cfg    Config
	sink   Sink
	halter Halter       // sink as a Halter, or nil
	dl     DeadLetterer // sink as a DeadLetterer, or nil
	tx     Transactor   // sink as a Transactor under DeliveryExactlyOnce, or nil
	txMu   sync.Mutex   // see txn.go
	log    *slog.Logger
	m      *metrics

	// Owned by the stream's goroutine.
	seq        uint64
	commitTime time.Time
	replay     replay // row positions, and what a reconnect sends again

	mu             sync.Mutex
	wm             watermark
	stages         stages // served by metrics.histograms
	inflightEvents int
	inflightBytes  int
	err            error
	failed         chan struct{} // closed when err is set
	changed        chan struct{} // signalled when room appears or the relay turns idle
	// Under DeliveryExactlyOnce (txn.go):
	txOpen       bool          // a Sink transaction is open
	txOpened     time.Time     // when it opened
	txCommitTook time.Duration // how long the last commit took
	txEnd        pglogrepl.LSN // end of the last PostgreSQL transaction in it
	committed    pglogrepl.LSN // the last committed fence, or where keepalives moved it
}

// New returns a Relay that publishes to sink. A nil logger discards logs; a
// nil reg registers no metrics.
func New(cfg Config, sink Sink, logger *slog.Logger, reg prometheus.Registerer) (*Relay, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("relay config: %w", err)
	}
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &Relay{
		cfg:     cfg,
		sink:    sink,
		log:     logger.With("component", "relay"),
		failed:  make(chan struct{}),
		changed: make(chan struct{}, 1),
	}
	r.halter, _ = sink.(Halter)
	r.dl, _ = sink.(DeadLetterer)
	if cfg.Delivery == DeliveryExactlyOnce {
		tx, ok := sink.(Transactor)
		if !ok {
			return nil, fmt.Errorf("relay config: delivery %q needs a sink with transactions; %T has none", cfg.Delivery, sink)
		}
		r.tx = tx
	}
	m, err := newMetrics(reg, cfg, r)
	if err != nil {
		return nil, err
	}
	r.m = m
	return r, nil
}

// lagSeconds is how long ago the oldest transaction not yet confirmed
// committed; zero when every transaction is.
func (r *Relay) lagSeconds() float64 {
	r.mu.Lock()
	t := r.wm.oldest()
	r.mu.Unlock()
	if t.IsZero() {
		return 0
	}
	return max(0, time.Since(t).Seconds())
}

// Begin opens the transaction whose commit record is at commitLSN. A
// transaction the Relay has seen before, sent again after the stream
// reconnected, is read past, or resumed after its published rows if it was
// open (replay.go decides which).
func (r *Relay) Begin(commitLSN pglogrepl.LSN, commitTime time.Time) {
	r.mu.Lock()
	open := r.wm.open // a transaction began and did not commit
	v := r.replay.begin(commitLSN, open)
	if v == beginNew {
		r.seq = r.wm.begin()
		r.wm.stamp(r.seq, commitTime)
	}
	r.mu.Unlock()
	switch v {
	case beginNew:
		r.lockTxn()
		r.commitTime = commitTime
	case beginResume:
		r.log.Info("resuming transaction after reconnect", "commit_lsn", commitLSN.String(), "published", r.replay.published)
	case beginLost:
		r.fail(fmt.Errorf("transaction committing at %s was not sent again after a reconnect; the stream went on at %s", r.replay.commitLSN, commitLSN))
	}
}

// fail records err as the Relay's failure unless one is recorded.
func (r *Relay) fail(err error) {
	r.mu.Lock()
	first := r.err == nil
	if first {
		r.err = err
		close(r.failed)
	}
	r.mu.Unlock()
	if first {
		r.halt(err)
	}
}

// halt tells a Halter sink to send nothing more, once the Relay has failed.
func (r *Relay) halt(err error) {
	if r.halter != nil {
		r.halter.Halt(err)
	}
}

// Insert publishes one event of the open transaction, stamping its Position
// and CommitTime. It does not wait for room: callers wait on Room first. It
// returns the Sink's first failure, after which nothing more is published.
func (r *Relay) Insert(ctx context.Context, ev *schema.Event) error {
	if r.replay.relayedBefore() {
		select {
		case <-r.failed:
			r.mu.Lock()
			defer r.mu.Unlock()
			return r.err
		default:
		}
		r.replay.pass()
		r.m.replayed.Inc()
		return nil
	}
	if r.tx != nil {
		if err := r.openTxn(); err != nil {
			r.fail(err)
			return err
		}
	}
	ev.Position = r.replay.next()
	ev.CommitTime = r.commitTime
	size := ev.Size()
	handed := time.Now()

	r.mu.Lock()
	if r.err != nil {
		err := r.err
		r.mu.Unlock()
		return err
	}
	r.wm.add(r.seq)
	r.inflightEvents++
	r.inflightBytes += size
	if !ev.Received.IsZero() {
		r.stages.read(ev, handed)
	}
	r.mu.Unlock()

	// The sink's delivery must outlive a cancelled stream: shutdown drains
	// what is in flight instead of abandoning it.
	if ctx.Done() != nil {
		ctx = context.WithoutCancel(ctx)
	}
	p := newPending()
	p.r, p.ctx, p.seq, p.size, p.ev, p.handed = r, ctx, r.seq, size, *ev, handed
	r.sink.Publish(ctx, ev, p.done)
	return nil
}

// pending is an event between Publish and its acknowledgement. Pendings
// are pooled, each with its done bound once, so that publishing an event
// allocates nothing here; settle returns p to the pool.
type pending struct {
	r      *Relay
	ctx    context.Context
	seq    uint64
	size   int
	ev     schema.Event // a copy: the stream reuses its Event
	handed time.Time    // when it was handed to the Sink
	done   func(error)  // p.ack, the callback handed to the Sink
}

var pendings sync.Pool

// newPending returns a pending from the pool, or a new one.
func newPending() *pending {
	if p, ok := pendings.Get().(*pending); ok {
		return p
	}
	p := new(pending)
	p.done = p.ack
	return p
}

// release returns p to the pool, keeping no reference to its event.
func (p *pending) release() {
	*p = pending{done: p.done}
	pendings.Put(p)
}

// ack takes the Sink's verdict on p. Under PolicyDLQ a poison event goes to
// the dead-letter topic, and counts as acknowledged once it is there.
func (p *pending) ack(err error) {
	if err == nil {
		p.r.settle(p, nil)
		return
	}
	p.r.sinkFailed(p.ctx, p, err)
}

// sinkFailed routes an event the Sink failed: a poison event goes to the
// dead-letter topic under PolicyDLQ, or stops the relay under PolicyHalt
// with a *PoisonError; any other failure stops the relay. Kept apart from
// ack so that the acknowledged path allocates no closure.
func (r *Relay) sinkFailed(ctx context.Context, p *pending, err error) {
	var reason string
	poison := false
	if r.dl != nil {
		reason, poison = r.dl.Poison(err)
	}
	switch {
	case poison && r.cfg.PoisonPolicy == PolicyDLQ:
		r.log.Error("poison event set aside in the dead-letter topic; later events of its aggregate pass it",
			"event_id", p.ev.ID, "aggregate_id", p.ev.AggregateID, "commit_lsn", p.ev.Position.CommitLSN.String(), "reason", reason, "err", err)
		r.dl.DeadLetter(ctx, &p.ev, reason, err, 1, func(dlErr error) {
			if dlErr != nil {
				r.m.deadLetterErrors.Inc()
				dlErr = fmt.Errorf("set poison event aside after %w: %w", err, dlErr)
			}
			r.settle(p, dlErr)
		})
		return
	case poison:
		err = &PoisonError{Reason: reason, Err: err}
	}
	r.settle(p, err)
}

// settle records p as acknowledged, or as the Relay's failure, and releases
// it.
func (r *Relay) settle(p *pending, err error) {
	seq, size, committed, handed, id, pos := p.seq, p.size, p.ev.CommitTime, p.handed, p.ev.ID, p.ev.Position
	p.release()
	var now time.Time
	if err == nil {
		now = time.Now()
	}
	r.mu.Lock()
	wasFull := r.fullLocked()
	r.inflightEvents--
	r.inflightBytes -= size
	halted := false
	if err == nil {
		r.wm.ack(seq)
		r.stages.latency.observe(now.Sub(committed).Seconds())
		r.stages.acknowledge.observe(now.Sub(handed).Seconds())
	} else if r.err == nil {
		r.err = fmt.Errorf("publish event %s (row %d of the transaction committed at %s): %w", id, pos.Index, pos.CommitLSN, err)
		close(r.failed)
		halted = true
	}
	if err != nil {
		r.m.publishErrors.Inc()
	}
	signal := (wasFull && !r.fullLocked()) || r.inflightEvents == 0
	r.mu.Unlock()

	if halted {
		r.halt(err)
	}
	if signal {
		select {
		case r.changed <- struct{}{}:
		default:
		}
	}
}

// Commit closes the open transaction, whose commit record ends at end.
func (r *Relay) Commit(end pglogrepl.LSN) {
	if !r.replay.commit() {
		return
	}
	r.mu.Lock()
	r.wm.commit(r.seq, end)
	r.mu.Unlock()
	r.m.transactions.Inc()
	if r.tx != nil {
		r.commitTxnAt(context.Background(), end)
	}
}

// Keepalive reports that the server has sent everything before walEnd. When
// nothing is in flight the flush position follows it.
func (r *Relay) Keepalive(walEnd pglogrepl.LSN) {
	r.mu.Lock()
	r.wm.follow(walEnd)
	if r.tx != nil {
		r.advanceCommittedLocked()
	}
	r.mu.Unlock()
}

// Room returns nil when another event may be inserted, or else a channel
// that receives when room may have appeared; callers check again after it
// fires.
func (r *Relay) Room() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fullLocked() {
		return r.changed
	}
	return nil
}

func (r *Relay) fullLocked() bool {
	if r.inflightEvents == 0 {
		return false
	}
	return r.inflightEvents >= r.cfg.MaxInflightEvents || r.inflightBytes >= r.cfg.MaxInflightBytes
}

// Flushed returns the position up to which every event is acknowledged,
// under DeliveryExactlyOnce committed: the position to confirm to
// PostgreSQL.
func (r *Relay) Flushed() pglogrepl.LSN {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.flushedLocked()
}

func (r *Relay) flushedLocked() pglogrepl.LSN {
	if r.tx != nil {
		return r.committed
	}
	return r.wm.flushed
}

// inflight returns the events and bytes in flight.
func (r *Relay) inflight() (events, bytes int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.inflightEvents, r.inflightBytes
}

// Drain flushes the Sink and waits until every published event is
// acknowledged or failed, or ctx ends. Callers stop inserting first.
//
// Under DeliveryExactlyOnce it first commits the open Sink transaction if
// the stream stopped between PostgreSQL transactions, or aborts it if
// inside one; then it must be called from the stream's goroutine.
func (r *Relay) Drain(ctx context.Context) error {
	if r.tx != nil {
		r.drainTxn(ctx)
	}
	if err := r.sink.Flush(ctx); err != nil {
		return fmt.Errorf("flush sink: %w", err)
	}
	for {
		r.mu.Lock()
		n := r.inflightEvents
		r.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-r.changed:
		case <-ctx.Done():
			return fmt.Errorf("drain with %d events unacknowledged: %w", n, ctx.Err())
		}
	}
}

// Run waits until ctx ends, returning nil, or until the Sink fails an event,
// returning that failure. Nothing after a failed event is confirmed.
//
// Under DeliveryExactlyOnce it also commits a due Sink transaction while
// the stream is between PostgreSQL transactions, so that an idle outbox's
// last events wait no longer than the transaction interval.
func (r *Relay) Run(ctx context.Context) error {
	var tick <-chan time.Time
	if r.tx != nil {
		t := time.NewTicker(max(r.cfg.TransactionInterval/4, time.Millisecond))
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.failed:
			r.mu.Lock()
			defer r.mu.Unlock()
			return fmt.Errorf("%w: %w", ErrSinkFailed, r.err)
		case <-tick:
			r.commitIfDue(ctx)
		}
	}
}

package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outbox-relay/outbox-relay/schema"
)

// deadLetterKey is the key of every dead letter: they go out one at a time,
// in the order DeadLetter was called. PostgreSQL text holds no NUL byte, so
// no aggregate ID is this key.
const deadLetterKey = "\x00dead-letters"

// Sink delivers events through a Broker; it implements relay.Sink, and the
// relay's optional DeadLetterer and Halter. Create it with New and Close it
// when done. Its methods are safe for concurrent use.
type Sink[M any] struct {
	cfg    Config
	broker Broker[M]
	log    *slog.Logger
	m      *metrics
	ctx    context.Context    // the senders', ended by Close
	cancel context.CancelFunc // ends ctx
	wg     sync.WaitGroup     // the senders

	mu      sync.Mutex
	lanes   map[string]*lane[M] // per key, its events not yet done
	ready   []*item[M]          // heads of lanes to send, in turn
	wake    chan struct{}       // signalled when ready grows or the pause ends
	pending int                 // events whose done has not returned
	zero    chan struct{}       // closed when pending drops to 0; nil while 0
	halted  error
	closed  bool
	pause   time.Time // no Send starts before it
	bo      *backoff.ExponentialBackOff
	failing int // Sends in a row in which a message failed for a passing reason
}

// lane holds one key's events not yet done, in Publish order: the head is
// in flight, in ready, or waiting for the pause to end.
type lane[M any] struct {
	head, tail *item[M]
}

// item is one event on its way.
type item[M any] struct {
	msg      M
	key      string
	dest     string
	id       string // the event's ID, for errors
	size     int    // payload bytes
	reason   string // a dead letter's reason; empty for an event
	done     func(error)
	start    time.Time
	attempts int
	next     *item[M] // the next of its lane
}

// New returns a Sink sending through broker and starts its senders, which
// Close stops. logger receives the Sink's logs under component=cfg.Name; nil
// discards them. Its metrics are registered with reg (none when nil) and
// unregistered by Close. New fails if cfg is not valid or reg holds the
// metrics of another open Sink; broker is then not closed.
func New[M any](cfg Config, broker Broker[M], logger *slog.Logger, reg prometheus.Registerer) (*Sink[M], error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Sink[M]{
		cfg:    cfg,
		broker: broker,
		log:    logger.With("component", cfg.Name),
		lanes:  make(map[string]*lane[M]),
		wake:   make(chan struct{}, 1),
		bo: &backoff.ExponentialBackOff{
			InitialInterval:     cfg.RetryMin,
			RandomizationFactor: 0.5,
			Multiplier:          2,
			MaxInterval:         cfg.RetryMax,
		},
	}
	m, err := newMetrics(reg, cfg.Name, s.queued)
	if err != nil {
		return nil, err
	}
	s.m = m
	s.ctx, s.cancel = context.WithCancel(context.Background())
	for range cfg.Senders {
		s.wg.Go(s.send)
	}
	return s, nil
}

// queued returns the events whose done has not been called.
func (s *Sink[M]) queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pending
}

// Publish maps ev to its message and queues it behind the earlier events of
// its aggregate; it never waits for the broker. It calls done exactly once:
// with nil when the broker acknowledged the message, with a *PermanentError
// when the message can never be delivered (at once, before Publish returns,
// when ev cannot become a message), or with an error wrapping ErrHalted or
// ErrClosed. A message that fails for a passing reason is sent again until
// it succeeds. done is called from one of the Sink's goroutines, per key in
// Publish order; it must be quick and may call Halt, DeadLetter and Publish.
// ctx is not used: delivery outlives it until Close.
func (s *Sink[M]) Publish(_ context.Context, ev *schema.Event, done func(error)) {
	var err error
	switch {
	case ev.Malformed != nil:
		err = &PermanentError{Reason: ReasonContent, Err: fmt.Errorf(
			"event %q, a message with prefix %q at position %s: %w; emit the JSON object the README describes (schema.Emit, outbox_emit)", ev.ID, ev.Prefix, ev.Position, ev.Malformed)}
	case ev.AggregateID == "":
		err = &PermanentError{Reason: ReasonAggregateID, Err: fmt.Errorf("event %s: %w", ev.ID, schema.ErrNoAggregateID)}
	}
	if err != nil {
		done(err)
		return
	}
	msg, dest, err := s.broker.Map(ev)
	if err != nil {
		done(permanent(ev.ID, err))
		return
	}
	s.enqueue(&item[M]{msg: msg, key: ev.AggregateID, dest: dest, id: ev.ID, size: len(ev.Payload), done: done, start: time.Now()})
}

// permanent returns err as a *PermanentError: a mapping error is one even
// when the Broker did not say so.
func permanent(id string, err error) error {
	var pe *PermanentError
	if errors.As(err, &pe) {
		return err
	}
	return &PermanentError{Reason: ReasonRejected, Err: fmt.Errorf("event %s: %w", id, err)}
}

// Poison reports whether err, given to an event's done, means the event can
// never be delivered, with its reason: it is a *PermanentError. Anything
// else (a halted or closed Sink) is a reason to stop, and PostgreSQL sends
// the event again after a restart.
func (s *Sink[M]) Poison(err error) (reason string, ok bool) {
	var pe *PermanentError
	if errors.As(err, &pe) {
		return pe.Reason, true
	}
	return "", false
}

// DeadLetter sends ev's dead letter (Broker.DeadLetter) and calls done once,
// like Publish. Dead letters go out one at a time in the order of the
// calls. It never blocks, so it may be called from another event's done.
// ctx is not used.
func (s *Sink[M]) DeadLetter(_ context.Context, ev *schema.Event, reason string, cause error, attempts int, done func(error)) {
	msg, dest, err := s.broker.DeadLetter(ev, reason, cause, attempts)
	if err != nil {
		done(fmt.Errorf("dead letter of event %s: %w", ev.ID, err))
		return
	}
	s.enqueue(&item[M]{msg: msg, key: deadLetterKey, dest: dest, id: ev.ID, reason: reason, done: done, start: time.Now()})
}

// enqueue queues it behind its lane, or fails it if the Sink halted or
// closed.
func (s *Sink[M]) enqueue(it *item[M]) {
	s.mu.Lock()
	if err := s.refusedLocked(); err != nil {
		s.mu.Unlock()
		it.done(fmt.Errorf("event %s not sent: %w", it.id, err))
		return
	}
	if s.pending == 0 {
		s.zero = make(chan struct{})
	}
	s.pending++
	if l := s.lanes[it.key]; l != nil {
		l.tail.next, l.tail = it, it
		s.mu.Unlock()
		return
	}
	s.lanes[it.key] = &lane[M]{head: it, tail: it}
	s.ready = append(s.ready, it)
	s.mu.Unlock()
	s.signal()
}

// refusedLocked returns why nothing more is sent, or nil.
func (s *Sink[M]) refusedLocked() error {
	if s.closed {
		return ErrClosed
	}
	return s.halted
}

// signal wakes a sender.
func (s *Sink[M]) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// send is a sender: it sends batches of lane heads until Close.
func (s *Sink[M]) send() {
	msgs := make([]M, 0, s.cfg.MaxBatch)
	errs := make([]error, 0, s.cfg.MaxBatch)
	for {
		batch := s.take()
		if batch == nil {
			return
		}
		msgs, errs = msgs[:0], errs[:len(batch)]
		for i, it := range batch {
			msgs = append(msgs, it.msg)
			errs[i] = nil
		}
		s.broker.Send(s.ctx, msgs, errs)
		clear(msgs) // keep no message alive past its done
		s.finish(batch, errs)
	}
}

// take blocks until lane heads are ready to send and no pause holds them,
// and returns up to MaxBatch of them; nil once the Sink is closed.
func (s *Sink[M]) take() []*item[M] {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil
		}
		wait := time.Until(s.pause)
		if len(s.ready) > 0 && wait <= 0 {
			n := min(len(s.ready), s.cfg.MaxBatch)
			batch := make([]*item[M], n)
			copy(batch, s.ready)
			s.ready = append(s.ready[:0], s.ready[n:]...)
			more := len(s.ready) > 0
			s.mu.Unlock()
			if more {
				s.signal() // for another sender
			}
			return batch
		}
		s.mu.Unlock()
		s.sleep(wait)
	}
}

// sleep waits for a wake-up, for d to pass when positive, or for Close.
func (s *Sink[M]) sleep(d time.Duration) {
	var timer <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-s.wake:
	case <-timer:
	case <-s.ctx.Done():
	}
}

// call is a done to call, outside the lock, with its error.
type call struct {
	done func(error)
	err  error
}

// finish takes the broker's verdicts on batch: an acknowledged or refused
// message is done, and once its done returned its lane's next goes; one
// that failed for a passing reason goes back to the front of ready, and a
// pause starts.
func (s *Sink[M]) finish(batch []*item[M], errs []error) {
	calls := make([]call, 0, len(batch))
	finished := make([]*item[M], 0, len(batch))
	now := time.Now()
	var retry []*item[M]
	var firstErr error
	s.mu.Lock()
	for i, it := range batch {
		err := errs[i]
		switch {
		case err == nil:
			s.observe(it, now)
		case s.ctx.Err() != nil:
			err = fmt.Errorf("event %s not acknowledged: %w: %w", it.id, ErrClosed, err)
		default:
			if reason, ok := s.broker.Classify(err); ok {
				err = &PermanentError{Reason: reason, Err: fmt.Errorf("event %s: %w", it.id, err)}
				break
			}
			if s.halted != nil {
				err = fmt.Errorf("event %s not acknowledged (%w), and not sent again: %w", it.id, err, s.halted)
				break
			}
			it.attempts++
			retry = append(retry, it)
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		calls = append(calls, call{it.done, err})
		finished = append(finished, it)
	}
	var wait time.Duration
	if len(retry) > 0 {
		s.ready = append(retry, s.ready...)
		s.failing++
		wait = s.bo.NextBackOff()
		s.pause = now.Add(wait)
	} else if s.failing > 0 {
		s.failing = 0
		s.bo.Reset()
	}
	failing := s.failing
	s.mu.Unlock()

	if len(retry) > 0 {
		s.m.retries.Add(float64(len(retry)))
		level := slog.LevelWarn
		if failing >= 10 {
			level = slog.LevelError // a minute or more of failures
		}
		s.log.Log(s.ctx, level, "broker did not take messages; sending them again after a backoff",
			"messages", len(retry), "of", len(batch), "attempt", failing, "backoff", wait.Round(time.Millisecond).String(), "err", firstErr)
	}
	// A lane's next is readied only after its head's done returned, so
	// that done is called per key in Publish order.
	for _, c := range calls {
		c.done(c.err)
	}
	s.mu.Lock()
	var failed []call
	for _, it := range finished {
		failed = s.advanceLocked(it, failed)
	}
	s.releaseLocked(len(calls))
	s.mu.Unlock()
	s.complete(failed)
}

// observe counts it as acknowledged.
func (s *Sink[M]) observe(it *item[M], now time.Time) {
	if it.reason != "" {
		s.m.deadLettered.WithLabelValues(it.reason).Inc()
		return
	}
	s.m.published.WithLabelValues(it.dest).Inc()
	s.m.bytes.WithLabelValues(it.dest).Add(float64(it.size))
	s.m.duration.Observe(now.Sub(it.start).Seconds())
}

// advanceLocked removes it, which is done, from the head of its lane and
// readies the next; once the Sink halted or closed it fails the rest of the
// lane instead, appending those calls.
func (s *Sink[M]) advanceLocked(it *item[M], calls []call) []call {
	next := it.next
	it.next = nil
	if next == nil {
		delete(s.lanes, it.key)
		return calls
	}
	if err := s.refusedLocked(); err != nil {
		delete(s.lanes, it.key)
		return failChain(next, err, calls)
	}
	s.lanes[it.key].head = next
	s.ready = append(s.ready, next)
	s.signal()
	return calls
}

// failChain appends a call failing it and every item after it in its lane.
func failChain[M any](it *item[M], err error, calls []call) []call {
	for ; it != nil; it = it.next {
		calls = append(calls, call{it.done, fmt.Errorf("event %s not sent: %w", it.id, err)})
	}
	return calls
}

// complete calls each done in turn, then counts them as no longer pending.
func (s *Sink[M]) complete(calls []call) {
	if len(calls) == 0 {
		return
	}
	for _, c := range calls {
		c.done(c.err)
	}
	s.mu.Lock()
	s.releaseLocked(len(calls))
	s.mu.Unlock()
}

// releaseLocked counts n events, whose done returned, as no longer pending.
func (s *Sink[M]) releaseLocked(n int) {
	s.pending -= n
	if s.pending == 0 && s.zero != nil {
		close(s.zero)
		s.zero = nil
	}
}

// Halt makes the Sink fail, instead of sending, every event not yet sent:
// those queued now and those Publish gets from now on, with an error
// wrapping ErrHalted. Messages already sent complete as usual, and the
// rest of their lanes then fail. The relay calls it when it stops on a
// failed event; it is safe from any goroutine, done callbacks included,
// and later calls keep the first cause.
func (s *Sink[M]) Halt(cause error) {
	s.mu.Lock()
	if s.halted != nil || s.closed {
		s.mu.Unlock()
		return
	}
	s.halted = fmt.Errorf("%w after an earlier event failed: %w", ErrHalted, cause)
	calls := s.dropReadyLocked(s.halted)
	s.mu.Unlock()
	s.complete(calls)
}

// dropReadyLocked empties ready, failing each head with err along with the
// rest of its lane.
func (s *Sink[M]) dropReadyLocked(err error) []call {
	var calls []call
	for _, it := range s.ready {
		delete(s.lanes, it.key)
		calls = failChain(it, err, calls)
	}
	s.ready = nil
	return calls
}

// Flush blocks until every published event's done has been called, or ctx
// ends; then it returns ctx's error, wrapped. Messages are sent as soon as
// a sender is free, so there is nothing to hurry.
func (s *Sink[M]) Flush(ctx context.Context) error {
	s.mu.Lock()
	zero, n := s.zero, s.pending
	s.mu.Unlock()
	if zero == nil {
		return nil
	}
	select {
	case <-zero:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for %d %s acknowledgements: %w", n, s.cfg.Name, ctx.Err())
	}
}

// Ping checks that the broker answers (Broker.Ping).
func (s *Sink[M]) Ping(ctx context.Context) error {
	return s.broker.Ping(ctx)
}

// Close stops the senders, fails every event not yet acknowledged with an
// error wrapping ErrClosed, closes the broker and unregisters the metrics.
// It returns once every done has been called. Flush first to deliver what
// is queued. Publish after Close fails the same way.
func (s *Sink[M]) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	calls := s.dropReadyLocked(ErrClosed)
	s.mu.Unlock()
	s.cancel()
	s.complete(calls)
	s.wg.Wait()
	s.m.unregister()
	if err := s.broker.Close(); err != nil {
		return fmt.Errorf("close %s sink: %w", s.cfg.Name, err)
	}
	return nil
}

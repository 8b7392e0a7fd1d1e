package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// errSinkClosed reports a call on a broker after Close.
var errSinkClosed = errors.New("rabbitmq sink closed")

// missingLogEvery spaces the error logs about one missing exchange.
const missingLogEvery = time.Minute

// broker is the Sink's delivery.Broker: it maps events with its mapper and
// publishes them on one connection, each Send on a channel of its own. It
// is safe for concurrent use.
type broker struct {
	*mapper
	dialer        *dialer
	exchangeType  string
	setupExchange bool // Config.Exchange has no placeholder, so Setup declares it
	dlqType       string
	room          int // the most messages one channel has in flight
	grace         time.Duration
	log           *slog.Logger

	dialing chan struct{} // holds a token while a Send or Ping dials

	mu     sync.Mutex
	sess   *session // nil until the first dial and after a lost connection
	closed bool
	warned map[string]time.Time // when a missing exchange was last logged
}

// newBroker returns the broker of cfg, which must have its defaults and be
// valid. It dials nothing.
func newBroker(cfg Config, logger *slog.Logger) (*broker, error) {
	m, err := newMapper(cfg)
	if err != nil {
		return nil, err
	}
	d, err := newDialer(cfg)
	if err != nil {
		return nil, err
	}
	return &broker{
		mapper:        m,
		dialer:        d,
		exchangeType:  cfg.ExchangeType,
		setupExchange: m.exchange.Literal(),
		dlqType:       cfg.DeadLetterQueueType,
		room:          cfg.Delivery.MaxBatch,
		grace:         cfg.UnroutableGrace,
		log:           logger,
		dialing:       make(chan struct{}, 1),
		warned:        make(map[string]time.Time),
	}, nil
}

// session returns the open session, dialing a new one within ctx if there
// is none or the last one was lost.
func (b *broker) session(ctx context.Context) (*session, error) {
	select {
	case b.dialing <- struct{}{}:
	case <-ctx.Done():
		return nil, explain(b.dialer.uri, fmt.Errorf("wait for another connection attempt: %w", ctx.Err()))
	}
	defer func() { <-b.dialing }()

	b.mu.Lock()
	s, closed := b.sess, b.closed
	if s != nil && !s.alive() {
		b.sess = nil
	}
	b.mu.Unlock()
	switch {
	case closed:
		return nil, errSinkClosed
	case s != nil && s.alive():
		return s, nil
	case s != nil:
		b.log.Warn("connection to RabbitMQ lost; connecting again", "err", s.closeErr())
		s.close()
	}

	s, err := b.dialer.dial(ctx, b.log)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		s.close()
		return nil, errSinkClosed
	}
	b.sess = s
	b.mu.Unlock()
	b.log.Info("connected to RabbitMQ", "url", address(b.dialer.uri), "vhost", b.dialer.uri.Vhost, "server_version", s.conn.Properties["version"])
	return s, nil
}

// Send publishes msgs, each mandatory, on a channel in confirm mode that no
// other Send uses, and waits for the server's confirmation of each: an ack
// without a return is success; a return (no queue bound matches) fails the
// message with errNotRoutedYet, an outage, until Config.UnroutableGrace has
// passed since its first return, then with errUnroutable, which is poison,
// or, for a dead letter, with errDeadLetterQueueMissing, an outage; a nack or a closed channel or
// connection fail it for a passing reason. A message to an exchange that
// does not exist is not published and fails with an *exchangeError, an
// outage. Send dials again if the connection was lost, and when ctx ends it
// aborts the connection and returns.
func (b *broker) Send(ctx context.Context, msgs []*message, errs []error) {
	for len(msgs) > 0 {
		n := min(len(msgs), b.room)
		b.send(ctx, msgs[:n], errs[:n])
		msgs, errs = msgs[n:], errs[n:]
	}
}

// send is Send for at most b.room messages.
func (b *broker) send(ctx context.Context, msgs []*message, errs []error) {
	s, err := b.session(ctx)
	if err != nil {
		fill(errs, err)
		return
	}
	defer s.guard(ctx)()
	c, err := s.channel(b.room)
	if err != nil {
		fill(errs, err)
		return
	}
	if c, err = b.checkExchanges(s, c, msgs, errs); err != nil {
		fill(errs, err)
		return
	}

	dcs := make([]*amqp.DeferredConfirmation, len(msgs))
	for i, m := range msgs {
		if errs[i] != nil {
			continue
		}
		dc, err := c.ch.PublishWithDeferredConfirm(m.exchange, m.key, true, false, m.pub)
		if err != nil {
			// The channel or the connection is closed: the rest cannot
			// go either.
			for j := i; j < len(msgs); j++ {
				if errs[j] == nil {
					errs[j] = destinationError(msgs[j], fmt.Errorf("publish: %w", err))
				}
			}
			break
		}
		dcs[i] = dc
	}

	for i, dc := range dcs {
		if dc == nil {
			continue
		}
		select {
		case <-dc.Done():
		case <-ctx.Done():
			for j := i; j < len(dcs); j++ {
				if dcs[j] != nil {
					errs[j] = destinationError(msgs[j], fmt.Errorf("%w: %w", errNoOutcome, ctx.Err()))
				}
			}
			// The guard aborts the connection too, but from a goroutine
			// of its own: abort now, so that no later call finds the
			// connection alive.
			s.abort()
			return
		}
		errs[i] = b.outcome(c, msgs[i], dc)
	}
	if c.ch.IsClosed() {
		// A 404 closes a channel: an exchange may have gone.
		s.forget()
		return
	}
	s.release(c)
}

// outcome returns the error of m, whose confirmation dc is done, or nil.
func (b *broker) outcome(c *channel, m *message, dc *amqp.DeferredConfirmation) error {
	if !dc.Acked() {
		if c.ch.IsClosed() {
			return destinationError(m, fmt.Errorf("channel closed by the server before it confirmed the message: %w", c.closeErr()))
		}
		return destinationError(m, errNacked)
	}
	c.drain()
	switch {
	case !c.wasReturned(m):
		return nil
	case m.deadLetter:
		return fmt.Errorf("dead letter to queue %q: %w", m.key, errDeadLetterQueueMissing)
	}
	now := time.Now()
	if m.returned.IsZero() {
		m.returned = now
	}
	if b.grace > 0 && now.Sub(m.returned) < b.grace {
		return destinationError(m, errNotRoutedYet)
	}
	return destinationError(m, errUnroutable)
}

// checkExchanges fails, with an *exchangeError, the messages of msgs to an
// exchange the server does not have, checking each exchange not yet known
// on s with a passive declare. A failed passive declare closes the channel,
// so it returns the channel to go on with.
func (b *broker) checkExchanges(s *session, c *channel, msgs []*message, errs []error) (*channel, error) {
	var missing map[string]error
	for i, m := range msgs {
		if m.exchange == "" || s.known(m.exchange) {
			continue
		}
		if err, ok := missing[m.exchange]; ok {
			errs[i] = err
			continue
		}
		err := c.ch.ExchangeDeclarePassive(m.exchange, b.exchangeType, true, false, false, false, nil)
		if err == nil {
			s.remember(m.exchange, true)
			continue
		}
		if ae := serverError(err); ae == nil || ae.Code != amqp.NotFound {
			return c, fmt.Errorf("check that exchange %q exists: %w", m.exchange, err)
		}
		if missing == nil {
			missing = make(map[string]error)
		}
		xerr := &exchangeError{exchange: m.exchange, setup: b.setupExchange, err: err}
		missing[m.exchange], errs[i] = xerr, xerr
		b.warnMissing(xerr)
		if c, err = s.channel(b.room); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// warnMissing logs err, an exchange that does not exist, at most once per
// missingLogEvery for each exchange: a person must declare it.
func (b *broker) warnMissing(err *exchangeError) {
	now := time.Now()
	b.mu.Lock()
	last, ok := b.warned[err.exchange]
	if ok && now.Sub(last) < missingLogEvery {
		b.mu.Unlock()
		return
	}
	if len(b.warned) >= maxKnownExchanges {
		clear(b.warned)
	}
	b.warned[err.exchange] = now
	b.mu.Unlock()
	b.log.Error("events are held: their exchange does not exist", "exchange", err.exchange, "err", err)
}

// destinationError wraps err with where m was going.
func destinationError(m *message, err error) error {
	if m.deadLetter {
		return fmt.Errorf("dead letter to queue %q: %w", m.key, err)
	}
	return fmt.Errorf("publish to exchange %q with routing key %q: %w", m.exchange, m.key, err)
}

// fill sets every nil error of errs to err.
func fill(errs []error, err error) {
	for i := range errs {
		if errs[i] == nil {
			errs[i] = err
		}
	}
}

// Classify reports whether err, from Send, means the message can never be
// delivered: only an unroutable event is (ReasonUnroutable).
func (b *broker) Classify(err error) (reason string, permanent bool) { return classify(err) }

// Ping connects if the Sink is not connected, then opens and closes a
// channel, within ctx. Its error says what to check: the URL, the server,
// the credentials, the vhost, the certificate.
func (b *broker) Ping(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		err := b.ping(ctx)
		if err == nil || !errors.Is(err, errConnectionLost) || attempt > 0 {
			return err
		}
		// The connection was lost just before: dial again, once.
	}
}

// errConnectionLost marks a ping on a connection that turned out lost.
var errConnectionLost = errors.New("connection lost")

// ping is one attempt of Ping.
func (b *broker) ping(ctx context.Context) error {
	s, err := b.session(ctx)
	if err != nil {
		return err
	}
	defer s.guard(ctx)()
	ch, err := s.conn.Channel()
	switch {
	case ctx.Err() != nil:
		return explain(b.dialer.uri, fmt.Errorf("open a channel: %w", ctx.Err()))
	case err != nil && !s.alive():
		return explain(b.dialer.uri, fmt.Errorf("open a channel: %w: %w", errConnectionLost, err))
	case err != nil:
		return explain(b.dialer.uri, fmt.Errorf("open a channel: %w", err))
	}
	if err := ch.Close(); err != nil {
		return explain(b.dialer.uri, fmt.Errorf("close a channel: %w", err))
	}
	return nil
}

// Close closes the connection. The delivery Sink calls it once, after the
// last Send returned.
func (b *broker) Close() error {
	b.mu.Lock()
	s := b.sess
	b.sess, b.closed = nil, true
	b.mu.Unlock()
	if s != nil {
		s.close()
	}
	return nil
}

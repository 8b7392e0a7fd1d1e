package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// Sink publishes outbox events to NATS JetStream. It is a delivery.Sink
// (Publish, Flush, Poison, DeadLetter, Halt, Ping, Close) over a JetStream
// publisher, plus Setup. Create it with New and Close it when done; its
// methods are safe for concurrent use.
type Sink struct {
	*delivery.Sink[*natsgo.Msg]
	b *broker
}

// broker is the delivery.Broker of NATS JetStream.
type broker struct {
	cfg               Config
	subject           *subjectTemplate
	maxBytes          int
	deadLetterSubject string
	conn              *conn
	js                jetstream.JetStream
	log               *slog.Logger
	m                 *metrics
}

// New returns a Sink publishing as cfg says. It fails if cfg is not valid
// (see Config.Validate) or reg holds the metrics of another open Sink, but
// not when the servers cannot be reached: it makes one attempt to connect,
// for at most a couple of seconds, then keeps trying in the background,
// and holds the events until a server answers. Ping reports why none does.
// logger receives the Sink's logs under component=nats (nil discards
// them); its metrics are registered with reg (none when nil) until Close.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	tmpl, err := parseSubjectTemplate(cfg.Subject)
	if err != nil {
		return nil, fmt.Errorf("nats: %w", err) // Validate parsed it: cannot happen
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	b := &broker{
		cfg:               cfg,
		subject:           tmpl,
		maxBytes:          cfg.MaxMessageBytes,
		deadLetterSubject: cfg.DeadLetterSubject,
		log:               logger.With("component", deliveryName),
		m:                 m,
	}
	if b.conn, err = dial(cfg, b.log); err != nil {
		m.unregister()
		return nil, err
	}
	b.js, err = jetstream.New(b.conn.nc,
		// delivery has at most Senders batches of MaxBatch messages in
		// flight, so publishes never wait for room.
		jetstream.WithPublishAsyncMaxPending(maxPending(cfg.Delivery)),
		jetstream.WithPublishAsyncTimeout(cfg.AckTimeout))
	if err != nil {
		b.conn.close()
		m.unregister()
		return nil, fmt.Errorf("nats: %w", err)
	}
	ds, err := delivery.New(cfg.Delivery, b, logger, reg)
	if err != nil {
		_ = b.Close()
		return nil, err
	}
	return &Sink{Sink: ds, b: b}, nil
}

// maxPending returns the most messages delivery with c has in flight.
func maxPending(c delivery.Config) int {
	c = c.WithDefaults()
	return c.MaxBatch * c.Senders
}

// Send publishes msgs asynchronously and waits for each one's
// acknowledgement (a PubAck: the stream stored it), its failure, or its
// AckTimeout. A message JetStream reports as a duplicate was stored
// before, and counts as acknowledged. A publish while the client is
// disconnected fails at once; a disconnection fails the messages waiting
// for their acknowledgement. Messages sent again carry the same
// Nats-Msg-Id, so the stream drops those it already holds.
func (b *broker) Send(ctx context.Context, msgs []*natsgo.Msg, errs []error) {
	if err := b.conn.disconnected(); err != nil {
		// The client's own error would be misleading before the first
		// connection: it does not know yet that the server takes
		// headers.
		for i := range errs {
			errs[i] = err
		}
		return
	}
	futures := make([]jetstream.PubAckFuture, len(msgs))
	for i, m := range msgs {
		// No retries of the client's own when no stream answers:
		// delivery sends the message again after a backoff.
		f, err := b.js.PublishMsgAsync(m, jetstream.WithRetryAttempts(0))
		if err != nil {
			errs[i] = fmt.Errorf("publish to subject %q: %w", m.Subject, err)
			continue
		}
		futures[i] = f
	}
	var unrouted int
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case ack := <-f.Ok():
			if ack.Duplicate {
				b.m.duplicates.Inc()
			}
		case err := <-f.Err():
			errs[i] = fmt.Errorf("publish to subject %q: %w", msgs[i].Subject, err)
			if errors.Is(err, jetstream.ErrNoStreamResponse) {
				unrouted++
			}
		case <-ctx.Done():
			for j := i; j < len(futures); j++ {
				if futures[j] != nil {
					errs[j] = fmt.Errorf("wait for the acknowledgement of subject %q: %w", msgs[j].Subject, ctx.Err())
				}
			}
			return
		}
	}
	if unrouted > 0 {
		b.log.Error("no JetStream stream captures the subjects of some messages; they are held and sent again until one does: run the relay's setup, or add the subjects to a stream",
			"messages", unrouted, "stream", b.cfg.Stream, "stream_subjects", b.cfg.StreamSubjects)
	}
}

// Ping checks that a server answers and runs JetStream for the user,
// waiting for the connection within ctx. Its errors say what to check.
func (b *broker) Ping(ctx context.Context) error {
	if err := b.conn.wait(ctx); err != nil {
		return err
	}
	if _, err := b.js.AccountInfo(ctx); err != nil {
		return b.jetStreamError(err)
	}
	return nil
}

// jetStreamError returns err, from a JetStream API request, with what to
// check.
func (b *broker) jetStreamError(err error) error {
	switch {
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled):
		return fmt.Errorf("the NATS server at %s does not run JetStream (%w); start it with -js, or with a jetstream block in its configuration", b.conn.url, err)
	case errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return fmt.Errorf("JetStream is not enabled for the account of this user on the NATS server at %s (%w); give the account JetStream limits", b.conn.url, err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, natsgo.ErrTimeout):
		return fmt.Errorf("JetStream at %s did not answer in time (%w); check that it runs, and that the user may use the JetStream API ($JS.API.>)", b.conn.url, err)
	}
	return fmt.Errorf("JetStream at %s: %w", b.conn.url, err)
}

// Close fails the acknowledgements still awaited, closes the connection
// and unregisters the metrics. delivery calls it once, after the last
// Send returned.
func (b *broker) Close() error {
	b.js.CleanupPublisher()
	b.conn.close()
	b.m.unregister()
	return nil
}

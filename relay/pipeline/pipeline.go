// Package pipeline is the one wiring of the relay, shared by the daemon and
// relaytest: a cdc.Stream reading the replication slot into a relay.Relay
// that publishes to a Sink, run together with the parts that live and die
// with them (a health check, a metrics server, a test's consumer).
//
// Invariant: Run returns only once every goroutine it started has ended,
// and the first part to fail stops the others.
package pipeline

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/outbox-relay/outbox-relay/cdc"
	"github.com/outbox-relay/outbox-relay/relay"
)

// Config configures the stream and the relay core.
type Config struct {
	CDC   cdc.Config
	Relay relay.Config
}

// Pipeline is a stream and the relay core it feeds. Create it with New and
// run it with Run, once.
type Pipeline struct {
	// Stream reads the slot; its State and Beat tell health checks how it
	// goes.
	Stream *cdc.Stream
	// Relay publishes to the Sink and tells the stream what to confirm.
	Relay *relay.Relay
}

// Actor is a part that runs beside the stream and the relay core: it
// returns nil once ctx ends, or an error when it cannot go on, which stops
// the pipeline.
type Actor func(ctx context.Context) error

// New builds the stream and the relay core publishing to sink; it starts
// nothing and dials nothing. A nil logger discards logs; their metrics are
// registered with reg, none when nil.
func New(cfg Config, sink relay.Sink, logger *slog.Logger, reg prometheus.Registerer) (*Pipeline, error) {
	core, err := relay.New(cfg.Relay, sink, logger, reg)
	if err != nil {
		return nil, err
	}
	stream, err := cdc.New(cfg.CDC, logger, reg)
	if err != nil {
		return nil, err
	}
	return &Pipeline{Stream: stream, Relay: core}, nil
}

// Run runs the stream, the relay core and each actor until ctx ends, and
// then returns nil once the stream has drained what was in flight (bounded
// by cdc.Config.ShutdownTimeout) and every actor returned. When any of
// them fails first, it stops the others and returns that error.
func (p *Pipeline) Run(ctx context.Context, actors ...Actor) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.Stream.Run(gctx, p.Relay) })
	g.Go(func() error { return p.Relay.Run(gctx) })
	for _, a := range actors {
		g.Go(func() error { return a(gctx) })
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("relay stopped: %w", err)
	}
	return nil
}

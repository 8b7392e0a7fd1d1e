package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outbox-relay/outbox-relay/cdc"
	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/relay/pipeline"
	"github.com/outbox-relay/outbox-relay/sinks/kafka"
)

// brokerCheckTimeout bounds the start-up check that the brokers answer.
const brokerCheckTimeout = 10 * time.Second

// relayUntilDone runs the daemon: the replication stream, the relay core and
// the metrics server, until ctx ends or one of them fails. When the slot is
// lost it stops, or under --on-slot-lost=recover recovers it (slotlost.go)
// and runs again; under exactly-once, a Kafka transaction that did not
// commit for certain makes it run again too (restart.go). The HTTP servers
// outlive the runs (endpoint.go).
func relayUntilDone(ctx context.Context, cfg Config, stderr io.Writer) (err error) {
	logger := cfg.logger(stderr)
	logger.Info("starting", "version", version, "commit", commit, "cdc", cfg.CDC, "sink", cfg.Sink, cfg.Sink, cfg.sinkConfig())
	cfg.warnUnusedSinkFlags(logger)
	applyMemoryLimit(cfg.MemoryLimit, cfg.Relay.MaxInflightBytes, logger)
	applyMaxProcs(cfg.MaxProcs, logger)
	if cfg.pprof {
		logger.Warn("--pprof is deprecated; use --pprof-addr="+defaultPprofAddr, "addr", cfg.PprofAddr)
	}
	ep := newEndpoint()
	rm := newRecoveryMetrics()
	if err := rm.register(ep.base); err != nil {
		return err
	}
	rs := newRestarter(logger)
	rs.waiting = func() { ep.detach("restarting: the last Kafka transaction did not commit for certain") }
	if cfg.Relay.Delivery == relay.DeliveryExactlyOnce {
		if err := rs.register(ep.base); err != nil {
			return err
		}
	}
	// A server failing stops the runs; its error is the daemon's.
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	srv, err := startServers(cfg, ep, logger, fail)
	if err != nil {
		return err
	}
	defer func() {
		// A server's failure ended the runs: it is the cause, whatever
		// the run returned on its way out.
		if serr := srv.close(); serr != nil {
			err = errors.Join(serr, err)
		}
	}()
	for {
		flushed, err := relayWith(ctx, cfg, logger, ep, rs.pending())
		if err == nil || ctx.Err() != nil {
			return err
		}
		if cfg.Relay.Delivery == relay.DeliveryExactlyOnce && rs.again(ctx, err, flushed) {
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		if !slotLost(err, cfg) {
			return err
		}
		if cfg.OnSlotLost != onSlotLostRecover {
			return lostSlotError(ctx, cfg, err, flushed)
		}
		ep.detach("recovering the lost replication slot")
		if err := recoverSlot(ctx, cfg, logger, rm); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		ep.detach("starting on the recovered slot")
	}
}

// relayWith is one run of the daemon: the stream, the relay core and their
// helpers, with a registry of their metrics that ep serves, with the run's
// probes, while the run goes on; it also returns the last position the
// relay core acknowledged. A restart waits for the brokers to answer
// instead of failing its start-up check.
func relayWith(ctx context.Context, cfg Config, logger *slog.Logger, ep *endpoint, restart bool) (pglogrepl.LSN, error) {
	reg := prometheus.NewRegistry()
	var sink brokerSink
	var err error
	if restart {
		sink, err = openSinkWaiting(ctx, cfg, logger, reg)
	} else {
		sink, err = openSink(ctx, cfg, logger, reg)
	}
	if err != nil {
		if ctx.Err() != nil {
			return 0, nil
		}
		return 0, err
	}
	defer sink.Close()

	if cfg.Relay.Delivery == relay.DeliveryExactlyOnce {
		ks := sink.(kafkaSink) // finishRun allows exactly-once with Kafka only
		cctx, cancel := context.WithTimeout(ctx, brokerCheckTimeout)
		err := ks.CreateCheckpointTopic(cctx)
		cancel()
		if err != nil {
			return 0, err
		}
		logger.Info("exactly-once delivery", "transactional_id", cfg.Kafka.TransactionalID, "checkpoint_topic", kafka.CheckpointTopic,
			"transaction_interval", cfg.Relay.TransactionInterval.String())
	}
	p, err := pipeline.New(pipeline.Config{CDC: cfg.CDC, Relay: cfg.Relay}, sink, logger, reg)
	if err != nil {
		return 0, err
	}
	monitor, err := cdc.NewMonitor(cfg.CDC, healthInterval, logger, reg)
	if err != nil {
		return 0, err
	}
	h := &health{stream: p.Stream, monitor: monitor, ping: sink.Ping, broker: cfg.Sink}
	cm, err := newCleanupMetrics(reg)
	if err != nil {
		return 0, err
	}
	keeper := newHorizonKeeper(cfg.CDC, max(cfg.CDC.StatusInterval, time.Second),
		func() bool { return p.Stream.State() == cdc.StateStreaming }, logger, cm)

	actors := []pipeline.Actor{monitor.Run, h.run, keeper.Run}
	if cfg.PruneOlderThan > 0 {
		actors = append(actors, newJanitor(cfg.CDC, cfg.PruneOlderThan, cfg.PruneInterval, logger, cm).Run)
	}
	ep.attach(reg, h.live, h.ready)
	defer ep.detach("stopping")
	if err := p.Run(ctx, actors...); err != nil {
		return p.Relay.Flushed(), err
	}
	logger.Info("stopped")
	return p.Relay.Flushed(), nil
}

package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/cdc"
)

// setup creates the table, publication and slot, or with dryRun prints the
// SQL it may run.
func setup(ctx context.Context, cfg Config, dryRun bool, stdout, stderr io.Writer) error {
	// --sink first: a mistyped one must change nothing.
	if err := cfg.finishSink(); err != nil {
		return err
	}
	cfg.warnUnusedSinkFlags(cfg.logger(stderr))
	if dryRun {
		stmts, err := cdc.SetupSQL(cfg.CDC)
		if err != nil {
			return err
		}
		for _, s := range stmts {
			fmt.Fprintln(stdout, strings.TrimSpace(s))
			fmt.Fprintln(stdout)
		}
		return nil
	}
	conn, err := pgx.Connect(ctx, cfg.CDC.DSN)
	if err != nil {
		return cdc.ConnectError(cfg.CDC.DSN, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := cdc.Setup(ctx, conn, cfg.CDC, cfg.logger(stderr)); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "ready: table %s, publication %s, slot %s\n", cfg.CDC.Table, cfg.CDC.Publication, cfg.CDC.Slot)
	if cfg.Sink == sinkKafka {
		return nil
	}
	return setupBroker(ctx, cfg, stdout, stderr)
}

// setupBroker makes what the sink needs on its broker.
func setupBroker(ctx context.Context, cfg Config, stdout, stderr io.Writer) error {
	if err := cfg.validateSink(); err != nil {
		return usageError{err}
	}
	logger := cfg.logger(stderr)
	s, err := newSink(cfg, logger, nil)
	if err != nil {
		return err
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(ctx, brokerCheckTimeout)
	defer cancel()
	if err := s.Ping(ctx); err != nil {
		return err
	}
	if err := s.Setup(ctx); err != nil {
		return fmt.Errorf("set up %s: %w", cfg.Sink, err)
	}
	fmt.Fprintf(stdout, "ready: %s\n", cfg.Sink)
	return nil
}

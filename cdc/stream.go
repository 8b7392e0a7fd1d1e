package cdc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outbox-relay/outbox-relay/schema"
)

// Resumer is a Handler that must learn where to resume once the stream holds
// the slot, before it reads anything: relay.Relay under exactly-once
// delivery reads its last committed fence there, after a standby has taken
// the slot over, not before. start is the slot's confirmed position. An
// error stops the stream for good.
type Resumer interface {
	Resume(ctx context.Context, start pglogrepl.LSN) error
}

// Handler consumes a Stream's transactions. Every method is called from the
// Stream's goroutine; relay.Relay implements it.
type Handler interface {
	// Begin opens a transaction whose commit record is at commitLSN.
	Begin(commitLSN pglogrepl.LSN, commitTime time.Time)
	// Insert takes one outbox row of the open transaction. The Handler may
	// keep ev's strings and slices, not ev. ctx is never cancelled: the
	// events it carries outlive the stream, which drains them at shutdown.
	// An error stops the stream.
	Insert(ctx context.Context, ev *schema.Event) error
	// Commit closes the open transaction; end is the position to confirm
	// once its events are acknowledged.
	Commit(end pglogrepl.LSN)
	// Keepalive reports that the server sent everything before walEnd.
	Keepalive(walEnd pglogrepl.LSN)
	// Room returns nil when the Handler takes another event, or a channel
	// that receives when it may. The stream reads nothing meanwhile, and
	// PostgreSQL keeps the WAL.
	Room() <-chan struct{}
	// Flushed returns the position to confirm to the server.
	Flushed() pglogrepl.LSN
	// Drain waits until everything inserted is acknowledged or ctx ends.
	Drain(ctx context.Context) error
}

// Stream reads the outbox table's inserts from a replication slot.
type Stream struct {
	cfg   Config
	log   *slog.Logger
	m     *metrics
	state atomic.Int32 // a State
	beat  atomic.Int64 // unix nanoseconds of the loop's last round

	// Owned by Run's goroutine.
	streamed bool          // a session of this Run reached START_REPLICATION
	first    identity      // the server history of that session
	sent     pglogrepl.LSN // the position last confirmed to the server
}

// New returns a Stream for cfg, whose zero fields take their defaults; it
// connects nothing until Run. An invalid cfg returns cfg.Validate's error.
// A nil logger discards logs; a nil reg registers no metrics.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Stream, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Stream{cfg: cfg, log: logger.With("component", "cdc", "slot", cfg.Slot), m: m}, nil
}

// Run streams the slot's transactions to h until ctx ends or an error
// stops it. Once ctx ends it stops reading, lets h drain (bounded by
// Config.ShutdownTimeout), confirms h's final position, and returns nil, or
// the drain's error.
//
// While another connection holds the slot, Run stands by and retries. Once
// it has streamed, it reconnects after any loss of the connection (a server
// restart, a terminated walsender, a network fault) with exponential backoff
// and resumes from the slot's confirmed position. A connection on which the
// server has sent nothing for wal_sender_timeout (one minute when that is 0)
// counts as lost. Errors no retry can cure (configuration, a missing table
// or publication, an invalidated slot, a Handler failure) are returned,
// after h drained and its position was confirmed where the connection
// allows; so is any error before the first stream, so that a wrong setting
// fails fast. Once it has streamed, a slot gone missing (ErrSlotLost) or a
// server of another history (ErrSystemChanged) stops Run for good: events
// may have been lost, and reading on would hide it.
func (s *Stream) Run(ctx context.Context, h Handler) error {
	defer s.setState(StateStopped)
	s.streamed, s.first, s.sent = false, identity{}, 0
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 250 * time.Millisecond
	b.MaxInterval = 5 * time.Second
	for {
		began := time.Now()
		drained, err := s.serve(ctx, h)
		if ctx.Err() != nil {
			if !drained {
				// No connection to confirm on: let what is in flight
				// finish, and let the next run start from the slot.
				dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
				defer cancel()
				if err := h.Drain(dctx); err != nil {
					return fmt.Errorf("shut down with events unacknowledged; they will be sent again: %w", err)
				}
				return nil
			}
			return err
		}
		s.m.errors.Inc()
		if !s.streamed || permanent(err) {
			return err
		}
		if time.Since(began) > time.Minute {
			b.Reset()
		}
		next := b.NextBackOff()
		s.m.active.Set(0)
		s.setState(StateReconnecting)
		s.m.reconnects.Inc()
		s.log.Warn("replication stream lost; reconnecting", "err", err, "retry_at", time.Now().Add(next).Format(time.RFC3339Nano))
		t := time.NewTimer(next)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
}

// serve connects, takes the slot and runs one session on the connection
// (see session.run); drained reports that the session drained h and
// confirmed its final position. s.streamed is set once START_REPLICATION
// succeeded.
func (s *Stream) serve(ctx context.Context, h Handler) (drained bool, _ error) {
	s.setState(StateConnecting)
	conn, id, silence, err := s.connect(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Close(context.WithoutCancel(ctx))

	start, err := s.start(ctx, conn)
	if err != nil {
		return false, err
	}
	// Checked again now that this connection holds the slot: a recovery
	// records that it began before it creates the slot, so a slot taken
	// while it republishes is seen here, before anything is confirmed.
	if err := s.notRecovering(ctx); err != nil {
		return false, err
	}
	if r, ok := h.(Resumer); ok {
		if err := r.Resume(ctx, start); err != nil {
			return false, &handlerError{fmt.Errorf("resume from slot %q at %s: %w", s.cfg.Slot, start, err)}
		}
	}
	if !s.streamed {
		s.streamed, s.first = true, id
	}
	s.setState(StateStreaming)
	s.m.active.Set(1)
	defer s.m.active.Set(0)
	// Nothing before the slot's confirmed position is in flight, so the
	// position may be confirmed as it is.
	h.Keepalive(start)
	s.log.Info("streaming", "lsn", start.String(), "publication", s.cfg.Publication, "silence_timeout", silence.String())
	ss := &session{
		s:       s,
		conn:    conn,
		h:       h,
		start:   start,
		silence: silence,
		rels:    relations{table: s.cfg.Table, columns: s.cfg.Columns},
	}
	return ss.run(ctx)
}

// permanent reports an error no reconnect can cure.
func permanent(err error) bool {
	for _, target := range []error{ErrWALLevel, ErrServerVersion, ErrNoTable, ErrNoPublication, ErrNotPublished, ErrNoInserts, ErrSlotInvalidated, ErrSlotPlugin, ErrColumns, ErrNoSlot, ErrSlotLost, ErrSlotRecovering, ErrSystemChanged} {
		if errors.Is(err, target) {
			return true
		}
	}
	var de *decodeError
	var he *handlerError
	if errors.As(err, &de) || errors.As(err, &he) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "28P01", "28000", "42501", "3D000": // bad password or role, no privilege, no database
			return true
		}
	}
	return false
}

// handlerError wraps a Handler's failure, which ends the stream for good.
type handlerError struct{ err error }

func (e *handlerError) Error() string { return e.err.Error() }
func (e *handlerError) Unwrap() error { return e.err }

// connectConfig parses the DSN, bounding connection attempts by 10 seconds
// unless the DSN sets connect_timeout.
func (s *Stream) connectConfig() (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(s.cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("parse PostgreSQL DSN: %w", err)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	return cfg, nil
}

// connect checks the server, table, publication and slot on a normal
// connection (creating the slot if it is missing, the config allows it and
// this Run has not streamed yet), then opens the replication connection and
// checks that the server's history is the one first streamed from. It
// returns the connection, the server's history and how long the stream may
// hear nothing before it counts the connection lost.
func (s *Stream) connect(ctx context.Context) (*pgconn.PgConn, identity, time.Duration, error) {
	dsn := RedactDSN(s.cfg.DSN)
	ccfg, err := s.connectConfig()
	if err != nil {
		return nil, identity{}, 0, err
	}
	db, err := pgx.ConnectConfig(ctx, ccfg)
	if err != nil {
		return nil, identity{}, 0, ConnectError(s.cfg.DSN, err)
	}
	defer db.Close(context.WithoutCancel(ctx))
	if err := CheckServer(ctx, db, s.cfg.Table, s.cfg.Publication); err != nil {
		return nil, identity{}, 0, err
	}
	if err := CheckColumns(ctx, db, s.cfg.Table, s.cfg.Columns); err != nil {
		return nil, identity{}, 0, err
	}
	slot, err := ReadSlot(ctx, db, s.cfg.Slot)
	switch {
	case errors.Is(err, ErrNoSlot) && s.streamed:
		return nil, identity{}, 0, s.slotLost()
	case errors.Is(err, ErrNoSlot) && s.cfg.CreateSlot:
		if _, err := CreateSlot(ctx, db, s.cfg.Slot); err != nil {
			return nil, identity{}, 0, err
		}
		s.log.Warn("slot was missing and is created: it sees only transactions that commit from now on; if a relay used this slot before, republish from the outbox table the rows written since it stopped")
		slot, err = ReadSlot(ctx, db, s.cfg.Slot)
	}
	if err != nil {
		return nil, identity{}, 0, err
	}
	if err := slot.Usable(); err != nil {
		return nil, identity{}, 0, err
	}
	if err := recovering(ctx, db, s.cfg); err != nil {
		return nil, identity{}, 0, err
	}

	pcfg := ccfg.Config.Copy()
	pcfg.RuntimeParams["replication"] = "database"
	pcfg.BuildFrontend = replicationFrontend
	conn, err := pgconn.ConnectConfig(ctx, pcfg)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42501" {
			return nil, identity{}, 0, fmt.Errorf("open replication connection to %s: %w; the role needs the REPLICATION attribute (ALTER ROLE name REPLICATION)", dsn, err)
		}
		return nil, identity{}, 0, fmt.Errorf("open replication connection to %s: %w", dsn, err)
	}
	fail := func(err error) (*pgconn.PgConn, identity, time.Duration, error) {
		conn.Close(context.WithoutCancel(ctx))
		return nil, identity{}, 0, err
	}
	sys, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		return fail(fmt.Errorf("identify system: %w", err))
	}
	id := identity{SystemID: sys.SystemID, Timeline: sys.Timeline}
	if s.streamed {
		if err := s.first.follows(id, s.cfg.Slot, s.sent); err != nil {
			return fail(err)
		}
	}
	silence, err := s.silence(ctx, conn)
	if err != nil {
		return fail(err)
	}
	s.log.Info("connected", "system_id", sys.SystemID, "timeline", sys.Timeline, "lsn", sys.XLogPos.String(), "database", sys.DBName)
	return conn, id, silence, nil
}

// notRecovering returns an error wrapping ErrSlotRecovering when a recovery
// of the slot began and has not ended, read over a connection of its own.
func (s *Stream) notRecovering(ctx context.Context) error {
	ccfg, err := s.connectConfig()
	if err != nil {
		return err
	}
	db, err := pgx.ConnectConfig(ctx, ccfg)
	if err != nil {
		return ConnectError(s.cfg.DSN, err)
	}
	defer db.Close(context.WithoutCancel(ctx))
	return recovering(ctx, db, s.cfg)
}

// silence reads wal_sender_timeout on the replication connection and
// returns how long the stream may hear nothing from the server.
func (s *Stream) silence(ctx context.Context, conn *pgconn.PgConn) (time.Duration, error) {
	res, err := conn.Exec(ctx, "SHOW wal_sender_timeout").ReadAll()
	if err != nil {
		return 0, fmt.Errorf("read wal_sender_timeout: %w", err)
	}
	if len(res) == 0 || len(res[0].Rows) == 0 || len(res[0].Rows[0]) == 0 {
		return 0, fmt.Errorf("read wal_sender_timeout: SHOW returned no value")
	}
	return silenceFor(string(res[0].Rows[0][0]))
}

// slotLost returns the error for a slot that disappeared after this Run
// streamed from it.
func (s *Stream) slotLost() error {
	return fmt.Errorf("replication slot %q disappeared while the relay was running: it was dropped, or the server failed over to one without it; events committed since %s may not have been relayed: %w",
		s.cfg.Slot, s.sent, ErrSlotLost)
}

// start issues START_REPLICATION, retrying while another connection holds
// the slot, and returns the slot's confirmed position.
func (s *Stream) start(ctx context.Context, conn *pgconn.PgConn) (pglogrepl.LSN, error) {
	args := []string{
		"proto_version '1'",
		"publication_names '" + strings.ReplaceAll(pgx.Identifier{s.cfg.Publication}.Sanitize(), "'", "''") + "'",
		"messages 'true'", // logical decoding messages, PostgreSQL 14 and later
	}
	op := func() (struct{}, error) {
		err := pglogrepl.StartReplication(ctx, conn, s.cfg.Slot, 0, pglogrepl.StartReplicationOptions{
			Mode:       pglogrepl.LogicalReplication,
			PluginArgs: args,
		})
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "55006" { // object_in_use
			return struct{}{}, fmt.Errorf("start replication on slot %q: %w: %s", s.cfg.Slot, ErrSlotInUse, pgErr.Message)
		}
		if errors.As(err, &pgErr) && pgErr.Code == "42704" && s.streamed { // undefined_object: dropped since connect
			return struct{}{}, backoff.Permanent(s.slotLost())
		}
		if err != nil {
			return struct{}{}, backoff.Permanent(fmt.Errorf("start replication on slot %q: %w", s.cfg.Slot, err))
		}
		return struct{}{}, nil
	}
	// A standby polls often enough to take over within seconds of the
	// active relay's end.
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 250 * time.Millisecond
	b.MaxInterval = 2 * time.Second
	standby := false
	_, err := backoff.Retry(ctx, op,
		backoff.WithBackOff(b),
		backoff.WithMaxElapsedTime(0),
		backoff.WithNotify(func(err error, next time.Duration) {
			if !standby {
				standby = true
				s.setState(StateStandby)
				s.m.standby.Set(1)
				s.log.Info("standing by: slot in use by another connection; retrying until it is free", "err", err)
				return
			}
			s.log.Debug("slot still in use", "err", err, "retry_in", next.String())
		}))
	s.m.standby.Set(0)
	if err != nil {
		return 0, err
	}
	if standby {
		s.log.Info("slot free; taking over")
	}
	ccfg, err := s.connectConfig()
	if err != nil {
		return 0, err
	}
	db, err := pgx.ConnectConfig(ctx, ccfg)
	if err != nil {
		return 0, fmt.Errorf("connect to read slot %q: %w", s.cfg.Slot, err)
	}
	defer db.Close(context.WithoutCancel(ctx))
	slot, err := ReadSlot(ctx, db, s.cfg.Slot)
	if errors.Is(err, ErrNoSlot) && s.streamed {
		return 0, s.slotLost()
	}
	if err != nil {
		return 0, err
	}
	return slot.ConfirmedFlush, nil
}

// readBuffer is the replication connection's read buffer. pgx reads at most
// 8 KiB per read call, one call for a few rows of a busy stream; reading
// 64 KiB at a time makes eight times fewer calls, for one more copy of
// bytes that are in cache.
const readBuffer = 64 << 10

// replicationFrontend is pgproto3.NewFrontend reading through readBuffer.
func replicationFrontend(r io.Reader, w io.Writer) *pgproto3.Frontend {
	return pgproto3.NewFrontend(bufio.NewReaderSize(r, readBuffer), w)
}

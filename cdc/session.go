package cdc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/outbox-relay/outbox-relay/internal/content"
	"github.com/outbox-relay/outbox-relay/schema"
)

// session is what a Stream keeps of one replication connection, from
// START_REPLICATION to the connection's end. Only Run's goroutine uses it.
type session struct {
	s       *Stream
	conn    *pgconn.PgConn
	h       Handler
	start   pglogrepl.LSN // the slot's confirmed position when the session began
	silence time.Duration // how long the server may send nothing before the connection counts as lost
	rels    relations
	ev      schema.Event // the event being decoded; Handlers keep its strings and slices, not it

	inTxn      bool          // a Begin was read and its Commit was not
	txn        begin         // the transaction being read, once inTxn
	received   pglogrepl.LSN // the server has sent everything before it
	confirmed  pglogrepl.LSN // the position last confirmed on this connection
	nextStatus time.Time     // when the next status update is due
	nextPrompt time.Time     // when to look for a position to confirm early
	heard      time.Time     // when the server last sent a message
	asked      bool          // a reply was requested since heard
	stopBy     time.Time     // once ctx ended: the whole stop's deadline less the final confirmation's share
	finishBy   time.Time     // once ctx ended inside a transaction: when to stop reading to its commit
}

// run streams until ctx ends or the connection fails, and on ctx's end
// drains the Handler and confirms its final position; drained reports that
// it did so. On an error no reconnect can cure it drains and confirms too,
// and returns the error.
func (ss *session) run(ctx context.Context) (drained bool, _ error) {
	s := ss.s
	loopErr := ss.loop(ctx)
	if ctx.Err() == nil && !permanent(loopErr) {
		return false, loopErr
	}
	if ss.stopBy.IsZero() {
		ss.stopBy = time.Now().Add(s.cfg.ShutdownTimeout - confirmReserve(s.cfg.ShutdownTimeout))
	}

	s.log.Info("draining", "until", ss.stopBy.Format(time.RFC3339Nano))
	dctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), ss.stopBy)
	defer cancel()
	drainErr := ss.h.Drain(dctx)
	final := ss.flushed()
	confirmErr := ss.conn.Conn().SetDeadline(ss.stopBy.Add(confirmReserve(s.cfg.ShutdownTimeout)))
	if confirmErr == nil {
		confirmErr = ss.sendStatus(final, false)
	}
	if confirmErr == nil {
		// End the copy and read what the server still sends: closing a
		// socket with unread data resets the connection, and the server
		// may then lose the confirmation.
		if _, err := pglogrepl.SendStandbyCopyDone(context.Background(), ss.conn); err != nil {
			s.log.Debug("end replication copy", "err", err)
		}
	}
	if ctx.Err() == nil {
		// A permanent error: report it, with what became of the rest.
		if confirmErr != nil {
			s.log.Warn("could not confirm the acknowledged position before stopping; it will be sent again", "lsn", final.String(), "err", confirmErr)
		} else {
			s.log.Info("final position confirmed", "lsn", final.String())
		}
		if drainErr != nil {
			s.log.Warn("stopping with events unacknowledged; they will be sent again", "err", drainErr)
		}
		return false, loopErr
	}
	if confirmErr != nil {
		return true, fmt.Errorf("confirm final position %s: %w", final, confirmErr)
	}
	s.log.Info("final position confirmed", "lsn", final.String())
	if drainErr != nil {
		return true, fmt.Errorf("shut down with events unacknowledged; they will be sent again: %w", drainErr)
	}
	return true, nil
}

// confirmReserve is the part of the shutdown timeout kept for the final
// confirmation: a tenth, at most one second.
func confirmReserve(timeout time.Duration) time.Duration {
	return min(time.Second, timeout/10)
}

// loop reads the replication stream until ctx ends or an error occurs,
// sending status updates as status says.
//
// When ctx ends it sets ss.stopBy, and inside a transaction reads on to
// that transaction's commit, for at most half of the time until ss.stopBy,
// so that a clean stop leaves nothing to send again.
func (ss *session) loop(ctx context.Context) error {
	s := ss.s
	netConn := ss.conn.Conn()
	// Wake a blocked read when ctx ends.
	stop := context.AfterFunc(ctx, func() { _ = netConn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	// Events outlive the stream: shutdown drains them instead of cancelling.
	pubCtx := context.WithoutCancel(ctx)
	ss.nextStatus = time.Now().Add(s.cfg.StatusInterval)
	ss.heard = time.Now()
	var (
		deadline time.Time // the read deadline last set
		fresh    bool      // ss.heard was read after the last message: it is now
		wait     = time.NewTimer(time.Hour)
	)
	defer wait.Stop()
	for {
		// One clock read per message: right after one, heard is now.
		now := ss.heard
		if !fresh {
			now = time.Now()
		}
		fresh = false
		s.beat.Store(now.UnixNano())
		if ctx.Err() != nil {
			if err := ss.stopping(ctx, now); err != nil {
				return err
			}
		}
		wake, err := ss.status(now)
		if err != nil {
			return err
		}
		if room := ss.h.Room(); room != nil {
			s.m.stalls.Inc()
			done := ctx.Done()
			if !ss.finishBy.IsZero() {
				done = nil
			}
			wait.Reset(time.Until(wake))
			select {
			case <-room:
			case <-wait.C:
			case <-done:
			}
			// Nothing is read meanwhile: what the server sent waits in
			// the socket, and the wait is no silence of the server's.
			ss.heard = time.Now()
			continue
		}
		if deadline != wake {
			deadline = wake
			if err := netConn.SetReadDeadline(deadline); err != nil {
				return fmt.Errorf("set read deadline on replication connection: %w", err)
			}
		}
		msg, err := ss.conn.ReceiveMessage(context.Background())
		if err != nil {
			if isTimeout(err) {
				deadline = time.Time{} // ctx's AfterFunc may have moved it
				continue
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("receive from replication stream on slot %q: %w", s.cfg.Slot, err)
		}
		ss.heard, fresh, ss.asked = time.Now(), true, false
		if err := ss.receive(pubCtx, msg); err != nil {
			return err
		}
	}
}

// stopping is called at now once ctx has ended. It sets ss.stopBy, the
// deadline of the whole stop less the final confirmation's share, and
// returns ctx's error when the loop must stop: outside a transaction, or
// once the time to read to the open transaction's commit is up.
func (ss *session) stopping(ctx context.Context, now time.Time) error {
	s := ss.s
	if ss.stopBy.IsZero() {
		ss.stopBy = now.Add(s.cfg.ShutdownTimeout - confirmReserve(s.cfg.ShutdownTimeout))
	}
	switch {
	case !ss.inTxn:
		return ctx.Err()
	case ss.finishBy.IsZero():
		ss.finishBy = now.Add(ss.stopBy.Sub(now) / 2)
		s.log.Info("reading to the end of the open transaction before stopping", "until", ss.finishBy)
	case now.After(ss.finishBy):
		s.log.Warn("stopping inside a transaction; its events will be sent again after restart")
		return ctx.Err()
	}
	return nil
}

// receive acts on one message of the replication connection, read at
// ss.heard.
func (ss *session) receive(ctx context.Context, msg pgproto3.BackendMessage) error {
	s := ss.s
	switch msg := msg.(type) {
	case *pgproto3.CopyData:
		if len(msg.Data) == 0 {
			return nil
		}
		switch msg.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			return ss.keepalive(msg.Data[1:])
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(msg.Data[1:])
			if err != nil {
				return fmt.Errorf("parse XLogData: %w", err)
			}
			s.m.serverWAL.Set(float64(xld.ServerWALEnd))
			return ss.handle(ctx, xld, ss.heard)
		}
	case *pgproto3.ErrorResponse:
		return fmt.Errorf("replication stream on slot %q: %w", s.cfg.Slot, pgconn.ErrorResponseToPgError(msg))
	case *pgproto3.CopyDone:
		return fmt.Errorf("replication stream on slot %q ended by the server", s.cfg.Slot)
	}
	return nil
}

// handle acts on one pgoutput message, read from the stream at at.
func (ss *session) handle(ctx context.Context, xld pglogrepl.XLogData, at time.Time) error {
	s := ss.s
	data := xld.WALData
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case msgBegin:
		b, err := decodeBegin(data)
		if err != nil {
			return err
		}
		ss.inTxn, ss.txn = true, b
		ss.h.Begin(b.FinalLSN, b.CommitTime)
	case msgInsert:
		id, err := insertRelation(data)
		if err != nil {
			return err
		}
		rel, err := ss.rels.get(id)
		if err != nil || rel == nil {
			return err
		}
		// The connection reuses its buffer; the event owns this copy.
		buf := make([]byte, len(data))
		copy(buf, data)
		if err := decodeInsert(buf, rel.bind, &ss.ev); err != nil {
			return fmt.Errorf("decode insert into %s at %s: %w", rel.name, xld.WALStart, err)
		}
		ss.ev.Table, ss.ev.Sent, ss.ev.Received = rel.name, xld.ServerTime, at
		s.m.rows.Inc()
		if err := ss.h.Insert(ctx, &ss.ev); err != nil {
			return &handlerError{err}
		}
	case msgMessage:
		return ss.message(ctx, xld, at)
	case msgCommit:
		c, err := decodeCommit(data)
		if err != nil {
			return err
		}
		ss.inTxn = false
		ss.h.Commit(c.EndLSN)
		ss.received = c.EndLSN
		s.m.received.Set(float64(c.EndLSN))
	case msgRelation:
		r, err := decodeRelation(data)
		if err != nil {
			return err
		}
		if err := ss.rels.put(r); err != nil {
			var mc *missingColumns
			if !ss.inTxn || !errors.As(err, &mc) {
				return err
			}
			// The table may have the columns again: say what the rows had.
			return fmt.Errorf("%w: the first such transaction, committed at %s (%s), wrote %s with the columns %s, without %s",
				ErrRowColumns, ss.txn.FinalLSN, ss.txn.CommitTime.UTC().Format(time.RFC3339),
				mc.table, strings.Join(mc.columns, ", "), strings.Join(mc.missing, ", "))
		}
		s.log.Info("relation", "table", r.Namespace+"."+r.Name, "columns", len(r.Columns))
	}
	return nil
}

// message relays a transactional logical decoding message with the
// configured prefix as an event of the open transaction, in its place
// among the transaction's rows. A message of another prefix, or a
// non-transactional one (sent outside any transaction, whether or not the
// transaction that emitted it commits), is counted and read past. Content
// that holds no outbox event still becomes an event, Malformed, so that
// the Sink's poison policy takes it: it is never dropped.
func (ss *session) message(ctx context.Context, xld pglogrepl.XLogData, at time.Time) error {
	s := ss.s
	m, err := decodeMessage(xld.WALData)
	if err != nil {
		return err
	}
	switch {
	case !m.Transactional:
		s.m.ignoredNonTxn.Inc()
		if s.log.Enabled(ctx, slog.LevelDebug) {
			s.log.Debug("non-transactional message ignored", "lsn", m.LSN.String(), "prefix", string(m.Prefix))
		}
		return nil
	case string(m.Prefix) != s.cfg.MessagePrefix:
		s.m.ignoredPrefix.Inc()
		if s.log.Enabled(ctx, slog.LevelDebug) {
			s.log.Debug("message of another prefix ignored", "lsn", m.LSN.String(), "prefix", string(m.Prefix))
		}
		return nil
	case !ss.inTxn:
		return &decodeError{Type: msgMessage, Why: fmt.Sprintf("transactional message at %s outside a transaction", m.LSN)}
	}
	// The connection reuses its buffer; the event owns this copy.
	b := make([]byte, len(m.Content))
	copy(b, m.Content)
	if err := content.Decode(b, &ss.ev); err != nil {
		s.log.Debug("message content is no outbox event; handing it on as poison", "lsn", m.LSN.String(), "err", err)
	}
	ss.ev.Prefix, ss.ev.Sent, ss.ev.Received = s.cfg.MessagePrefix, xld.ServerTime, at
	s.m.messages.Inc()
	if err := ss.h.Insert(ctx, &ss.ev); err != nil {
		return &handlerError{err}
	}
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
